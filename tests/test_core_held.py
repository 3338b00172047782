"""The relay's in-memory record of held bundles (relay/core/held.py) and its seen memory (seen.py):
small records, payloads left in the store and read back, expiry order, summaries, memory per bundle."""

from __future__ import annotations

import tracemalloc
from collections.abc import Sequence

import pytest

import relay.core.held as held_module
from relay.bundle import Bundle, BundleId, Destination, Priority, encode_full
from relay.core.actions import Drop, Replace
from relay.core.frames import AckFrame, DataFrame, decode_frame, encode_frame, id_hash
from relay.core.held import DamagedStoreError, HeldBundles
from relay.core.machine import RelayCore
from relay.core.seen import SeenIds, id_digest
from relay.links.base import LinkProfile

ORIGIN = bytes([9]) * 16
PEER = bytes([0xDD]) * 16
ME = bytes([1]) * 16
IP = LinkProfile("ip0", "ip", mtu=64000, bitrate=1e9)
NOW = 90_000_000.0


def _bundle(seq: int, priority: Priority = Priority.ROUTINE, lifetime: int = 86_400) -> Bundle:
    return Bundle(
        ORIGIN,
        Destination.to_node(PEER),
        90_000_000 + seq // 65536,
        seq % 65536,
        lifetime,
        priority,
        40,
        bytes([seq % 251]) * 100,
    )


def test_urgent_bundles_stay_in_memory_others_are_read_back_from_the_store() -> None:
    stored = {b.id: b for b in (_bundle(1, Priority.FLASH), _bundle(2, Priority.IMMEDIATE), _bundle(3))}
    reads: list[BundleId] = []

    def load(bundle_ids: Sequence[BundleId]) -> dict[BundleId, bytes]:
        reads.extend(bundle_ids)
        return {i: encode_full(stored[i]) for i in bundle_ids if i in stored}

    held = HeldBundles(load, resident_bytes=0)
    records = {b.priority: held.add(b, local=False, copies=1) for b in stored.values()}
    assert records[Priority.FLASH].bundle is not None and records[Priority.IMMEDIATE].bundle is not None
    routine = records[Priority.ROUTINE]
    assert routine.bundle is None and routine.full_size > routine.compact_size > 100
    assert held.bundle(routine) == _bundle(3) and reads == [routine.id]
    assert held.bundle(records[Priority.FLASH]) == _bundle(1, Priority.FLASH) and len(reads) == 1
    del stored[routine.id]  # evicted by the store since
    assert held.bundle(routine) is None


def test_a_damaged_stored_bundle_is_the_stores_fault_not_a_neighbours() -> None:
    # The engine takes a ValueError out of the core for a neighbour's bad frame (refused, counted as
    # hostile); a held bundle that does not decode from the store's bytes must not look like one.
    bundle = _bundle(3)
    held = HeldBundles(lambda ids: {i: encode_full(bundle)[:40] for i in ids}, resident_bytes=0)
    record = held.add(bundle, local=False, copies=1)
    with pytest.raises(DamagedStoreError, match="corrupt") as raised:
        held.bundle(record)
    assert not isinstance(raised.value, ValueError)


def test_a_damaged_stored_bundle_looked_for_by_the_backbone_is_dropped_not_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A command post's backbone bridge asks for the bundles held for nodes another post heard
    (``held_for``); one whose stored copy does not decode raised DamagedStoreError there and ended
    the bridge's loop. It is dropped as when a link builds its frame, and the others are found."""
    monkeypatch.setattr(held_module, "RESIDENT_BYTES", 0)
    good, bad = _bundle(1), _bundle(2)
    stored = {good.id: encode_full(good), bad.id: encode_full(bad)[:40]}
    core = RelayCore(ME, load=lambda ids: {i: stored[i] for i in ids if i in stored})
    for bundle in (good, bad):
        core.restore(bundle, False, NOW)
    assert core.held_for({PEER}) == [good]
    assert not core.holds(bad.id) and core.holds(good.id) and core.damaged_total == 1
    assert core.damaged[bad.id].startswith("not a msgpack bundle")  # the decoder's reason
    [drop] = [action for action in core.timer(NOW) if isinstance(action, Drop)]
    assert drop.bundle_ids == [bad.id] and drop.reason.startswith("damaged in the store")


