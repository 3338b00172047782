"""Frame codec: round trips, strict decoding, and fuzzing of hostile bytes."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.bundle import Bundle, BundleId, CompactContext, Destination, Priority, encode_full, full_size
from relay.core.frames import (
    FRAGMENT_HEADER_LEN,
    AckFrame,
    BeaconFrame,
    CertFrame,
    CertRequestFrame,
    DataFrame,
    FragmentFrame,
    FragmentStatusFrame,
    FrameDecodeError,
    SummaryFrame,
    data_priority,
    decode_frame,
    encode_frame,
    forwarded_data_frame,
    goes_ahead,
)

A, B = b"\x01" * 16, b"\x02" * 16
CONTEXT = CompactContext.from_names([A, B], ["medic"])

ids = st.builds(BundleId, st.sampled_from([A, B]), st.integers(0, 2**32 - 1), st.integers(0, 0xFFFF))
bundles = st.builds(
    Bundle,
    origin=st.sampled_from([A, B]),
    destination=st.sampled_from(
        [Destination.to_node(B), Destination.to_role("medic"), Destination.everyone()]
    ),
    created=st.integers(0, 2**32 - 1),
    seq=st.integers(0, 0xFFFF),
    lifetime=st.integers(1, 4095).map(lambda m: m * 60),
    priority=st.sampled_from(list(Priority)),
    kind=st.integers(0, 255),
    payload=st.binary(max_size=200),
    hop_count=st.integers(0, 15),
)
frames = st.one_of(
    st.builds(DataFrame, bundles, st.integers(1, 15), st.booleans()),
    st.integers(1, 255).flatmap(
        lambda count: st.builds(
            FragmentFrame,
            st.integers(0, 255),
            st.integers(0, count - 1),
            st.just(count),
            st.binary(min_size=1, max_size=100),
        )
    ),
    st.integers(1, 255).flatmap(
        lambda count: st.builds(
            FragmentStatusFrame,
            st.integers(0, 255),
            st.just(count),
            st.frozensets(st.integers(0, count - 1), max_size=count),
        )
    ),
    st.builds(AckFrame, st.lists(ids, min_size=1, max_size=20).map(tuple)),
    st.builds(SummaryFrame, st.frozensets(st.binary(min_size=4, max_size=4), max_size=50), st.booleans()),
    st.builds(
        BeaconFrame,
        st.lists(st.tuples(st.binary(min_size=16, max_size=16), st.integers(0, 255)), max_size=10).map(tuple),
        st.lists(st.tuples(st.binary(min_size=3, max_size=3), st.integers(0, 255)), max_size=10).map(tuple),
    ),
)


@given(frames)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_every_frame_round_trips(frame: object) -> None:
    data = encode_frame(frame)  # type: ignore[arg-type]
    assert decode_frame(data, CONTEXT) == frame


def test_ack_ids_decode_as_bundle_ids() -> None:
    """The decoder makes an ACK's ids in C (tuple.__new__): each is a BundleId, fields named."""
    sent = tuple(BundleId(A if seq % 2 else B, 900 + seq, seq) for seq in range(255))
    got = decode_frame(encode_frame(AckFrame(sent)))
    assert isinstance(got, AckFrame) and got.ids == sent
    assert all(type(i) is BundleId for i in got.ids)
    assert (got.ids[7].origin, got.ids[7].created, got.ids[7].seq) == (A, 907, 7)


def test_fragment_header_is_four_bytes() -> None:
    data = encode_frame(FragmentFrame(7, 2, 5, b"xyz"))
    assert len(data) == FRAGMENT_HEADER_LEN + 3


