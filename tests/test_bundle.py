"""The bundle wire formats: property round trips, every field's range, versions, sizes."""

from __future__ import annotations

import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import msgpack
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from relay.bundle import (
    COMPACT_HEADER_LEN,
    MAX_COMPACT_HOPS,
    MAX_FULL_BUNDLE,
    MAX_LIFETIME_S,
    MAX_PAYLOAD,
    MAX_SEQ,
    MAX_TRAIL,
    MAX_U32,
    TRAIL_ID_LEN,
    Bundle,
    BundleDecodeError,
    BundleId,
    CompactContext,
    Destination,
    DestinationError,
    DestKind,
    Priority,
    compact_lifetime,
    decode_compact,
    decode_full,
    encode_compact,
    encode_full,
    full_size,
    short_code,
)

node_ids = st.binary(min_size=16, max_size=16)
names = st.text(min_size=1, max_size=64).filter(lambda name: 1 <= len(name.encode()) <= 64)
destinations = st.one_of(
    node_ids.map(Destination.to_node),
    names.map(Destination.to_role),
    names.map(Destination.to_group),
    st.just(Destination.everyone()),
)


@st.composite
def bundles(draw: st.DrawFn, max_payload: int = 2048) -> Bundle:
    return Bundle(
        origin=draw(node_ids),
        destination=draw(destinations),
        created=draw(st.integers(0, MAX_U32)),
        seq=draw(st.integers(0, MAX_SEQ)),
        lifetime=draw(st.integers(1, MAX_LIFETIME_S)),
        priority=draw(st.sampled_from(Priority)),
        kind=draw(st.integers(0, 255)),
        payload=draw(st.binary(max_size=max_payload)),
        hop_count=draw(st.integers(0, 255)),
    )


def context_for(bundle: Bundle) -> CompactContext:
    nodes = [bundle.origin] + ([bundle.destination.node] if bundle.destination.node else [])
    names_known = [bundle.destination.name] if bundle.destination.name else []
    return CompactContext.from_names(nodes, names_known)


SAMPLE = Bundle(b"\x01" * 16, Destination.to_role("medic"), 1000, 7, 3600, Priority.FLASH, 3, b"sos")


def full_fields(bundle: Bundle = SAMPLE) -> list[object]:
    return msgpack.unpackb(encode_full(bundle))  # type: ignore[no-any-return]


def pack(fields: list[object]) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)  # type: ignore[no-any-return]


def test_full_encoding_from_several_threads_at_once_is_byte_identical() -> None:
    """encode_full reuses a Packer per thread (the store's thread and the loop both encode): threads
    encoding at the same time each get exactly what plain msgpack.packb gives."""
    samples = [replace(SAMPLE, seq=seq, payload=bytes([seq % 256]) * (seq % 300)) for seq in range(400)]
    expected = [pack(full_fields(bundle)) for bundle in samples]

    def encode_all(_: int) -> list[bytes]:
        return [encode_full(bundle) for bundle in samples for _ in range(5)][::5]

    with ThreadPoolExecutor(4) as pool:
        for encoded in pool.map(encode_all, range(8)):
            assert encoded == expected


# -- round trips ------------------------------------------------------------------------------


@given(bundles())
def test_full_round_trip(bundle: Bundle) -> None:
    assert decode_full(encode_full(bundle)) == bundle


@given(bundles(), st.integers(0, MAX_TRAIL))
def test_full_size_is_the_full_encodings_length(bundle: Bundle, trail: int) -> None:
    bundle = replace(bundle, trail=tuple(bytes([i]) * TRAIL_ID_LEN for i in range(trail)))
    assert full_size(bundle) == len(encode_full(bundle))


