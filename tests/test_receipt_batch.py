"""Batched end-to-end receipts (issue 15): one RECEIPTS bundle per origin and path for a batch of
deliveries, its wire format, and that only the destination's pairwise seal is believed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from engine_net import IP, Deployment
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.seal import COMPACT_OVERHEAD
from relay.bundle import (
    COMPACT_HEADER_LEN,
    MAX_TRAIL,
    TRAIL_ID_LEN,
    Bundle,
    BundleId,
    Destination,
    Kind,
    Priority,
)
from relay.core.frames import DataFrame, decode_frame
from relay.core.receipts import (
    MAX_BATCH_LEN,
    MAX_RECEIPT_SUBJECTS,
    Receipt,
    ReceiptBatch,
    ReceiptDecodeError,
    State,
    receipt_path,
    receipts_for,
)
from relay.engine import NodeEngine
from relay.links.lora import HOP_OVERHEAD
from relay.links.lora_phy import MAX_DM_PAYLOAD

A, B, C = (bytes([n]) * 16 for n in (0xA1, 0xB2, 0xC3))
T0 = 1000.0


def _subjects(count: int, origin: bytes = A) -> tuple[BundleId, ...]:
    return tuple(BundleId(origin, 5000 + n // 3, n) for n in range(count))


def test_a_batch_round_trips_and_the_largest_fits_one_lora_frame_sealed() -> None:
    path = tuple(bytes([n]) * TRAIL_ID_LEN for n in range(MAX_TRAIL))
    largest = ReceiptBatch(_subjects(MAX_RECEIPT_SUBJECTS), 6000, 20, path)
    assert len(largest.encode()) == MAX_BATCH_LEN
    assert ReceiptBatch.decode(largest.encode(), A) == largest
    frame = 1 + COMPACT_HEADER_LEN + COMPACT_OVERHEAD + MAX_BATCH_LEN
    assert frame <= MAX_DM_PAYLOAD - HOP_OVERHEAD, (
        f"a batch receipt frame of {frame} bytes needs two LoRa frames"
    )
    small = ReceiptBatch(_subjects(2), 6000, 1, (B[:4],))
    assert len(small.encode()) == 6 + 4 + 2 * 6  # smaller than two single receipts (2 x 31)
    assert [r.subject for r in small.receipts()] == list(_subjects(2))
    assert all(r.hops == 1 and r.path == (B[:4],) for r in small.receipts())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "at least 6"),
        (bytes(6), "2 to 16 subjects"),
        (bytes(6 + 6), "2 to 16 subjects"),  # one subject: that is the single-subject encoding
        (bytes(6 + 13), "2 to 16 subjects"),
        (bytes(6 + 17 * 6), "2 to 16 subjects"),
        (bytes(MAX_BATCH_LEN + 1), "at most"),
        (bytes(4) + b"\x01\x02" + bytes(8 + 12), "names 2 nodes for 1 hops"),
    ],
)
def test_hostile_batches_are_refused_by_name(data: bytes, message: str) -> None:
    with pytest.raises(ReceiptDecodeError, match=message):
        ReceiptBatch.decode(data, A)


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=MAX_BATCH_LEN + 8))
def test_fuzz_batch_any_bytes_decode_canonically_or_are_refused(data: bytes) -> None:
    try:
        batch = ReceiptBatch.decode(data, A)
    except ReceiptDecodeError:
        return
    assert batch.encode() == data and all(subject.origin == A for subject in batch.subjects)


def test_a_batch_names_one_origin() -> None:
    with pytest.raises(ValueError, match="share one origin"):
        ReceiptBatch((*_subjects(1), *_subjects(1, B)), 1, 0)


def _arrived(
    origin: bytes, seq: int, via: tuple[bytes, ...], priority: Priority = Priority.ROUTINE
) -> Bundle:
    bundle = Bundle(origin, Destination.to_node(C), 5000, seq, 600 + seq, priority, Kind.TEXT, b"sealed")
    for hop in via:
        bundle = bundle.forwarded().taken_by(hop)
    return bundle


def test_receipts_for_groups_by_origin_and_path_in_chunks_and_keeps_one_subject_single() -> None:
    delivered = [_arrived(A, n, (B, C)) for n in range(MAX_RECEIPT_SUBJECTS + 3)]
    delivered += [_arrived(A, 100, (C,)), _arrived(B, 1, (C,)), _arrived(B, 2, (C,), Priority.FLASH)]
    out = receipts_for(delivered, 6000)
    shapes = [(kind, len(subjects), subjects[0].origin) for kind, _, subjects in out]
    assert shapes == [
        (Kind.RECEIPTS, MAX_RECEIPT_SUBJECTS, A),
        (Kind.RECEIPTS, 3, A),
        (Kind.RECEIPT, 1, A),  # another path
        (Kind.RECEIPTS, 2, B),
    ]
    _, single, _ = out[2]
    assert single == Receipt(BundleId(A, 5000, 100), 6000, 1, (C[:4],))
    _, first, _ = out[0]
    assert isinstance(first, ReceiptBatch) and first.hops == 2 and first.path == (B[:4], C[:4])


def test_receipts_for_groups_interleaved_origins_and_cuts_a_trail_longer_than_its_hops() -> None:
    """Subjects are grouped by run of one origin and path: an origin that comes back after another
    joins its first group, and a lying relay's long trail is cut as receipt_path cuts it."""
    a1, b1, a2 = _arrived(A, 1, (B, C)), _arrived(B, 1, (B, C)), _arrived(A, 2, (B, C))
    lying = dataclasses.replace(_arrived(A, 3, (B, C)), hop_count=1)  # two trail entries, one hop
    out = receipts_for([a1, b1, a2, lying], 6000)
    assert [(kind, subjects) for kind, _, subjects in out] == [
        (Kind.RECEIPTS, [a1, a2]),
        (Kind.RECEIPT, [b1]),
        (Kind.RECEIPT, [lying]),
    ]
    _, cut, _ = out[2]
    assert cut == Receipt(lying.id, 6000, 1, (C[:4],)) and cut.path == receipt_path(lying)