def test_copies_of_a_damaged_held_bundle_are_acknowledged_once_its_replacement_is_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first neighbour's copy of a held bundle whose stored copy does not decode replaces it
    (a Replace action); another copy (another neighbour, or a resend) arriving before the engine
    calls ``replaced`` is not acknowledged at once from the copy in memory: every ACK waits for the
    store, and none goes if the replacement was refused."""
    monkeypatch.setattr(held_module, "RESIDENT_BYTES", 0)
    other = bytes([0xEE]) * 16
    bundles = [_bundle(1), _bundle(2)]
    stored = {bundle.id: encode_full(bundle)[:40] for bundle in bundles}
    core = RelayCore(ME, load=lambda ids: {i: stored[i] for i in ids if i in stored})

    def acked_to() -> list[bytes]:
        peers = []
        while (out := core.next_frame(IP.name, NOW)) is not None:
            if isinstance(decode_frame(out[1]), AckFrame):
                peers.append(out[0])
        return peers

    for bundle in bundles:
        core.restore(bundle, False, NOW)
    for peer in (ORIGIN, other):
        core.link_up(IP, peer, NOW)
    for bundle, stored_ok in zip(bundles, (True, False), strict=True):
        data = encode_frame(DataFrame(bundle))
        assert [type(a) for a in core.frame(IP.name, ORIGIN, data, NOW)] == [Replace]
        assert core.frame(IP.name, other, data, NOW) == [] and core.frame(IP.name, ORIGIN, data, NOW) == []
        assert acked_to() == [], "ACK before the replacement was durable"
        core.replaced(bundle.id, stored_ok)
        assert sorted(acked_to()) == (sorted([ORIGIN, other]) if stored_ok else [])


def test_resident_budget_is_spent_and_given_back() -> None:
    one = 1 + len(encode_full(_bundle(0))) + held_module.RESIDENT_OVERHEAD
    held = HeldBundles(lambda _: {}, resident_bytes=2 * one)
    records = [held.add(_bundle(seq), local=False, copies=1) for seq in range(3)]
    assert [r.bundle is not None for r in records] == [True, True, False]
    held.remove(records[0].id)
    assert held.add(_bundle(10), local=False, copies=1).bundle is not None


def test_a_received_bundles_kept_encoding_counts_against_the_resident_budget() -> None:
    """A bundle decoded from a DATA frame keeps its encoding (``Bundle.encoded``): in memory it
    costs its frame's size once more, and all of it comes back when it goes (or is replaced)."""
    frame = encode_frame(DataFrame(_bundle(0), 1))
    received = decode_frame(frame, taken_by=ME).bundle  # type: ignore[union-attr]
    assert received.encoded is not None
    size = 1 + len(received.encoded)
    budget = 2 * size + held_module.RESIDENT_OVERHEAD
    held = HeldBundles(lambda _: {}, resident_bytes=budget)
    record = held.add(received, local=False, copies=1)
    assert record.bundle is received and held._resident_left == 0
    held.replace(record, _bundle(0))  # decoded from elsewhere: no kept encoding
    assert held._resident_left == size
    held.remove(record.id)
    assert held._resident_left == budget


def test_without_a_store_every_bundle_stays_in_memory() -> None:
    held = HeldBundles(None, resident_bytes=0)
    assert all(held.add(_bundle(seq), local=False, copies=1).bundle is not None for seq in range(5))


def test_expiry_order_skips_dropped_bundles_and_the_heap_is_pruned() -> None:
    held = HeldBundles(None)
    short = held.add(_bundle(1, lifetime=60), local=False, copies=1)
    held.add(_bundle(2, lifetime=120), local=False, copies=1)
    gone = held.add(_bundle(3, lifetime=30), local=False, copies=1)
    held.remove(gone.id)
    assert held.next_expiry() == gone.expires  # an early wake-up, nothing more
    assert held.expired(short.expires) == [short.id]
    assert short.id in held  # the caller drops it
    for seq in range(10, 3000):  # churn: dropped records must not pile up until they expire
        held.remove(held.add(_bundle(seq), local=False, copies=1).id)
    kept = len(held._expiry) + len(held._in_order)
    assert kept <= max(held_module.STALE_HEAP_MIN, len(held)) + len(held) + 1