@pytest.mark.parametrize("width", [0, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000])
def test_full_size_at_each_msgpack_width_boundary(width: int) -> None:
    """Each integer field, the payload and the name at the edges of msgpack's size classes."""
    samples = [
        replace(SAMPLE, created=width, seq=min(width, MAX_SEQ), lifetime=max(1, width)),
        replace(SAMPLE, kind=min(width, 255), hop_count=min(width, 255), payload=bytes(width)),
        replace(SAMPLE, payload=bytes(MAX_PAYLOAD), destination=Destination.everyone()),
        replace(SAMPLE, destination=Destination.to_group("g" * min(max(width, 1), 64))),
        replace(SAMPLE, destination=Destination.to_group("é" * 16)),  # 32 bytes: str8, not fixstr
    ]
    for bundle in samples:
        assert full_size(bundle) == len(encode_full(bundle))


@given(bundles(max_payload=255 - COMPACT_HEADER_LEN))
def test_compact_round_trip_rounds_lifetime_and_resolves_short_ids(bundle: Bundle) -> None:
    dest = bundle.destination
    assume(dest.node is None or dest.node[:3] != bundle.origin[:3] or dest.node == bundle.origin)
    decoded = decode_compact(encode_compact(bundle), context_for(bundle))
    expected = replace(
        bundle, lifetime=compact_lifetime(bundle.lifetime), hop_count=min(bundle.hop_count, MAX_COMPACT_HOPS)
    )
    assert decoded == expected
    assert decoded.id == bundle.id and decoded.seal_inputs()[1] != b""
    assert len(encode_compact(bundle)) == COMPACT_HEADER_LEN + len(bundle.payload)


@given(st.integers(60, MAX_LIFETIME_S))
def test_compact_lifetime_never_grows_from_a_minute_up(lifetime: int) -> None:
    assert 60 <= compact_lifetime(lifetime) <= lifetime
    assert lifetime - compact_lifetime(lifetime) < 60 or compact_lifetime(lifetime) == 0x0FFF * 60


def test_bundle_id_key_is_22_sortable_bytes() -> None:
    ids = [BundleId(b"\x01" * 16, 5, 2), BundleId(b"\x01" * 16, 5, 10), BundleId(b"\x01" * 16, 6, 0)]
    assert all(len(i.key()) == 22 and BundleId.from_key(i.key()) == i for i in ids)
    assert sorted(i.key() for i in ids) == [i.key() for i in sorted(ids)]
    with pytest.raises(BundleDecodeError):
        BundleId.from_key(b"\x00" * 21)


# -- full encoding: every field's range ---------------------------------------------------------

FULL_BAD_FIELDS = [
    (1, b"\x01" * 15, "origin"),
    (1, "x" * 16, "origin"),
    (2, 4, "destination kind"),
    (2, -1, "destination kind"),
    (3, b"\x02" * 15, "destination"),
    (3, None, "destination must be a name"),
    (3, "", "destination"),
    (4, -1, "created"),
    (4, MAX_U32 + 1, "created"),
    (4, 1.5, "created"),
    (5, MAX_SEQ + 1, "seq"),
    (5, True, "seq"),
    (6, 0, "lifetime"),
    (6, MAX_LIFETIME_S + 1, "lifetime"),
    (7, 5, "priority"),
    (7, -1, "priority"),
    (8, 256, "kind"),
    (9, 256, "hop count"),
    (9, -1, "hop count"),
    (10, "sos", "payload"),
    (10, None, "payload"),
]


@pytest.mark.parametrize(("index", "value", "field_name"), FULL_BAD_FIELDS)
def test_full_refuses_out_of_range_fields(index: int, value: object, field_name: str) -> None:
    fields = full_fields()
    fields[index] = value
    with pytest.raises(BundleDecodeError, match=field_name):
        decode_full(pack(fields))


def test_full_names_the_first_bad_integer_field() -> None:
    """The six integer fields are tested in one go; the error still names the first bad one."""
    fields = full_fields()
    fields[6], fields[9] = 0, 256  # lifetime and hop count both out of range
    with pytest.raises(BundleDecodeError, match="lifetime"):
        decode_full(pack(fields))


