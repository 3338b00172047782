"""The durable store on real SQLite files: dedup, expiry, quota/eviction, inbox, ids, migrations."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from relay.bundle import Bundle, BundleId, Destination, Priority, encode_full
from relay.errors import Mesh112Error
from relay.store import ID_BLOCK, Store, StoreClosedError, StoreFullError, UnknownBundleError
from relay.store_schema import SCHEMA_VERSION, StoreError

ORIGIN = bytes(range(16))
NEIGHBOUR = b"\xaa" * 16


def make(
    seq: int,
    priority: Priority = Priority.ROUTINE,
    *,
    created: int = 1000,
    lifetime: int = 3600,
    size: int = 100,
) -> Bundle:
    return Bundle(
        ORIGIN, Destination.everyone(), created, seq, lifetime, priority, 40, bytes([seq % 256]) * size
    )


async def test_put_get_dedup_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await Store.open(path)
    bundle = make(1)
    assert await store.put(bundle, now=1000) is True
    assert await store.put(bundle, now=1001) is False
    assert await store.get(bundle.id) == bundle
    await store.close()
    store = await Store.open(path)
    assert await store.put(bundle, now=1002) is False
    [stored] = await store.load_all()
    assert stored.bundle == bundle and stored.received_at == 1000 and stored.local is False
    await store.close()


async def test_deleted_bundle_is_still_a_duplicate_until_expiry(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "s.db")
    bundle = make(1, lifetime=100)
    await store.put(bundle, now=1000)
    await store.delete(bundle.id, "forwarded with custody")
    assert await store.get(bundle.id) is None
    assert await store.put(bundle, now=1050) is False
    assert await store.expire(now=1100) == []  # nothing held; the seen id is forgotten
    assert (await store.stats()).seen == 0
    assert await store.put(bundle, now=1100) is False  # expired: refused, not re-accepted
    await store.close()


async def test_expire_drops_held_bundles_past_lifetime(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "s.db")
    short, long = make(1, lifetime=60), make(2, lifetime=600)
    assert await store.put_many([short, long], now=1000) == [True, True]
    assert await store.expire(now=1059) == []
    assert await store.expire(now=1060) == [short.id]
    assert [s.bundle for s in await store.load_all()] == [long]
    assert (await store.stats()).bytes_used == len(encode_full(long))
    await store.close()


async def test_expire_commits_only_when_an_id_is_due(tmp_path: Path) -> None:
    """A node expires every minute and most minutes nothing is due: no transaction then. The first
    expiry is known across a reopen and lowered by a put queued while an expire runs."""
    path = tmp_path / "s.db"
    store = await Store.open(path)
    first, second = make(1, lifetime=100), make(2, lifetime=200)
    await store.put_many([first, second], now=1000)
    await store.close()
    store = await Store.open(path)
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    assert await store.expire(now=1099) == []
    assert statements == []  # nothing due: not even a BEGIN
    expiring = asyncio.create_task(store.expire(now=1100))
    await asyncio.sleep(0)  # its op is queued
    short = make(3, lifetime=20)  # queued behind it: due at 1020, before the file's next (1200)
    assert await store.put(short, now=1000) is True
    assert await expiring == [first.id]
    assert "BEGIN IMMEDIATE" in statements
    assert await store.expire(now=1020) == [short.id]
    statements.clear()
    assert await store.expire(now=1199) == []
    assert statements == []
    assert await store.expire(now=1200) == [second.id]
    await store.close()


async def test_a_lone_put_is_one_insert_and_still_finds_its_duplicate(tmp_path: Path) -> None:
    """A put of one bundle (a frame received) asks no rowid: the count of changes says whether its
    insert took it; a duplicate is refused and puts nothing in the inbox."""
    store = await Store.open(tmp_path / "s.db")
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    bundle = make(1)
    assert await store.put(bundle, now=1000, deliver=True) is True
    assert not [sql for sql in statements if sql.startswith("SELECT")]
    assert await store.put(bundle, now=1001, deliver=True) is False
    assert [b.id for b in await store.pending_deliveries()] == [bundle.id]
    assert (await store.stats()).inbox == 1
    await store.close()


async def test_put_many_dedups_within_the_batch(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "s.db")
    a, b = make(1), make(2)
    assert await store.put_many([a, b, a], now=1000) == [True, True, False]
    assert await store.put_many([b, make(3)], now=1000) == [False, True]
    await store.close()


async def test_concurrent_puts_are_group_committed(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "s.db")
    bundles = [make(i) for i in range(200)]
    results = await asyncio.gather(*(store.put(b, now=1000) for b in bundles + bundles[:50]))
    assert results.count(True) == 200 and results.count(False) == 50
    assert (await store.stats()).held_by_priority[Priority.ROUTINE] == 200
    await store.close()


def evicted_ids(store: Store) -> list[BundleId]:
    return [eviction.bundle_id for eviction in store.drain_evicted()]


async def test_eviction_lowest_class_oldest_first_and_flash_never(tmp_path: Path) -> None:
    one = len(encode_full(make(0)))
    store = await Store.open(tmp_path / "s.db", quota_bytes=one * 4)
    old_bulk = make(1, Priority.BULK, created=900)
    new_bulk = make(2, Priority.BULK, created=950)
    routine = make(3, Priority.ROUTINE)
    flash = make(4, Priority.FLASH)
    assert await store.put_many([new_bulk, old_bulk, routine, flash], now=1000) == [True] * 4
    assert await store.put(make(5, Priority.PRIORITY), now=1000) is True
    [eviction] = store.drain_evicted()
    assert eviction.bundle_id == old_bulk.id
    assert eviction.reason == "storage full: evicted for higher-priority traffic (a PRIORITY bundle)"
    assert await store.put(make(6, Priority.IMMEDIATE), now=1000) is True
    assert evicted_ids(store) == [new_bulk.id]
    assert store.drain_evicted() == []
    with pytest.raises(StoreFullError, match=r"quota.*ROUTINE") as refused:
        await store.put(make(7, Priority.ROUTINE), now=1000)  # may not evict its own class
    assert isinstance(refused.value, Mesh112Error)
    assert await store.put(make(8, Priority.FLASH), now=1000) is True
    assert await store.put(make(9, Priority.FLASH), now=1000) is True
    assert await store.put(make(10, Priority.FLASH), now=1000) is True
    assert evicted_ids(store) == [routine.id, make(5).id, make(6).id]
    with pytest.raises(StoreFullError, match="FLASH"):
        await store.put(make(11, Priority.FLASH), now=1000)
    assert sorted(s.bundle.seq for s in await store.load_all()) == [4, 8, 9, 10]
    await store.close()


async def test_full_store_of_flash_refuses_and_keeps_everything(tmp_path: Path) -> None:
    one = len(encode_full(make(0)))
    store = await Store.open(tmp_path / "s.db", quota_bytes=one * 2)
    flashes = [make(1, Priority.FLASH), make(2, Priority.FLASH)]
    await store.put_many(flashes, now=1000)
    with pytest.raises(StoreFullError, match="FLASH"):
        await store.put(make(3, Priority.FLASH), now=1000)
    with pytest.raises(StoreFullError):
        await store.put(make(4, Priority.BULK), now=1000)
    assert [s.bundle for s in await store.load_all()] == flashes
    assert store.drain_evicted() == []
    await store.close()


async def test_put_many_is_all_or_nothing_when_full(tmp_path: Path) -> None:
    one = len(encode_full(make(0)))
    store = await Store.open(tmp_path / "s.db", quota_bytes=one * 3)
    await store.put_many([make(1, Priority.BULK), make(2, Priority.FLASH)], now=1000)
    with pytest.raises(StoreFullError):
        await store.put_many(
            [make(3, Priority.FLASH), make(4, Priority.FLASH), make(5, Priority.FLASH)], now=1000
        )
    assert sorted(s.bundle.seq for s in await store.load_all()) == [1, 2]
    assert store.drain_evicted() == []
    assert (await store.stats()).bytes_used == 2 * one
    assert await store.put(make(3, Priority.FLASH), now=1000) is True  # the refused ids were not marked seen
    await store.close()


async def test_inbox_exactly_once_across_restart(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await Store.open(path)
    mine = make(1, Priority.FLASH)
    relayed = make(2)
    assert await store.put(mine, now=1000, deliver=True, hold=False) is True
    await store.put(relayed, now=1000)
    await store.enqueue_delivery(relayed.id)
    await store.enqueue_delivery(relayed.id)  # second time: no-op
    assert await store.pending_deliveries() == [mine, relayed]
    await store.ack_delivery(mine.id)
    await store.close()
    store = await Store.open(path)
    assert await store.pending_deliveries() == [relayed]
    await store.ack_delivery(relayed.id)
    await store.enqueue_delivery(relayed.id)  # delivered before: never queued again
    assert await store.put(mine, now=1001, deliver=True) is False
    assert await store.pending_deliveries() == []
    with pytest.raises(UnknownBundleError):
        await store.enqueue_delivery(make(99).id)
    await store.close()


async def test_forwarding_state_per_neighbour(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "s.db")
    bundle = make(1)
    await store.put(bundle, now=1000)
    await store.mark_forwarded(bundle.id, NEIGHBOUR, "lora0", "sent", now=1001)
    await store.mark_forwarded(bundle.id, NEIGHBOUR, "ip0", "sent", now=1002)
    await store.mark_forwarded(bundle.id, NEIGHBOUR, "lora0", "custody", now=1003)
    assert await store.forwarding(bundle.id) == [
        (NEIGHBOUR, "ip0", "sent", 1002.0),
        (NEIGHBOUR, "lora0", "custody", 1003.0),
    ]
    await store.delete(bundle.id, "custody accepted")
    assert await store.forwarding(bundle.id) == []
    await store.close()


async def test_delete_many_runs_statements_per_chunk_not_per_bundle(tmp_path: Path) -> None:
    """A custody ACK's 255 bundles leave in a few statements, not an UPDATE and a DELETE each (the
    sender deletes every bundle it hands on); the bytes they held leave the budget."""
    store = await Store.open(tmp_path / "s.db")
    bundles = [make(seq) for seq in range(1, 257)]
    await store.put_many(bundles, now=1000)
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    await store.delete_many([bundle.id for bundle in bundles[:255]], "custody accepted")
    assert len(statements) <= 6, statements  # BEGIN, a sum, an update, a delete, COMMIT
    assert (await store.stats()).bytes_used == len(encode_full(bundles[-1]))
    await store.close()


async def test_delete_many_frees_space_and_forwarding_in_one_op_across_chunks(tmp_path: Path) -> None:
    """A custody ACK's worth and more (over one IN chunk): each held copy goes, its bytes leave the
    budget, its forwarding record goes, its id stays seen; ids not held are skipped."""
    path = tmp_path / "s.db"
    store = await Store.open(path)
    bundles = [make(seq) for seq in range(1, 701)]
    await store.put_many(bundles, now=1000)
    kept = bundles[-1]
    await store.mark_forwarded(bundles[0].id, NEIGHBOUR, "ip0", "custody", now=1001)
    gone = [bundle.id for bundle in bundles[:-1]] + [make(900).id]  # the last was never stored
    await store.delete_many(gone, "custody accepted")
    assert (await store.stats()).bytes_used == len(encode_full(kept))  # one bundle's worth is left
    assert await store.forwarding(bundles[0].id) == []
    assert [stored.bundle for stored in await store.load_all()] == [kept]
    assert await store.put(bundles[5], now=1002) is False  # still seen
    await store.delete_many([], "nothing")
    await store.close()
    store = await Store.open(path)  # the deletes were committed
    assert [stored.bundle for stored in await store.load_all()] == [kept]
    assert (await store.stats()).bytes_used == len(encode_full(kept))
    await store.close()


async def test_custody_records_come_back_in_one_read_after_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await Store.open(path)
    first, second, bare = make(1), make(2), make(3)
    await store.put_many([first, second, bare], now=1000)
    other = b"\xbb" * 16
    await store.mark_forwarded(first.id, other, "ip0", "custody", now=1005)
    await store.mark_forwarded(first.id, NEIGHBOUR, "lora0", "custody", now=1002)
    await store.mark_forwarded(second.id, NEIGHBOUR, "lora0", "sent", now=1003)  # sent is not custody
    await store.close()
    store = await Store.open(path)
    assert await store.custody_records() == {
        first.id: [(NEIGHBOUR, "lora0", 1002.0), (other, "ip0", 1005.0)],  # oldest first
    }
    await store.close()


async def test_next_bundle_id_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await Store.open(path)
    ids = [await store.next_bundle_id(ORIGIN, 500) for _ in range(3)]
    assert ids == [BundleId(ORIGIN, 500, 0), BundleId(ORIGIN, 500, 1), BundleId(ORIGIN, 500, 2)]
    await store.close()
    store = await Store.open(path)
    assert await store.next_bundle_id(ORIGIN, 400) == BundleId(ORIGIN, 500, 3)  # clock went back
    assert await store.next_bundle_id(ORIGIN, 501) == BundleId(ORIGIN, 501, 0)
    assert await store.next_bundle_id(b"\x01" * 16, 400) == BundleId(b"\x01" * 16, 400, 0)
    await store.close()


def _id_mark(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as raw:
        row = raw.execute("SELECT created, seq FROM origin_seq WHERE origin = ?", (ORIGIN,)).fetchone()
    return int(row[0]), int(row[1])


async def test_next_bundle_id_in_a_new_second_waits_for_no_commit(tmp_path: Path) -> None:
    """The next second's first block is reserved in the commit of the bundle given the id before it
    (off the sender's path), so the first id of second 501 is issued while the file is locked."""
    path = tmp_path / "s.db"
    store = await Store.open(path)
    first = await store.next_bundle_id(ORIGIN, 500)
    assert first == BundleId(ORIGIN, 500, 0)
    assert _id_mark(path) == (500, ID_BLOCK - 1)
    await store.put(make(first.seq, created=first.created), now=500)  # as the engine does next
    assert _id_mark(path) == (501, ID_BLOCK - 1)  # reserved in the same commit
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # no commit can land now
    try:
        issued = await asyncio.wait_for(store.next_bundle_id(ORIGIN, 501), 0.5)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert issued == BundleId(ORIGIN, 501, 0)
    await store.put(make(issued.seq, created=issued.created), now=501)
    assert _id_mark(path) == (502, ID_BLOCK - 1)
    # kill -9 now: a restart within second 501 continues past the block reserved ahead (a second
    # ahead of the clock), a later one at its own second
    crashed = await Store.open(path)
    assert await crashed.next_bundle_id(ORIGIN, 501) == BundleId(ORIGIN, 502, ID_BLOCK)
    await crashed.close()
    crashed = await Store.open(path)
    assert await crashed.next_bundle_id(ORIGIN, 504) == BundleId(ORIGIN, 504, 0)
    await crashed.close()
    await store.close()


async def test_a_block_reserved_after_the_next_seconds_never_lowers_the_mark(tmp_path: Path) -> None:
    """Second 501's block is queued first, then a batch passes second 500's block: both commit
    together, and the file keeps the higher mark, under which 501's ids are issued from memory."""
    path = tmp_path / "s.db"
    store = await Store.open(path)
    await store.next_bundle_id(ORIGIN, 500)  # reserves 500's block, queues 501's
    await store.next_bundle_ids(ORIGIN, 500, 300)  # past 500's block: reserves more of 500
    assert _id_mark(path) == (501, ID_BLOCK - 1)
    issued = await store.next_bundle_id(ORIGIN, 501)
    assert issued == BundleId(ORIGIN, 501, 0)
    crashed = await Store.open(path)  # kill -9 now
    assert await crashed.next_bundle_id(ORIGIN, 501) > issued
    await crashed.close()
    await store.close()


async def test_next_bundle_id_rolls_into_next_second_after_65536(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await Store.open(path)
    await store.next_bundle_id(ORIGIN, 7)
    await store.close()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE origin_seq SET seq = 65535")
    store = await Store.open(path)
    assert await store.next_bundle_id(ORIGIN, 7) == BundleId(ORIGIN, 8, 0)
    await store.close()


async def test_stats_and_high_water_survive_restart(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await Store.open(path, quota_bytes=10_000)
    bundles = [make(i, Priority(i % 5)) for i in range(10)]
    await store.put_many(bundles, now=1000)
    peak = (await store.stats()).bytes_used
    for bundle in bundles[:6]:
        await store.delete(bundle.id, "test")
    await store.close()
    store = await Store.open(path, quota_bytes=10_000)
    stats = await store.stats()
    assert stats.high_water_bytes == peak and stats.bytes_used < peak and stats.quota_bytes == 10_000
    assert sum(stats.held_by_priority.values()) == 4 and stats.seen == 10
    await store.close()


async def test_schema_is_versioned_and_newer_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await Store.open(path)
    await store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this Mesh112"):
        await Store.open(path)


async def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "s.db")
    await store.close()
    with pytest.raises(StoreClosedError):
        await store.put(make(1), now=1000)
    with pytest.raises(StoreClosedError):
        await store.get(make(1).id)


async def test_a_closed_store_issues_no_id(tmp_path: Path) -> None:
    """Ids of a reserved block are issued from memory: one issued after close() recorded the last
    would be issued again after the next open."""
    store = await Store.open(tmp_path / "s.db")
    await store.next_bundle_id(ORIGIN, 1000)  # a block reserved: the next ids need no commit
    await store.close()
    with pytest.raises(StoreClosedError):
        await store.next_bundle_id(ORIGIN, 1000)
    with pytest.raises(StoreClosedError):
        await store.next_bundle_ids(ORIGIN, 1000, 3)


async def test_concurrent_puts_near_the_quota_evict_and_refuse_one_by_one(tmp_path: Path) -> None:
    one = len(encode_full(make(0)))
    store = await Store.open(tmp_path / "s.db", quota_bytes=one * 3)
    bulk = make(1, Priority.BULK)
    await store.put_many([bulk, make(2, Priority.FLASH)], now=1000)
    outcomes = await asyncio.gather(
        store.put(make(3, Priority.BULK), now=1000),  # fits in the free slot
        store.put(make(4, Priority.IMMEDIATE), now=1000),  # evicts the oldest BULK
        store.put(make(5, Priority.BULK), now=1000),  # nothing lower to evict: refused
        store.put(make(2, Priority.FLASH), now=1000),  # duplicate
        return_exceptions=True,
    )
    assert outcomes[:2] == [True, True] and outcomes[3] is False
    assert isinstance(outcomes[2], StoreFullError)
    assert evicted_ids(store) == [bulk.id]
    assert sorted(s.bundle.seq for s in await store.load_all()) == [2, 3, 4]
    assert (await store.stats()).bytes_used == 3 * one
    await store.close()


async def test_put_each_takes_or_refuses_each_item_in_one_call(tmp_path: Path) -> None:
    one = len(encode_full(make(0)))
    store = await Store.open(tmp_path / "s.db", quota_bytes=one * 3)
    bulk = make(1, Priority.BULK)
    await store.put_many([bulk, make(2, Priority.FLASH)], now=1000)
    outcomes = await store.put_each(
        [
            (make(3, Priority.BULK), False, True),  # fits in a free slot
            (make(2, Priority.FLASH), False, True),  # duplicate
            (make(4, Priority.IMMEDIATE), True, False),  # for this node only: the inbox, evicts the BULK
            (make(5, Priority.BULK), False, True),  # nothing lower to evict: refused alone
            (make(4, Priority.IMMEDIATE), True, False),  # the same bundle twice in one batch
        ],
        now=1000,
    )
    assert outcomes[:3] == [True, False, True] and outcomes[4] is False
    assert isinstance(outcomes[3], StoreFullError)
    assert evicted_ids(store) == [bulk.id]
    assert sorted(s.bundle.seq for s in await store.load_all()) == [2, 3]
    assert [b.seq for b in await store.pending_deliveries()] == [4]
    await store.ack_deliveries([make(4).id, make(9).id])  # an id never queued is no error
    assert await store.pending_deliveries() == []
    assert await store.put(make(5, Priority.BULK), now=1000) is True  # refused, so not seen
    await store.close()