async def _exchange(src: NodeEngine, dst: NodeEngine, now: float) -> list[Bundle]:
    """Every frame ``src`` has for ``dst``, handed over as one batch; the bundles among them."""
    frames = []
    while (out := src.next_frame("ip0", now)) is not None:
        frames.append(out[1])
    await dst.frames_received([("ip0", src.node_id, frame) for frame in frames], now)
    decoded = (decode_frame(frame) for frame in frames)
    return [frame.bundle for frame in decoded if isinstance(frame, DataFrame)]


async def test_a_batch_of_deliveries_costs_one_receipt_bundle_and_frees_every_copy(tmp_path: Path) -> None:
    net = Deployment()
    for name in ("a", "b"):
        net.enrol(name)
    a, b = await net.open("a", tmp_path, T0), await net.open("b", tmp_path, T0)
    try:
        await a.link_up(IP, b.node_id, T0)
        await b.link_up(IP, a.node_id, T0)
        sent = [
            await a.send(
                Destination.to_node(b.node_id),
                f"m{n}".encode(),
                kind=Kind.TEXT,
                priority=Priority.FLASH,
                lifetime=600,
                now=T0,
            )
            for n in range(40)
        ]
        carried = await _exchange(a, b, T0)
        assert {bundle.id for bundle in carried} >= set(sent)
        assert sorted(d.bundle_id for d in await b.receive()) == sorted(sent)
        back = await _exchange(b, a, T0 + 1)
        receipts = [bundle for bundle in back if bundle.kind in (Kind.RECEIPT, Kind.RECEIPTS)]
        assert [bundle.kind for bundle in receipts] == [Kind.RECEIPTS] * 3  # 16 + 16 + 8 subjects
        assert all(bundle.priority is Priority.FLASH for bundle in receipts)
        for bundle_id in sent:
            status = a.status(bundle_id)
            assert status.state is State.DELIVERED and status.hops == 1, status
            assert not a.core.holds(bundle_id), "FLASH is kept only until the end-to-end receipt"
        assert a.security.forged_receipts == 0
    finally:
        await a.close()
        await b.close()


async def test_a_batch_receipt_sealed_by_another_node_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    net = Deployment()
    for name in ("a", "b", "m"):
        net.enrol(name)
    a, b, m = [await net.open(name, tmp_path, T0) for name in ("a", "b", "m")]
    try:
        sent = [
            await a.send(
                Destination.to_node(b.node_id),
                b"order",
                kind=Kind.TEXT,
                priority=Priority.IMMEDIATE,
                lifetime=600,
                now=T0,
            )
            for _ in range(3)
        ]
        forged = ReceiptBatch(tuple(sent), int(T0), 1, (m.node_id[:4],))
        # m seals it pairwise to a, as only a destination should: a believes a receipt only from the
        # node each subject was addressed to.
        await m.send(
            Destination.to_node(a.node_id),
            forged.encode(),
            kind=Kind.RECEIPTS,
            priority=Priority.IMMEDIATE,
            lifetime=600,
            now=T0,
        )
        await a.link_up(IP, m.node_id, T0)
        await m.link_up(IP, a.node_id, T0)
        await _exchange(m, a, T0)
        assert a.security.forged_receipts == 3
        assert all(a.status(bundle_id).state is State.QUEUED for bundle_id in sent)
        assert all(a.core.holds(bundle_id) for bundle_id in sent)
    finally:
        for engine in (a, b, m):
            await engine.close()