def test_decoded_and_hop_copies_equal_bundles_built_and_checked() -> None:
    """The decoder and the hop copies set the slots directly; every field, the id included, is what
    ``Bundle()`` (which checks them) and ``dataclasses.replace`` give."""
    bundle = replace(SAMPLE, hop_count=3, trail=(b"\x01" * 4, b"\x02" * 4))
    decoded = decode_full(encode_full(bundle))
    assert decoded == bundle and decoded.id == bundle.id and decoded.trail == bundle.trail
    assert type(decoded.priority) is Priority
    assert decoded.forwarded() == replace(bundle, hop_count=4)
    taken = decoded.taken_by(b"\x07" * 16)
    assert taken == replace(bundle, trail=(*bundle.trail, b"\x07" * 4)) and taken.id == bundle.id
    taken_on_decode = decode_full(encode_full(bundle), taken_by=b"\x07" * 16)
    compact = decode_compact(encode_compact(bundle), CONTEXT)
    for copy in (decoded, decoded.forwarded(), taken, taken_on_decode, compact):
        assert copy.key == bundle.key == bundle.id.key(), "the key is packed once, kept by every copy"


def test_every_trail_length_decodes_to_its_ids_and_bad_lengths_are_refused() -> None:
    """The decoder cuts a trail with one struct per length: each length gives its ids in order."""
    for count in range(1, MAX_TRAIL + 1):
        trail = tuple(bytes((index,)) * TRAIL_ID_LEN for index in range(1, count + 1))
        decoded = decode_full(encode_full(replace(SAMPLE, hop_count=count, trail=trail)))
        assert decoded.trail == trail and all(type(entry) is bytes for entry in decoded.trail)
    items = msgpack.unpackb(encode_full(replace(SAMPLE, hop_count=1, trail=(b"\x01" * TRAIL_ID_LEN,))))
    for bad in (b"\x01" * (TRAIL_ID_LEN - 1), b"\x01" * (TRAIL_ID_LEN * (MAX_TRAIL + 1)), b""):
        with pytest.raises(BundleDecodeError, match="trail must be"):
            decode_full(msgpack.packb([*items[:11], bad], use_bin_type=True))


@pytest.mark.parametrize(
    ("dest_kind", "value"), [(DestKind.ALL, b"\x00"), (DestKind.NODE, "medic"), (DestKind.ROLE, b"medic")]
)
def test_full_refuses_destination_value_of_the_wrong_type(dest_kind: DestKind, value: object) -> None:
    fields = full_fields()
    fields[2], fields[3] = int(dest_kind), value
    with pytest.raises(BundleDecodeError, match="destination"):
        decode_full(pack(fields))


def test_decoded_node_destinations_are_shared_and_still_checked() -> None:
    """Bundles to one node decode to one Destination object (a bounded table); a node id of the
    wrong length is refused as before and not remembered."""
    to = Destination.to_node(bytes(range(16)))
    first, second = (decode_full(encode_full(replace(SAMPLE, destination=to, seq=seq))) for seq in (1, 2))
    assert first.destination == to and first.destination is second.destination
    fields = full_fields(first)
    fields[3] = bytes(15)
    for _ in range(2):
        with pytest.raises(BundleDecodeError, match="destination"):
            decode_full(pack(fields))
    nodes = [n.to_bytes(16, "big") for n in range(5000)]  # more than the table holds
    others = [decode_full(encode_full(replace(SAMPLE, destination=Destination.to_node(n)))) for n in nodes]
    assert [b.destination.node for b in others] == nodes


@pytest.mark.parametrize("version", [0, 2, 255, True, 1.0, "1", None, [1]])
def test_full_refuses_unknown_versions(version: object) -> None:
    fields = full_fields()
    fields[0] = version
    with pytest.raises(BundleDecodeError, match="version"):
        decode_full(pack(fields))


def test_full_refuses_wrong_field_count_and_non_arrays() -> None:
    for data in (pack([*full_fields(), 0]), pack(full_fields()[:10]), pack([]), msgpack.packb({1: 2}), b""):
        with pytest.raises(BundleDecodeError):
            decode_full(data)