def test_bundles_held_out_of_expiry_order_expire_in_order() -> None:
    """Most bundles come in the order they expire (kept in a FIFO, no comparison per add); the
    others (another origin's clock, a shorter lifetime) go on a heap. Both give them back in
    expiry order, and the next expiry is the earlier of the two."""
    held = HeldBundles(None)
    lifetimes = [300, 400, 100, 500, 200, 50, 600]  # 100, 200, 50 come after later ones
    records = [
        held.add(_bundle(seq, lifetime=lifetime), local=False, copies=1)
        for seq, lifetime in enumerate(lifetimes)
    ]
    by_expiry = sorted(records, key=lambda record: record.expires)
    assert held.next_expiry() == by_expiry[0].expires
    assert held.expired(by_expiry[2].expires) == [record.id for record in by_expiry[:3]]
    held.remove(by_expiry[3].id)
    assert held.next_expiry() == by_expiry[3].expires  # dropped, still first: an early wake-up
    assert held.expired(by_expiry[-1].expires) == [record.id for record in by_expiry[4:]]
    assert held.next_expiry() is None


def test_summary_hashes_find_held_bundles_and_equal_values_are_shared() -> None:
    held = HeldBundles(None, resident_bytes=0)
    records = [held.add(_bundle(seq), local=False, copies=1) for seq in range(50)]
    assert held.with_hashes([id_hash(records[7].id), b"\0\0\0\0"]) == [records[7]]
    assert held.with_hashes([]) == []
    for record in records:
        held.route(record, bytes(bytearray(PEER)), "ip0", True)  # a new bytes object each time
        held.add_holders(record, [bytes(bytearray(ORIGIN))])
    first, last = records[0], records[-1]
    assert first.destination is last.destination and first.routed is last.routed
    assert first.holders is last.holders and first.lifetime is last.lifetime
    assert first.route(PEER) == (PEER, "ip0", True) and first.unroute(PEER) is not None
    assert first.routed == () and last.route(PEER) is not None


def test_seen_memory_forgets_the_oldest_first() -> None:
    seen = SeenIds(3)
    ids = [id_digest(BundleId(ORIGIN, 1, seq).key()) for seq in range(5)]
    for bundle_id in ids[:3]:
        seen.add(bundle_id)
    seen.add(ids[0])  # already there: no change of order
    assert len(seen) == 3 and all(i in seen for i in ids[:3])
    seen.add(ids[3])
    seen.add(ids[4])
    assert ids[0] not in seen and ids[1] not in seen and all(i in seen for i in ids[2:])
    with pytest.raises(ValueError):
        SeenIds(0)