def test_compact_data_frame_of_an_alarm_fits_one_lora_frame() -> None:
    bundle = Bundle(A, Destination.to_node(B), 1000, 1, 600, Priority.FLASH, 3, b"\x00" * (150 + 16))
    assert len(encode_frame(DataFrame(bundle, 8, compact=True))) <= 219


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\xf0", "unknown frame type"),
        (b"\x10", "at least one copy"),
        (b"\x51", "non-zero argument"),
        (b"\x50\x00", "at least one id"),
        (b"\x50\x02" + b"\x00" * 22, "ACK of 2 ids"),
        (b"\x30\x01\x05\x05x", "index 5"),
        (b"\x30\x01\x00\x00x", "count must be at least 1"),
        (b"\x40\x01\x03\xff", "beyond the fragment count"),
        (b"\x60\x02\x00\x00", "complete flag"),
        (b"\x60\x01\x00\x02abcd", "wrong length"),
        (b"\x70\x01" + b"\x00" * 10, "truncated"),
        (b"\x70\x00\x00\x00", "trailing"),
        (b"\x21" + b"\x00" * 16, "compact context"),
    ],
)
def test_hostile_frames_are_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(FrameDecodeError, match=message):
        decode_frame(data, None if message == "compact context" else CONTEXT)


def test_oversized_frame_is_refused_before_parsing() -> None:
    with pytest.raises(FrameDecodeError, match="exceeds the 219-byte limit"):
        decode_frame(b"\x50" + b"\x00" * 300, CONTEXT, max_len=219)


def _fuzz(data: bytes) -> None:
    try:
        frame = decode_frame(data, CONTEXT, max_len=4096)
    except FrameDecodeError:
        return
    assert decode_frame(encode_frame(frame), CONTEXT, max_len=8192) == frame


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_fuzz_random_bytes_decode_or_refuse(data: bytes) -> None:
    _fuzz(data)


@given(frames, st.data())
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_mutated_frames_decode_or_refuse(frame: object, data: st.DataObject) -> None:
    raw = bytearray(encode_frame(frame))  # type: ignore[arg-type]
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    _fuzz(bytes(raw[: data.draw(st.integers(0, len(raw)))]))


@pytest.mark.long
@given(st.binary(max_size=2000))
@settings(max_examples=20000, deadline=None)
def test_fuzz_long_random_frames(data: bytes) -> None:
    _fuzz(data)


@pytest.mark.parametrize("compact", [False, True])
def test_a_data_frames_first_byte_is_its_type_and_copies(compact: bool) -> None:
    """The head byte is looked up per copies, not built per frame: the wire keeps type << 4 | copies."""
    bundle = Bundle(A, Destination.to_node(B), 1000, 7, 3600, Priority.ROUTINE, 40, b"x")
    for copies in range(1, 16):
        frame = encode_frame(DataFrame(bundle, copies, compact))
        assert frame[0] == ((2 if compact else 1) << 4) | copies
        assert decode_frame(frame, CONTEXT if compact else None) == DataFrame(bundle, copies, compact)


_names = st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=64)
forwardable = st.builds(
    Bundle,
    origin=st.binary(min_size=16, max_size=16),
    destination=st.one_of(
        st.binary(min_size=16, max_size=16).map(Destination.to_node),
        _names.map(Destination.to_role),  # fixstr and str8
        _names.map(Destination.to_group),
        st.just(Destination.everyone()),
    ),
    created=st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 127, 128, 255, 256, 65535, 65536])),
    seq=st.integers(0, 0xFFFF),
    lifetime=st.integers(1, 30 * 24 * 3600),
    priority=st.sampled_from(list(Priority)),
    kind=st.integers(0, 255),
    payload=st.one_of(st.binary(max_size=300), st.integers(0, 70_000).map(bytes)),
    hop_count=st.one_of(st.integers(0, 255), st.sampled_from([126, 127, 128, 254, 255])),
    trail=st.lists(st.binary(min_size=4, max_size=4), max_size=16).map(tuple),
)


@given(forwardable, st.integers(1, 15))
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_forwarded_frame_from_stored_bytes_is_the_encoders_frame(bundle: Bundle, copies: int) -> None:
    """The frame built from a stored full encoding with the hop count raised in its bytes, and the
    one built from the bundle without a hop copy, are byte for byte the old path's: decode, hop
    copy, encode (the hop count's width grows from 127 to 128 and stays at 255)."""
    expected = encode_frame(DataFrame(bundle.forwarded(), copies))
    assert forwarded_data_frame(encode_full(bundle), copies, compact=False) == expected
    assert forwarded_data_frame(bundle, copies, compact=False) == expected


