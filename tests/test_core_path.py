"""The path a bundle took: the trail relays append in the full encoding, the gap a LoRa hop leaves,
the receipt that carries the trail back to the origin, and the origin's delivered status."""

from __future__ import annotations

import msgpack
import pytest
from core_pump import Pump
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.seal import COMPACT_OVERHEAD
from relay.bundle import (
    COMPACT_HEADER_LEN,
    MAX_TRAIL,
    TRAIL_ID_LEN,
    Bundle,
    BundleDecodeError,
    BundleId,
    CompactContext,
    Destination,
    Priority,
    decode_compact,
    decode_full,
    encode_compact,
    encode_full,
)
from relay.core.receipts import (
    LEGACY_RECEIPT_LEN,
    MAX_RECEIPT_LEN,
    BundleStatus,
    ForgedReceiptError,
    Receipt,
    ReceiptDecodeError,
    State,
)
from relay.links.base import LinkProfile
from relay.links.lora_phy import MAX_DM_PAYLOAD

A, B, C, D = (bytes([n]) * 16 for n in (0xA1, 0xB2, 0xC3, 0xD4))
CONTEXT = CompactContext.from_names([A, B, C, D], [])
IP = LinkProfile("ip0", "ip", mtu=64000, bitrate=1e6)
LORA = LinkProfile("lora0", "lora", mtu=219, bitrate=5000.0, cost=10.0, compact=True)


def _bundle(hops: int = 0, trail: tuple[bytes, ...] = ()) -> Bundle:
    return Bundle(A, Destination.to_node(D), 5000, 7, 600, Priority.IMMEDIATE, 1, b"sealed", hops, trail)


short_ids = st.binary(min_size=TRAIL_ID_LEN, max_size=TRAIL_ID_LEN)
trails = st.lists(short_ids, max_size=MAX_TRAIL).map(tuple)


# -- the trail in the bundle ------------------------------------------------------------------------


def test_each_custodian_appends_its_short_id_and_the_seal_does_not_cover_it() -> None:
    bundle = _bundle()
    at_b = bundle.forwarded().taken_by(B)
    at_c = at_b.forwarded().taken_by(C)
    assert at_c.trail == (B[:4], C[:4]) and at_c.hop_count == 2 and at_c.trail_gap == 0
    assert at_c.seal_inputs()[1] == bundle.seal_inputs()[1]
    assert decode_full(encode_full(at_c)) == at_c


def test_an_empty_trail_encodes_exactly_as_before_the_field_existed() -> None:
    bundle = _bundle(hops=3)
    legacy = msgpack.packb(
        [1, A, 0, D, 5000, 7, 600, 1, 1, 3, b"sealed"],
        use_bin_type=True,
    )
    assert encode_full(bundle) == legacy
    restored = decode_full(legacy)
    assert restored.trail == () and restored.trail_gap == 3  # stored before trails: all unrecorded


def test_a_long_path_keeps_its_last_entries_and_counts_the_rest_as_a_gap() -> None:
    bundle = _bundle()
    for n in range(MAX_TRAIL + 4):
        bundle = bundle.forwarded().taken_by(bytes([n]) * 16)
    assert len(bundle.trail) == MAX_TRAIL
    assert bundle.trail[0] == bytes([4]) * 4 and bundle.trail[-1] == bytes([MAX_TRAIL + 3]) * 4
    assert bundle.trail_gap == 4
    assert decode_full(encode_full(bundle)) == bundle


def test_the_compact_header_loses_the_trail_and_the_hop_count_tells_how_much() -> None:
    at_c = _bundle().forwarded().taken_by(B).forwarded().taken_by(C)
    over_lora = decode_compact(encode_compact(at_c.forwarded()), CONTEXT).taken_by(D)
    assert over_lora.trail == (D[:4],)
    assert over_lora.hop_count == 3 and over_lora.trail_gap == 2