def test_a_queued_backlog_costs_a_few_hundred_bytes_per_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15's budget: 100,000 queued bundles in ≤ 100 MB with the interpreter. The core's own
    share per held and queued bundle, payload in the store (it was about 1.7 KB)."""
    monkeypatch.setattr(held_module, "RESIDENT_BYTES", 0)
    count = 20_000
    stored = {b.id: b for b in (_bundle(seq) for seq in range(count))}
    tracemalloc.start()
    try:
        core = RelayCore(ME, load=lambda ids: {i: encode_full(stored[i]) for i in ids})
        for bundle in stored.values():
            core.restore(bundle, False, NOW)
        core.link_up(IP, PEER, NOW)
        per_bundle = tracemalloc.get_traced_memory()[0] / count
    finally:
        tracemalloc.stop()
    assert core.queued("ip0") == count + 1  # and the summary
    assert per_bundle < 450, f"{per_bundle:.0f} B per held bundle"
    frame = core.next_frame("ip0", NOW)
    assert frame is not None and frame[0] == PEER


def test_a_read_fetches_the_bundles_queued_next_and_flash_never_waits_for_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One store read per READ_AHEAD frames of a backlog, each bundle read once, in queue order; a
    FLASH bundle arriving in the middle goes next, from memory."""
    monkeypatch.setattr(held_module, "RESIDENT_BYTES", 0)
    count = 3 * held_module.READ_AHEAD + 4  # three full reads and a short one
    stored = {b.id: b for b in (_bundle(seq) for seq in range(count))}
    calls: list[list[BundleId]] = []

    def load(bundle_ids: Sequence[BundleId]) -> dict[BundleId, bytes]:
        calls.append(list(bundle_ids))
        return {i: encode_full(stored[i]) for i in bundle_ids if i in stored}

    core = RelayCore(ME, load=load)
    for bundle in stored.values():
        core.restore(bundle, False, NOW)
    core.link_up(IP, PEER, NOW)
    sent = [core.next_frame("ip0", NOW) for _ in range(11)]  # the summary, then ten bundles
    assert all(frame is not None for frame in sent) and len(calls) == 1
    assert len(calls[0]) == held_module.READ_AHEAD
    assert calls[0] == [_bundle(seq).id for seq in range(held_module.READ_AHEAD)]
    flash = Bundle(ORIGIN, Destination.to_node(PEER), int(NOW), 5000, 86_400, Priority.FLASH, 40, b"SOS")
    core.originate(flash, NOW)
    frame = core.next_frame("ip0", NOW)
    assert frame is not None and b"SOS" in frame[1] and len(calls) == 1
    while core.next_frame("ip0", NOW) is not None:
        pass
    read = [bundle_id for call in calls for bundle_id in call]
    assert sorted(read) == sorted(stored) and len(calls) == 4


def test_read_ahead_is_bounded_and_forgets_a_dropped_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    stored = {b.id: b for b in (_bundle(seq) for seq in range(40))}
    reads: list[BundleId] = []

    def load(bundle_ids: Sequence[BundleId]) -> dict[BundleId, bytes]:
        reads.extend(bundle_ids)
        return {i: encode_full(stored[i]) for i in bundle_ids if i in stored}

    held = HeldBundles(load, resident_bytes=0)
    records = [held.add(b, local=False, copies=1) for b in stored.values()]
    monkeypatch.setattr(held_module, "AHEAD_BYTES", 6 * records[0].full_size)
    assert held.source(records[0], records[1:]) == encode_full(_bundle(0))
    assert reads == [record.id for record in records[:4]]  # three ahead: half the budget a read
    assert held.bundle(records[1]) == _bundle(1) and len(reads) == 4  # kept: no read
    held.remove(records[3].id)
    held.bundle(records[3])
    assert reads[4:] == [records[3].id]  # its read-ahead copy went with it: read again
    del stored[records[2].id]  # kept, then dropped by the store: still sent
    assert held.bundle(records[2]) == _bundle(2) and len(reads) == 5


def test_a_backlog_of_large_bundles_is_read_once_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """A read brings at most half the read-ahead's budget, so nothing it brings is dropped before its
    frame is built. Before, 32 bundles of 10 kB were read into 256 KiB and the next five dropped:
    a sender read each bundle of a 10 kB backlog 1.9 times."""
    stored = {b.id: b for b in (_bundle(seq) for seq in range(40))}
    calls: list[list[BundleId]] = []

    def load(bundle_ids: Sequence[BundleId]) -> dict[BundleId, bytes]:
        calls.append(list(bundle_ids))
        return {i: encode_full(stored[i]) for i in bundle_ids if i in stored}

    held = HeldBundles(load, resident_bytes=0)
    records = [held.add(b, local=False, copies=1) for b in stored.values()]
    monkeypatch.setattr(held_module, "AHEAD_BYTES", 8 * records[0].full_size)
    for index, record in enumerate(records):
        assert held.source(record, records[index + 1 :]) == encode_full(_bundle(index))
    read = [bundle_id for call in calls for bundle_id in call]
    assert read == [record.id for record in records]  # each once, in queue order
    assert [len(call) for call in calls] == [5] * 8  # the one needed and four ahead