@given(bundles, st.integers(1, 15))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_a_forwarded_compact_frame_is_the_encoders_frame(bundle: Bundle, copies: int) -> None:
    expected = encode_frame(DataFrame(bundle.forwarded(), copies, compact=True))
    assert forwarded_data_frame(encode_full(bundle), copies, compact=True) == expected
    assert forwarded_data_frame(bundle, copies, compact=True) == expected


def test_every_hop_count_is_raised_in_the_stored_bytes() -> None:
    base = Bundle(A, Destination.to_node(B), 1000, 7, 3600, Priority.ROUTINE, 1, b"x" * 100)
    for hop_count in range(256):
        bundle = replace(base, hop_count=hop_count)
        frame = forwarded_data_frame(encode_full(bundle), 1, compact=False)
        assert frame == encode_frame(DataFrame(bundle.forwarded(), 1))
        assert decode_frame(frame).bundle.hop_count == min(hop_count + 1, 255)  # type: ignore[union-attr]


@given(st.one_of(forwardable.map(lambda b: (b, False)), bundles.map(lambda b: (b, True))), st.integers(1, 15))
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_data_frames_priority_is_read_without_decoding(case: tuple[Bundle, bool], copies: int) -> None:
    """What ``data_priority`` reads (a relay's FLASH frames go ahead of frames waiting) is the
    decoder's priority, full frames of every destination kind and field width, and compact ones."""
    bundle, compact = case
    frame = encode_frame(DataFrame(bundle, copies, compact))
    decoded = decode_frame(frame, CONTEXT if compact else None)
    assert data_priority(frame) == decoded.bundle.priority  # type: ignore[union-attr]


@pytest.mark.parametrize("frame", [AckFrame((BundleId(A, 1, 2),)), SummaryFrame(frozenset(), True)])
def test_frames_that_carry_no_bundle_have_no_priority(frame: object) -> None:
    assert data_priority(encode_frame(frame)) is None  # type: ignore[arg-type]


@given(st.binary(max_size=120))
@settings(max_examples=2000)
def test_data_priority_never_raises_on_hostile_bytes(data: bytes) -> None:
    priority = data_priority(data)
    assert priority is None or 0 <= priority < 0x80


def test_flash_data_and_certificate_frames_go_ahead_of_frames_waiting() -> None:
    """What a relay takes before the frames waiting: FLASH DATA, and the certificate frames a FLASH
    frame of a new origin needs (it must not overtake them); junk that only looks like a DATA
    frame's first byte does not (a hostile neighbour's two bytes are not an alarm)."""
    flash = Bundle(A, Destination.to_node(B), 1000, 7, 3600, Priority.FLASH, 3, b"sos")
    for compact in (False, True):
        assert goes_ahead(encode_frame(DataFrame(flash, 1, compact)))
        assert not goes_ahead(
            encode_frame(DataFrame(replace(flash, priority=Priority.IMMEDIATE), 1, compact))
        )
    assert goes_ahead(encode_frame(CertRequestFrame(bytes(16)))) and goes_ahead(
        encode_frame(CertFrame(0, 1, b"c"))
    )
    assert not goes_ahead(encode_frame(AckFrame((BundleId(A, 1, 2),))))
    for junk in (b"", b" \x00", b" " + bytes(10), b"\x10" + bytes(60), b"\x20" + bytes(20)):
        assert not goes_ahead(junk), junk


@given(forwardable, st.integers(1, 15), st.booleans(), st.binary(min_size=16, max_size=16))
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_data_frame_decoded_for_its_receiver_is_the_bundle_it_takes(
    bundle: Bundle, copies: int, compact: bool, receiver: bytes
) -> None:
    """A receiver decodes a DATA frame's bundle as it keeps it, in one bundle: the same as decoding
    it, then taking it (its short id at the end of the trail, the oldest falling off past 16)."""
    if compact:
        bundle = replace(bundle, origin=A, destination=Destination.to_node(B), trail=())
    data = encode_frame(DataFrame(bundle, copies, compact))
    plain, taken = decode_frame(data, CONTEXT), decode_frame(data, CONTEXT, taken_by=receiver)
    assert isinstance(plain, DataFrame) and isinstance(taken, DataFrame)
    assert taken == replace(plain, bundle=plain.bundle.taken_by(receiver))
    assert taken.bundle.trail[-1] == receiver[:4] and taken.bundle.id == bundle.id