def test_full_refuses_every_truncation_and_trailing_bytes() -> None:
    data = encode_full(SAMPLE)
    for end in range(len(data)):
        with pytest.raises(BundleDecodeError):
            decode_full(data[:end])
    with pytest.raises(BundleDecodeError, match="extra data"):
        decode_full(data + b"\x00")


def test_full_refuses_oversized_input() -> None:
    with pytest.raises(BundleDecodeError, match="exceeds"):
        decode_full(bytes(MAX_FULL_BUNDLE + 1))
    fields = full_fields()
    fields[10] = bytes(MAX_PAYLOAD + 1)
    with pytest.raises(BundleDecodeError):
        decode_full(pack(fields))
    fields[10], fields[1] = b"", b"\x01" * 100_000
    with pytest.raises(BundleDecodeError, match="origin"):
        decode_full(pack(fields))
    fields = full_fields()
    fields[2], fields[3] = int(DestKind.ROLE), "r" * 65
    with pytest.raises(BundleDecodeError):
        decode_full(pack(fields))


def test_full_refuses_non_bytes() -> None:
    with pytest.raises(BundleDecodeError):
        decode_full("not bytes")  # type: ignore[arg-type]


# -- compact encoding -------------------------------------------------------------------------

CONTEXT = CompactContext.from_names([b"\x01" * 16, b"\x02" * 16], ["medic"])


def compact_sample() -> bytearray:
    return bytearray(encode_compact(SAMPLE))


def test_compact_header_is_16_bytes_and_payload_follows() -> None:
    data = encode_compact(SAMPLE)
    assert len(data) == 16 + 3 and data[16:] == b"sos"
    assert decode_compact(data, CONTEXT) == SAMPLE


@pytest.mark.parametrize("version", [0, 2, 3])
def test_compact_refuses_unknown_versions(version: int) -> None:
    data = compact_sample()
    data[0] = (data[0] & 0x3F) | (version << 6)
    with pytest.raises(BundleDecodeError, match="version"):
        decode_compact(bytes(data), CONTEXT)


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (0, 0b0100_0101 | 0b0000_0001, "reserved"),
        (0, 0b0110_1010, "priority 5"),
        (0, 0b0111_1010, "priority 7"),
        (1, 0x09, "origin short id"),
        (4, 0x09, "role code"),
        (15, 0x00, "at least one minute"),
    ],
)
def test_compact_refuses_out_of_range_fields(offset: int, value: int, message: str) -> None:
    data = compact_sample()
    data[offset] = value
    if offset == 15:
        data[14] &= 0xF0
    with pytest.raises(BundleDecodeError, match=message):
        decode_compact(bytes(data), CONTEXT)


def test_compact_refuses_unknown_destination_node_and_nonzero_all_code() -> None:
    to_node = replace(SAMPLE, destination=Destination.to_node(b"\x09" * 16))
    with pytest.raises(BundleDecodeError, match="destination short id"):
        decode_compact(encode_compact(to_node), CONTEXT)
    data = bytearray(encode_compact(replace(SAMPLE, destination=Destination.everyone())))
    data[5] = 1
    with pytest.raises(BundleDecodeError, match="ALL"):
        decode_compact(bytes(data), CONTEXT)


def test_compact_refuses_short_and_oversized_frames() -> None:
    data = encode_compact(SAMPLE)
    for end in range(COMPACT_HEADER_LEN):
        with pytest.raises(BundleDecodeError, match="header bytes"):
            decode_compact(data[:end], CONTEXT)
    with pytest.raises(BundleDecodeError, match="link limit"):
        decode_compact(data + bytes(300), CONTEXT)
    with pytest.raises(BundleDecodeError, match="link limit"):
        decode_compact(data, CONTEXT, max_len=len(data) - 1)


def test_compact_header_fields_are_where_the_docstring_says() -> None:
    data = encode_compact(replace(SAMPLE, hop_count=3, lifetime=7200))
    first, origin, dest, created, seq, kind, hops_life = struct.unpack(">B3s3sIHBH", data[:16])
    assert first >> 6 == 1 and (first >> 3) & 7 == Priority.FLASH and (first >> 1) & 3 == DestKind.ROLE
    assert origin == b"\x01" * 3 and dest == short_code("medic") and (created, seq, kind) == (1000, 7, 3)
    assert hops_life >> 12 == 3 and hops_life & 0xFFF == 120