@pytest.mark.parametrize(
    ("trail", "message"),
    [
        (b"", "an empty trail is left out"),
        (b"\x01\x02\x03\x04\x05", "trail must be"),
        (bytes(4 * (MAX_TRAIL + 1)), "trail must be"),
        ("abcd", "trail must be bytes"),
        (None, "trail must be bytes"),
    ],
)
def test_hostile_trails_are_refused_by_name(trail: object, message: str) -> None:
    fields = [1, A, 0, D, 5000, 7, 600, 1, 1, 3, b"sealed", trail]
    with pytest.raises(BundleDecodeError, match=message):
        decode_full(msgpack.packb(fields, use_bin_type=True))


@settings(max_examples=200, deadline=None)
@given(trail=trails, hops=st.integers(0, 255))
def test_full_encoding_round_trips_any_trail(trail: tuple[bytes, ...], hops: int) -> None:
    bundle = _bundle(hops, trail)
    data = encode_full(bundle)
    assert decode_full(data) == bundle
    assert encode_full(decode_full(data)) == data


# -- the receipt ------------------------------------------------------------------------------------


SUBJECT = BundleId(A, 5000, 7)


def test_receipt_carries_hops_and_trail_and_old_receipts_still_decode() -> None:
    at_d = _bundle().forwarded().taken_by(B).forwarded().taken_by(C).forwarded().taken_by(D)
    receipt = Receipt.for_bundle(at_d, 6000)
    assert receipt == Receipt(SUBJECT, 6000, 3, (B[:4], C[:4], D[:4]))
    assert len(receipt.encode()) == LEGACY_RECEIPT_LEN + 1 + 3 * TRAIL_ID_LEN
    assert Receipt.decode(receipt.encode()) == receipt
    legacy = Receipt.decode(SUBJECT.key() + (6000).to_bytes(4, "big"))
    assert legacy.hops is None and legacy.path == ()


def test_receipt_from_a_relay_that_lied_about_the_trail_keeps_only_what_the_hops_allow() -> None:
    liar = _bundle(hops=2, trail=(B[:4], C[:4], C[:4], D[:4]))
    assert Receipt.for_bundle(liar, 1).path == (C[:4], D[:4])
    assert Receipt.for_bundle(_bundle(hops=0, trail=(B[:4],)), 1).path == ()


def test_the_largest_receipt_fits_one_lora_frame_sealed() -> None:
    longest = Receipt(SUBJECT, 1, 255, tuple(bytes([n]) * 4 for n in range(MAX_TRAIL)))
    assert len(longest.encode()) == MAX_RECEIPT_LEN
    frame = 1 + COMPACT_HEADER_LEN + COMPACT_OVERHEAD + MAX_RECEIPT_LEN
    assert frame <= MAX_DM_PAYLOAD, f"a receipt frame of {frame} bytes would not fit one LoRa frame"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is 26 bytes, or 27"),
        (bytes(25), "is 26 bytes, or 27"),
        (bytes(28), "is 26 bytes, or 27"),
        (bytes(MAX_RECEIPT_LEN + 4), "at most"),
        (bytes(1 << 20), "at most"),
        (SUBJECT.key() + bytes(4) + b"\x01" + bytes(8), "names 2 nodes for 1 hops"),
    ],
)
def test_hostile_receipts_are_refused_by_name(data: bytes, message: str) -> None:
    with pytest.raises(ReceiptDecodeError, match=message):
        Receipt.decode(data)


@settings(max_examples=300, deadline=None)
@given(
    delivered=st.integers(0, 0xFFFF_FFFF),
    hops=st.integers(0, 255),
    trail=trails,
)
def test_receipts_round_trip(delivered: int, hops: int, trail: tuple[bytes, ...]) -> None:
    receipt = Receipt(SUBJECT, delivered, hops, trail[: min(hops, MAX_TRAIL)])
    assert Receipt.decode(receipt.encode()) == receipt


def _decode_receipt_or_refuse(data: bytes) -> None:
    try:
        receipt = Receipt.decode(data)
    except ReceiptDecodeError:
        return
    assert receipt.encode() == data