@given(forwardable, st.integers(1, 15), st.binary(min_size=16, max_size=16), st.integers(1, 15))
@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_received_bundles_kept_encoding_and_hop_copy_are_the_encoders(
    bundle: Bundle, copies: int, receiver: bytes, onward: int
) -> None:
    """A relay stores and sends on a received bundle in the encoding the decoder made with it
    (``Bundle.encoded``, its trail extended), not by encoding it again: byte for byte what the
    encoder makes of the bundle it keeps, for every destination kind, field width, trail length
    and hop count."""
    taken = decode_frame(encode_frame(DataFrame(bundle, copies)), taken_by=receiver)
    assert isinstance(taken, DataFrame)
    kept = taken.bundle
    dest = bundle.destination  # a bundle for the receiver (never sent on): encoded anew
    assert (kept.encoded is not None) == (dest.node != receiver)
    plain = replace(kept)  # the same bundle, without the kept bytes
    assert plain.encoded is None and plain == kept
    assert encode_full(kept) == encode_full(plain) and full_size(kept) == full_size(plain)
    assert forwarded_data_frame(kept, onward, compact=False) == encode_frame(
        DataFrame(plain.forwarded(), onward)
    )


# A canonical bundle to node B: created 100,000 (uint32 at 39), seq 300 (uint16 at 44), lifetime
# 3600 (uint16 at 47), priority, kind and hop count (fixints at 50-52), a payload of 100 (bin8 at 53)
_CANONICAL = Bundle(
    A, Destination.to_node(B), 100_000, 300, 3600, Priority.ROUTINE, 1, b"x" * 100, 2, (b"abcd",)
)


@pytest.mark.parametrize(
    ("offset", "width", "other"),
    [
        (39, 5, b"\xd2\x00\x01\x86\xa0"),  # created as a signed int32: as wide as the uint32
        (44, 3, b"\xd1\x01\x2c"),  # seq as a signed int16
        (47, 3, b"\xd1\x0e\x10"),  # lifetime as a signed int16
        (47, 3, b"\xce\x00\x00\x0e\x10"),  # lifetime as a uint32, wider than it needs
        (52, 1, b"\xcc\x02"),  # the hop count as a uint8
        (53, 2, b"\xc5\x00\x64"),  # the payload as a bin16
    ],
)
def test_a_bundle_not_in_the_encoders_form_is_kept_and_sent_on_in_it(
    offset: int, width: int, other: bytes
) -> None:
    """msgpack has wider and signed forms for the same values; a bundle that comes in one of them
    (not a Mesh112 encoder's) is kept and sent on as the encoder writes it, as before."""
    head, body = encode_frame(DataFrame(_CANONICAL, 1))[:1], encode_full(_CANONICAL)
    other_body = body[:offset] + other + body[offset + width :]
    receiver = b"\x07" * 16
    taken = decode_frame(head + other_body, taken_by=receiver)
    assert isinstance(taken, DataFrame)
    assert taken.bundle == _CANONICAL.taken_by(receiver)
    assert taken.bundle.encoded == encode_full(_CANONICAL.taken_by(receiver))
    assert decode_frame(head + body, taken_by=receiver).bundle.encoded == encode_full(  # type: ignore[union-attr]
        _CANONICAL.taken_by(receiver)
    )


def test_a_bundle_for_its_receiver_keeps_no_encoding_and_encodes_as_one_that_does() -> None:
    """A bundle addressed to the node taking it is never sent on, and a command post stores no copy
    of it: the decoder keeps no encoding for it, and its inbox copy is encoded anew, the same bytes."""
    head, body = encode_frame(DataFrame(_CANONICAL, 1))[:1], encode_full(_CANONICAL)
    mine = decode_frame(head + body, taken_by=B)
    other = decode_frame(head + body, taken_by=b"\x07" * 16)
    assert isinstance(mine, DataFrame) and isinstance(other, DataFrame)
    assert mine.bundle.encoded is None and mine.bundle == _CANONICAL.taken_by(B)
    assert other.bundle.encoded is not None
    assert encode_full(mine.bundle) == encode_full(_CANONICAL.taken_by(B))
    assert full_size(mine.bundle) == len(encode_full(mine.bundle))