def test_compact_context_refuses_colliding_short_ids() -> None:
    with pytest.raises(ValueError, match="short id"):
        CompactContext.from_names([b"\x01" * 16, b"\x01" * 3 + b"\x02" * 13], [])


# -- the Bundle type's own checks ---------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"origin": b"\x01" * 15},
        {"created": -1},
        {"created": MAX_U32 + 1},
        {"seq": MAX_SEQ + 1},
        {"lifetime": 0},
        {"lifetime": MAX_LIFETIME_S + 1},
        {"kind": 256},
        {"hop_count": 256},
        {"priority": 5},
        {"payload": bytes(MAX_PAYLOAD + 1)},
    ],
)
def test_bundle_refuses_out_of_range_values(change: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        replace(SAMPLE, **change)


@settings(max_examples=50)
@given(bundles(max_payload=16))
def test_forwarded_increments_hops_and_keeps_identity(bundle: Bundle) -> None:
    onward = bundle.forwarded()
    assert onward.id == bundle.id and onward.seal_inputs()[1] == bundle.seal_inputs()[1]
    assert onward.hop_count == min(bundle.hop_count + 1, 255)


def test_compact_lifetime_under_a_minute_becomes_one_minute() -> None:
    short_lived = replace(SAMPLE, lifetime=30)
    assert compact_lifetime(30) == 60
    assert decode_compact(encode_compact(short_lived), CONTEXT).lifetime == 60


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("node:" + "ab" * 16, Destination.to_node(bytes.fromhex("ab" * 16))),
        ("node:" + "AB" * 16, Destination.to_node(bytes.fromhex("ab" * 16))),
        ("role:dispatcher", Destination.to_role("dispatcher")),
        ("group:incident-7", Destination.to_group("incident-7")),
        ("all", Destination.everyone()),
    ],
)
def test_destination_parse_reads_what_str_writes(text: str, expected: Destination) -> None:
    assert Destination.parse(text) == expected
    assert Destination.parse(str(expected)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("node:zz", "node:zz: a node id is 32 hex digits"),
        ("node:" + "ab" * 15, "a node id is 32 hex digits"),
        ("node: " + "ab" * 16, "a node id is 32 hex digits"),
        ("role:", "role:: a role name is 1-64 bytes"),
        ("group:" + "x" * 65, "a group name is 1-64 bytes"),
        ("everyone", "'everyone' is not a destination: use node:<32 hex digits>, role:<name>"),
        ("host:x", "'host:x' is not a destination"),
    ],
)
def test_destination_parse_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(DestinationError) as caught:
        Destination.parse(text)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)


@settings(max_examples=200)
@given(bundles(max_payload=16))
def test_aad_holds_the_header_fields_and_the_compact_lifetime(bundle: Bundle) -> None:
    """What the seal authenticates, written out field by field; seal_inputs gives the key it holds.
    The lifetime's bytes come from a table (cleared when full): the same bytes either way."""
    dest = bundle.destination
    expected = b"".join(
        (
            b"M112",
            bytes((1, dest.kind, bundle.priority, bundle.kind)),
            bundle.id.key(),
            dest.node if dest.node is not None else (dest.name or "").encode(),
            struct.pack(">I", compact_lifetime(bundle.lifetime)),
        )
    )
    assert bundle.seal_inputs()[1] == expected
    assert bundle.seal_inputs() == (bundle.id.key(), expected)


def test_aad_lifetimes_past_the_table_size_still_right() -> None:
    for lifetime in range(1, 3000, 2):  # more lifetimes than the table keeps
        bundle = replace(SAMPLE, lifetime=lifetime)
        assert bundle.seal_inputs()[1][-4:] == struct.pack(">I", compact_lifetime(lifetime))