@settings(max_examples=1000, deadline=None)
@given(data=st.binary(max_size=MAX_RECEIPT_LEN + 8))
def test_fuzz_receipt_any_bytes_decode_canonically_or_are_refused(data: bytes) -> None:
    _decode_receipt_or_refuse(data)


@pytest.mark.long
@settings(max_examples=100_000, deadline=None)
@given(data=st.binary(max_size=MAX_RECEIPT_LEN + 8))
def test_fuzz_receipt_any_bytes_long(data: bytes) -> None:
    _decode_receipt_or_refuse(data)


# -- the core, end to end ---------------------------------------------------------------------------


def _run_chain(second_link: LinkProfile) -> tuple[Pump, Bundle]:
    pump = Pump(CONTEXT)
    a, _, _, d = (pump.add(n) for n in (A, B, C, D))
    pump.connect(IP, A, B, 0.0)
    pump.connect(second_link, B, C, 0.0)
    pump.connect(IP, C, D, 0.0)
    bundle = _bundle()
    a.apply(a.core.originate(bundle, 0.0), 0.0)
    pump.run(0.0, 60.0)
    assert [x.id for x in d.delivered] == [bundle.id]
    return pump, d.delivered[0]


def test_three_ip_hops_the_origin_learns_the_whole_path() -> None:
    pump, arrived = _run_chain(IP)
    assert arrived.trail == (B[:4], C[:4], D[:4]) and arrived.hop_count == 3
    origin = pump.nodes[A].core
    receipt = Receipt.decode(Receipt.for_bundle(arrived, 61).encode())
    origin.receipt(receipt.subject, 61.0, D, receipt.hops, receipt.path)
    status = origin.status(arrived.id)
    assert status.state is State.DELIVERED
    assert status.hops == 3 and status.path == (B[:4], C[:4], D[:4]) and status.path_complete
    assert status.peer == B and status.link == "ip0"
    via = " → ".join(x[:4].hex() for x in (B, C, D))
    assert str(status) == f"delivered at 00:01:01 UTC via {via}, 3 hops (first over ip0)"


def test_a_receipt_sealed_by_a_relay_on_the_way_is_refused_and_changes_nothing() -> None:
    pump, arrived = _run_chain(IP)
    origin = pump.nodes[A].core
    before = origin.status(arrived.id)
    receipt = Receipt.for_bundle(arrived, 61)
    with pytest.raises(ForgedReceiptError, match="addressed to d4d4d4d4"):
        origin.receipt(receipt.subject, 61.0, C, receipt.hops, receipt.path)
    assert origin.status(arrived.id) == before and before.state is not State.DELIVERED
    origin.receipt(receipt.subject, 62.0, D, receipt.hops, receipt.path)
    assert origin.status(arrived.id).state is State.DELIVERED


def test_a_lora_hop_in_the_middle_leaves_an_honest_gap() -> None:
    pump, arrived = _run_chain(LORA)
    assert arrived.trail == (C[:4], D[:4]) and arrived.hop_count == 3 and arrived.trail_gap == 1
    origin = pump.nodes[A].core
    receipt = Receipt.for_bundle(arrived, 61)
    origin.receipt(receipt.subject, 61.0, D, receipt.hops, receipt.path)
    status = origin.status(arrived.id)
    assert not status.path_complete
    assert "via [1 hop not recorded] → " in str(status) and str(status).endswith("3 hops (first over ip0)")


def test_status_uses_names_where_known_and_says_when_no_path_was_reported() -> None:
    named = BundleStatus(State.DELIVERED, at=0.0, hops=2, path=(B[:4], D[:4]), names=("relay-1", "unit-7"))
    assert str(named) == "delivered at 00:00:00 UTC via relay-1 → unit-7, 2 hops"
    assert named.path_labels() == ("relay-1", "unit-7")
    old = BundleStatus(State.DELIVERED, at=0.0)
    assert str(old) == "delivered at 00:00:00 UTC (the receipt reports no path)" and not old.path_complete
    assert str(BundleStatus(State.QUEUED)) == "queued"
