"""The durable store on real SQLite files: dedup, expiry, quota/eviction, inbox, ids, migrations."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

import pytest

from relay.bundle import MAX_SEQ, Bundle, BundleId, Destination, Priority, encode_full
from relay.errors import Mesh112Error
from relay.store import (
    BATCH_BLOCK,
    ID_BLOCK,
    ID_HORIZON_S,
    Store,
    StoreClosedError,
    StoreFullError,
    UnknownBundleError,
)
from relay.store_schema import MIGRATIONS, SCHEMA_VERSION, StoreError

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


def _completion_order(tasks: dict[str, asyncio.Task[object]]) -> list[str]:
    """The names of ``tasks`` in the order they finish (filled in as they do)."""
    order: list[str] = []
    for name, task in tasks.items():
        task.add_done_callback(lambda _, name=name: order.append(name))  # type: ignore[misc]
    return order


async def test_an_alarm_commits_ahead_of_the_writes_queued_before_it(tmp_path: Path) -> None:
    """A backlog's writes wait in the writer's queue; a FLASH put queued after them is the next
    transaction, not the last (it waited behind every batch: up to 650 ms over three hops)."""
    store = await Store.open(tmp_path / "s.db", max_batch=64)
    tasks = {f"routine {i}": asyncio.create_task(store.put(make(i), now=1000)) for i in range(640)}
    tasks["alarm"] = asyncio.create_task(store.put(make(9999, Priority.FLASH), now=1000))
    order = _completion_order(tasks)
    assert all(await asyncio.gather(*tasks.values()))
    assert order[0] == "alarm", order[:3]
    await store.close()


async def test_alarms_take_turns_with_the_other_writes(tmp_path: Path) -> None:
    """A stream of alarms does not starve the other writes: the lanes alternate, a batch each."""
    store = await Store.open(tmp_path / "s.db", max_batch=64)
    tasks = {f"routine {i}": asyncio.create_task(store.put(make(i), now=1000)) for i in range(300)}
    tasks |= {
        f"alarm {i}": asyncio.create_task(store.put(make(1000 + i, Priority.FLASH), now=1000))
        for i in range(300)
    }
    order = _completion_order(tasks)
    assert all(await asyncio.gather(*tasks.values()))
    assert order[:64] == [f"alarm {i}" for i in range(64)]
    assert order[64:128] == [f"routine {i}" for i in range(64)]
    assert order.index("routine 0") < order.index("alarm 299")
    await store.close()


async def test_a_write_queued_after_an_alarm_commits_after_it_when_the_lanes_take_turns(
    tmp_path: Path,
) -> None:
    """An alarm sent here leaves while its put commits, so its custody ACK's delete can be queued
    before the put is done: the delete must land after it, even when the other lane has its turn
    (the put would otherwise be written after the delete and hold a handed-on bundle for ever)."""
    store = await Store.open(tmp_path / "s.db", max_batch=64)
    sent = make(9999, Priority.FLASH)
    tasks = {
        f"alarm {i}": asyncio.create_task(store.put(make(i, Priority.FLASH), now=1000)) for i in range(64)
    }
    tasks["routine"] = asyncio.create_task(store.put(make(500), now=1000))
    tasks["sent"] = asyncio.create_task(store.put(sent, now=1000, local=True))
    tasks["acked"] = asyncio.create_task(store.delete_many([sent.id], "custody passed on"))
    order = _completion_order(tasks)
    await asyncio.gather(*tasks.values())
    assert order[64:] == ["routine", "sent", "acked"]
    assert await store.get(sent.id) is None
    await store.close()


async def test_alarms_queued_before_close_are_written(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await Store.open(path, max_batch=64)
    alarms = [asyncio.create_task(store.put(make(i, Priority.FLASH), now=1000)) for i in range(200)]
    await asyncio.sleep(0)  # queued
    await store.close()
    assert all(await asyncio.gather(*alarms))
    reopened = await Store.open(path)
    assert (await reopened.stats()).held_by_priority[Priority.FLASH] == 200
    await reopened.close()


async def test_an_alarms_first_id_after_opening_does_not_wait_for_the_backlog(tmp_path: Path) -> None:
    """The first id after opening waits for a commit of the id's mark; for an alarm that commit
    takes the alarm lane (a responder's SOS right after a restart waited behind its backlog)."""
    path = tmp_path / "s.db"
    store = await Store.open(path, max_batch=64)
    tasks = {f"routine {i}": asyncio.create_task(store.put(make(i), now=1000)) for i in range(640)}
    tasks["id"] = asyncio.create_task(store.next_bundle_id(NEIGHBOUR, 1000, urgent=True))
    order = _completion_order(tasks)
    await asyncio.gather(*tasks.values())
    assert order.index("id") <= 2 * 64, order.index("id")
    issued = tasks["id"].result()
    await store.close()
    crashed = await Store.open(path)
    assert await crashed.next_bundle_id(NEIGHBOUR, 1000) > issued  # its mark was committed
    await crashed.close()


async def test_ids_prepared_at_start_are_issued_without_a_commit_and_never_reused(tmp_path: Path) -> None:
    """After ``prepare_ids`` the first id asked within the window is issued from memory, ahead of a
    backlog's writes queued before it; after a kill -9 no id is issued twice."""
    path = tmp_path / "s.db"
    store = await Store.open(path, max_batch=64)
    await store.prepare_ids(NEIGHBOUR, 1000)
    tasks = {f"routine {i}": asyncio.create_task(store.put(make(i), now=1000)) for i in range(640)}
    tasks["id"] = asyncio.create_task(store.next_bundle_id(NEIGHBOUR, 1000 + ID_HORIZON_S // 3))
    order = _completion_order(tasks)
    await asyncio.gather(*tasks.values())
    assert order[0] == "id"
    issued = tasks["id"].result()
    crashed = await Store.open(path)  # kill -9 now: the store was not closed
    await crashed.prepare_ids(NEIGHBOUR, 1000 + ID_HORIZON_S // 3)
    assert await crashed.next_bundle_id(NEIGHBOUR, 1000 + ID_HORIZON_S // 3) > issued
    await crashed.close()
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


async def test_a_batch_is_inserted_in_a_few_statements_and_its_duplicates_found(tmp_path: Path) -> None:
    """A batch's rows go in INSERT statements of 64, 32, ..., 1 rows (60 rows: four), not one
    statement per row; the held duplicates among them are still refused one by one."""
    store = await Store.open(tmp_path / "s.db")
    held = [make(seq) for seq in range(1, 4)]
    await store.put_many(held, now=1000)
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    items = [(make(seq), False, True) for seq in range(4, 61)] + [(bundle, False, True) for bundle in held]
    assert await store.put_each(items, now=1000) == [True] * 57 + [False] * 3
    inserts = [s for s in statements if s.startswith("INSERT INTO seen")]
    assert [s.count("x'") // 2 for s in inserts] == [32, 16, 8, 4]  # two blobs a row: its id, its data
    assert len(await store.load_all()) == 60
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
    assert len(statements) <= 3, statements  # BEGIN, an update (the forwarding table is empty), COMMIT
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


async def test_deletes_skip_the_forwarding_table_only_while_it_is_empty(tmp_path: Path) -> None:
    """A relay that hands every bundle on records no forwarding state, and its deletes run no
    statement on that table; a record written later (or found at open) is still deleted with its
    bundle, and a rolled-back delete's records count as there again."""
    path = tmp_path / "s.db"
    store = await Store.open(path)
    bundles = [make(seq) for seq in range(1, 6)]
    await store.put_many(bundles, now=1000)
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    await store.delete_many([bundles[0].id], "custody accepted")
    assert not [s for s in statements if "forwarding" in s], statements
    await store.mark_forwarded(bundles[1].id, NEIGHBOUR, "ip0", "custody", now=1001)
    await store.mark_forwarded(bundles[2].id, NEIGHBOUR, "ip0", "custody", now=1001)
    await store.delete_many([bundles[1].id], "custody accepted")
    assert await store.forwarding(bundles[1].id) == []
    await store.close()
    store = await Store.open(path)  # the record of bundles[2] is found at open
    await store.delete_many([bundles[2].id], "custody accepted")
    assert await store.forwarding(bundles[2].id) == []
    statements = []
    store._db.set_trace_callback(statements.append)
    await store.delete_many([bundles[3].id], "custody accepted")  # the table is empty again
    assert not [s for s in statements if "forwarding" in s], statements
    await store.mark_forwarded(bundles[4].id, NEIGHBOUR, "ip0", "custody", now=1002)
    store._forwarding_rows = False  # as after a delete that emptied the table and was rolled back
    store._rollback(store._db)
    await store.delete_many([bundles[4].id], "custody accepted")
    assert await store.forwarding(bundles[4].id) == []
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


def _id_mark(path: Path) -> tuple[int, int, int | None, int | None]:
    """ORIGIN's row: (created, seq, horizon, floor)."""
    with sqlite3.connect(path) as raw:
        row = raw.execute(
            "SELECT created, seq, horizon, floor FROM origin_seq WHERE origin = ?", (ORIGIN,)
        ).fetchone()
    return row[0], row[1], row[2], row[3]


async def _locked_id(store: Store, now: int) -> BundleId:
    """An id issued while another connection holds the file's write lock: no commit can land."""
    lock = sqlite3.connect(store.path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        return await asyncio.wait_for(store.next_bundle_id(ORIGIN, now), 0.5)
    finally:
        lock.execute("ROLLBACK")
        lock.close()


async def test_the_first_id_after_a_silence_within_the_horizon_waits_for_no_commit(tmp_path: Path) -> None:
    """The first id opens a window of ID_HORIZON_S seconds with a floor: the first id of a later second
    in it is issued from memory, while the file is locked, after a silence of up to the horizon."""
    path = tmp_path / "s.db"
    store = await Store.open(path)
    first = await store.next_bundle_id(ORIGIN, 500)
    assert first == BundleId(ORIGIN, 500, 0)
    assert _id_mark(path) == (499, MAX_SEQ, 500 + ID_HORIZON_S, ID_BLOCK)
    assert await _locked_id(store, 501) == BundleId(ORIGIN, 501, 0)
    silent = 500 + ID_HORIZON_S - 1  # a silence of nearly the horizon
    assert await _locked_id(store, silent) == BundleId(ORIGIN, silent, 0)
    await store.put(make(1), now=silent)  # the renewal, queued with that id, commits with the put
    assert _id_mark(path) == (silent, ID_BLOCK - 1, silent + ID_HORIZON_S, ID_BLOCK)
    assert await _locked_id(store, silent + ID_HORIZON_S) == BundleId(ORIGIN, silent + ID_HORIZON_S, 0)
    await store.close()


async def test_a_restart_after_kill_9_is_not_dated_ahead_and_reuses_no_id(tmp_path: Path) -> None:
    """A crashed node's ids of a second up to the horizon start at the floor (those before the crash
    are all below it), later ones at 0: none is dated ahead of the clock."""
    path = tmp_path / "s.db"
    store = await Store.open(path)
    taken = {await store.next_bundle_id(ORIGIN, 500) for _ in range(3)}
    taken |= set(await store.next_bundle_ids(ORIGIN, 501, 300))  # past the floor: raised on the path
    floor = 299 + BATCH_BLOCK * 300
    assert _id_mark(path) == (500, MAX_SEQ, 500 + ID_HORIZON_S, floor)
    for now, expected in [
        (501, BundleId(ORIGIN, 501, floor)),  # restarted within the same second
        (560, BundleId(ORIGIN, 560, floor)),
        (500 + ID_HORIZON_S + 1, BundleId(ORIGIN, 500 + ID_HORIZON_S + 1, 0)),  # past the horizon
    ]:
        crashed = await Store.open(path)  # kill -9 now: no close recorded the last id
        after = await crashed.next_bundle_ids(ORIGIN, now, 3)
        assert after[0] == expected and not taken & set(after)
        await crashed.close()
        with sqlite3.connect(path) as raw:  # as if that restart never happened
            raw.execute(
                "UPDATE origin_seq SET created = 500, seq = ?, horizon = ?, floor = ?",
                (MAX_SEQ, 500 + ID_HORIZON_S, floor),
            )
    await store.close()


async def test_after_a_crash_a_renewal_leaves_room_above_the_earlier_runs_floor(tmp_path: Path) -> None:
    """Restarted after kill -9 in the earlier run's window, a second's ids start at that run's floor;
    the renewal keeps ID_BLOCK seqs above it, so the next second's first id after the renewal is still
    issued from memory (with the earlier floor alone it waited for a commit)."""
    path = tmp_path / "s.db"
    store = await Store.open(path)
    await store.next_bundle_id(ORIGIN, 500)
    crashed = await Store.open(path)  # kill -9 of the run before
    assert await crashed.next_bundle_id(ORIGIN, 600) == BundleId(ORIGIN, 600, ID_BLOCK)
    late = 500 + ID_HORIZON_S // 2 + 1  # past half of the window: its id queues the renewal
    assert await _locked_id(crashed, late) == BundleId(ORIGIN, late, ID_BLOCK)
    await crashed.put(make(1), now=late)  # the renewal commits with the put
    assert _id_mark(path)[2] == late + ID_HORIZON_S  # renewed
    assert await _locked_id(crashed, late + 1) == BundleId(ORIGIN, late + 1, ID_BLOCK)
    await crashed.close()
    await store.close()


async def test_a_clock_set_back_across_a_crash_reuses_no_id(tmp_path: Path) -> None:
    """Set back before or after a crash, ids continue above the mark (dated ahead, as the clock
    forces) and a second of the old window starts at its floor; a clean close keeps that window."""
    path = tmp_path / "s.db"
    store = await Store.open(path)
    taken = [await store.next_bundle_id(ORIGIN, 500) for _ in range(3)]
    taken.append(await store.next_bundle_id(ORIGIN, 400))  # set back in the run
    assert taken[-1] == BundleId(ORIGIN, 500, 3)
    for now in (400, 499, 500, 400):
        crashed = await Store.open(path)  # kill -9 of the run before
        after = [await crashed.next_bundle_id(ORIGIN, now) for _ in range(2)]
        assert after[0].created == 500 and after[0].seq >= ID_BLOCK
        taken += after
        await crashed.close()
        reopened = await Store.open(path)
        taken.append(await reopened.next_bundle_id(ORIGIN, now))  # right after the last
        assert taken[-1] == BundleId(ORIGIN, 500, after[-1].seq + 1)
    assert len(taken) == len(set(taken))
    await store.close()


async def test_a_cover_queued_after_a_renewal_keeps_the_renewal(tmp_path: Path) -> None:
    """A renewal is queued with an id, then a batch passes its floor: both commit together, and the
    file keeps the renewed horizon with the raised floor."""
    path = tmp_path / "s.db"
    store = await Store.open(path)
    await store.next_bundle_id(ORIGIN, 500)
    late = 500 + ID_HORIZON_S // 2 + 1
    issued = [await store.next_bundle_id(ORIGIN, late)]  # queues the renewal, not committed
    issued += await store.next_bundle_ids(ORIGIN, late, 300)  # past the floor: commits both
    assert _id_mark(path) == (late, ID_BLOCK - 1, late + ID_HORIZON_S, 300 + BATCH_BLOCK * 300)
    crashed = await Store.open(path)  # kill -9 now
    assert await crashed.next_bundle_id(ORIGIN, late) > max(issued)
    await crashed.close()
    await store.close()


async def test_a_store_of_schema_2_opens_and_its_id_mark_holds(tmp_path: Path) -> None:
    """A file written by the code before the id window (schema 2, its mark a reserved block) opens,
    migrates, and continues above the mark; the next crash uses the window."""
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as raw:
        for statements in MIGRATIONS[:2]:
            for statement in statements:
                raw.execute(statement)
        raw.execute("PRAGMA user_version = 2")
        raw.execute("INSERT INTO origin_seq (origin, created, seq) VALUES (?, 501, 255)", (ORIGIN,))
    store = await Store.open(path)
    assert await store.next_bundle_id(ORIGIN, 501) == BundleId(ORIGIN, 501, 256)
    assert await store.next_bundle_id(ORIGIN, 502) == BundleId(ORIGIN, 502, 0)
    assert _id_mark(path) == (501, 255, 501 + ID_HORIZON_S, 256 + ID_BLOCK)  # the old mark kept
    await store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    assert _id_mark(path) == (502, 0, None, None)


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
    await store.ack_deliveries([make(4).key, make(9).key])  # an id never queued is no error
    assert await store.pending_deliveries() == []
    assert await store.put(make(5, Priority.BULK), now=1000) is True  # refused, so not seen
    await store.close()


async def test_random_ids_across_kills_clock_changes_and_closes_are_never_reused(tmp_path: Path) -> None:
    """Batches of 1-500 ids, silences around the horizon, the clock set back, clean restarts, and
    kill -9 (the next run opens a copy of what the file had committed): no id twice, none dated
    ahead of the latest clock reading."""
    rng = random.Random(112)
    store = await Store.open(tmp_path / "s.db")
    issued: set[BundleId] = set()
    now = latest = 1000
    kills = 0
    for step in range(600):
        roll = rng.random()
        if roll < 0.1:
            now += rng.choice([1, 2, ID_HORIZON_S // 2 - 1, ID_HORIZON_S // 2 + 1, ID_HORIZON_S + 1])
        elif roll < 0.13:
            now -= rng.randint(1, ID_HORIZON_S + 100)
        elif roll < 0.2:
            copy = tmp_path / f"kill{step}.db"
            source, target = sqlite3.connect(store.path), sqlite3.connect(copy)
            source.backup(target)  # committed transactions only, as kill -9 leaves them
            source.close()
            target.close()
            await store.close()  # the killed run's file is not opened again
            store = await Store.open(copy)
            kills += 1
        elif roll < 0.23:
            await store.close()
            store = await Store.open(store.path)
        elif roll < 0.4:
            await store.put_many([], now=now)  # commits what is queued (a renewal)
        else:
            count = rng.choice([1, 1, 1, rng.randint(2, 500)])
            ids = await store.next_bundle_ids(ORIGIN, now, count)
            latest = max(latest, now)
            assert len(set(ids)) == count and not issued & set(ids), f"step {step}: an id issued twice"
            assert ids[-1].created <= latest, f"step {step}: {ids[-1]} dated ahead of {latest}"
            issued |= set(ids)
    await store.close()
    assert kills > 30 and len(issued) > 10_000


async def test_an_id_caller_cancelled_during_its_commit_leaves_the_mark_right(tmp_path: Path) -> None:
    """The commit a caller waits on for its ids still lands when the caller is cancelled, and the
    next caller gets the ids the cancelled one never had, under the mark that commit wrote."""
    path = tmp_path / "s.db"
    store = await Store.open(path)
    await store.next_bundle_id(ORIGIN, 500)
    later = 500 + ID_HORIZON_S + 1  # past the window: a new one commits on the path
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    waiting = asyncio.create_task(store.next_bundle_ids(ORIGIN, later, 3))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    lock.execute("ROLLBACK")
    lock.close()
    issued = await store.next_bundle_ids(ORIGIN, later, 3)
    assert issued[0] == BundleId(ORIGIN, later, 0)
    assert _id_mark(path) == (later - 1, MAX_SEQ, later + ID_HORIZON_S, 2 + ID_BLOCK)
    crashed = await Store.open(path)  # kill -9 now
    assert await crashed.next_bundle_id(ORIGIN, later) == BundleId(ORIGIN, later, 2 + ID_BLOCK)
    await crashed.close()
    await store.close()
