"""Store schema 4: ids of bundles not held here are written unsettled, outside the id index, found
in memory, and settled into the index a second at a time (relay/store_accept.py, RecentIds). An id
is refused the same in either part, across a crash between the two, and expiry, eviction and a
rolled-back put see both (docs/store.md, "Schema")."""

from __future__ import annotations

import dataclasses
import random
import sqlite3
from pathlib import Path

import pytest

import relay.store_accept
from relay.bundle import Bundle, Destination, Priority, encode_full
from relay.store import Store, StoreFullError
from relay.store_accept import AWAITING_APP
from relay.store_schema import MIGRATIONS, SCHEMA_VERSION

ORIGIN = bytes(range(16))
SETTLE = 8  # rows of earlier seconds that settle, in these tests


@pytest.fixture(autouse=True)
def _small_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay.store_accept, "SETTLE_ROWS", SETTLE)
    monkeypatch.setattr(relay.store_accept, "SETTLE_ALL", 4 * SETTLE)


def make(
    seq: int,
    created: int = 1000,
    *,
    lifetime: int = 3600,
    priority: Priority = Priority.ROUTINE,
    size: int = 60,
) -> Bundle:
    return Bundle(
        ORIGIN,
        Destination.to_node(bytes(16)),
        created,
        seq,
        lifetime,
        priority,
        40,
        bytes([seq % 256]) * size,
    )


def second(created: int, count: int, rnd: random.Random) -> list[Bundle]:
    """``count`` ids of one second in a random order, as a sender's permuted seqs come."""
    return [make(seq, created) for seq in rnd.sample(range(65536), count)]


def settled(path: Path) -> dict[bytes, int]:
    with sqlite3.connect(path) as raw:
        return {bytes(key): flag for key, flag in raw.execute("SELECT id, settled FROM seen")}


async def test_an_id_is_refused_the_same_unsettled_settled_and_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    rnd = random.Random(4)
    early, late = second(1000, 12, rnd), second(1001, 3, rnd)
    store = await Store.open(path)
    assert await store.put_each([(b, True, False) for b in early], now=1000) == [True] * 12
    assert set(settled(path).values()) == {0}, "not held: written outside the id index"
    assert await store.put_each([(b, True, False) for b in late], now=1001) == [True] * 3
    flags = settled(path)
    assert {flags[b.id.key()] for b in early} == {1}, "a later second came: the earlier settled"
    assert {flags[b.id.key()] for b in late} == {0}
    between = make(max(b.id.seq for b in early) - 1, 1000)  # a late arrival below the index's top
    assert between.id.key() not in flags
    assert await store.put_each([(between, True, False)], now=1001) == [True]
    for hold in (False, True):  # refused whether it comes to be held or not
        items = [(b, True, hold) for b in [*early, *late, between]]
        assert await store.put_each(items, now=1001) == [False] * 16
        assert await store.put_many([early[0], late[0], between], now=1001, hold=hold) == [False] * 3
    mixed = [(early[0], True, False), (make(1, 1001), False, True)]  # a duplicate beside a new held one
    assert await store.put_each(mixed, now=1001) == [False, True]
    crashed = await Store.open(path)  # kill -9 now: nothing more written by the first
    try:
        assert (
            await crashed.put_each([(b, True, False) for b in [*early, *late, between]], now=1001)
            == [False] * 16
        )
        assert await crashed.put(late[1], now=1001) is False
        assert (await crashed.stats()).seen == 17
    finally:
        await crashed.close()
        await store.close()


async def test_a_batch_of_several_origins_is_looked_up_per_origin(tmp_path: Path) -> None:
    """Each origin's ids are compared with that origin's highest settled key: one origin's settled
    second does not hide another's duplicates, nor make its new ids look settled."""
    other = bytes(range(100, 116))

    def of(origin: bytes, bundle: Bundle) -> Bundle:
        return dataclasses.replace(bundle, origin=origin)

    rnd = random.Random(8)
    a_early = second(7000, 10, rnd)
    b_early = [of(other, b) for b in second(6990, 3, rnd)]  # an origin whose clock is behind
    store = await Store.open(tmp_path / "s.db")
    assert await store.put_each([(b, True, False) for b in [*a_early, *b_early]], now=7000) == [True] * 13
    a_next = make(5, 7001)
    assert await store.put_each([(a_next, True, False)], now=7001) == [True]  # settles a_early and b_early
    a_late = make(max(b.id.seq for b in a_early) - 1, 7000)  # below a's top, new
    b_new = of(other, make(3, 7001))  # above b's top, new
    mixed = [a_late, b_new, a_early[0], b_early[0], a_next]
    assert await store.put_each([(b, True, False) for b in mixed], now=7001) == [
        True,
        True,
        False,
        False,
        False,
    ]
    assert await store.put_each([(b, True, False) for b in mixed], now=7001) == [False] * 5
    await store.close()


async def test_a_lone_put_committed_on_the_event_loop_leaves_the_settle_to_the_next_batch(
    tmp_path: Path,
) -> None:
    """A put of one bundle while the store's thread is idle commits on the loop; a settle of
    thousands of rows there would hold the loop, so the next transaction on the thread does it."""
    path = tmp_path / "s.db"
    rnd = random.Random(9)
    early = second(8000, 10, rnd)
    store = await Store.open(path)
    await store.put_each([(b, True, False) for b in early], now=8000)
    turn = make(1, 8001)
    assert await store.put(turn, now=8001, deliver=True, hold=False) is True  # alone: on the loop
    assert {settled(path)[b.id.key()] for b in early} == {0}
    assert await store.put_each([(make(2, 8001), True, False), (make(3, 8001), True, False)], now=8001) == [
        True,
        True,
    ]
    flags = settled(path)
    assert {flags[b.id.key()] for b in early} == {1} and flags[turn.id.key()] == 0
    assert await store.put_each([(b, True, False) for b in [*early, turn]], now=8001) == [False] * 11
    await store.close()


async def test_lone_puts_alone_still_settle_every_row_at_the_cap(tmp_path: Path) -> None:
    """A node whose every write is a lone put (a quiet link, the application away: no ack, no
    batch) settles nothing on the loop; at SETTLE_ALL waiting rows the next put goes to the thread,
    which settles them all, so the memory of unsettled ids stays bounded."""
    path = tmp_path / "s.db"
    store = await Store.open(path)
    ids = []
    for seq in range(4 * SETTLE + 1):  # one second that does not end: no turn, only the cap
        bundle = make(seq, 9000)
        assert await store.put(bundle, now=9000, deliver=True, hold=False) is True
        ids.append(bundle.id.key())
    after = make(4 * SETTLE + 1, 9000)
    assert await store.put(after, now=9000, deliver=True, hold=False) is True  # on the loop again
    flags = settled(path)
    assert [flags[key] for key in ids] == [1] * len(ids), "the put at the cap settled every row"
    assert flags[after.id.key()] == 0
    again = [(make(seq, 9000), True, False) for seq in (0, 4 * SETTLE, 4 * SETTLE + 1)]
    assert await store.put_each(again, now=9000) == [False] * 3
    await store.close()


async def test_a_settle_is_all_or_nothing_at_a_crash(tmp_path: Path) -> None:
    """The settling transaction commits with the batch that starts a new second; the committed file
    before it (kill -9 then) and the file after it refuse every id."""
    path, copy = tmp_path / "s.db", tmp_path / "before.db"
    rnd = random.Random(5)
    early = second(2000, 10, rnd)
    store = await Store.open(path)
    await store.put_each([(b, True, False) for b in early], now=2000)
    with sqlite3.connect(path) as raw, sqlite3.connect(copy) as into:
        raw.backup(into)  # what a kill -9 before the settle leaves
    before = await Store.open(copy)
    turn = make(7, 2001)
    await store.put_each([(turn, True, False)], now=2001, overlap=True)  # on the thread: it settles
    assert {settled(path)[b.id.key()] for b in early} == {1}
    after = await Store.open(path)  # and one after it
    try:
        assert await before.put_each([(b, True, False) for b in early], now=2001) == [False] * 10
        assert await after.put_each([(b, True, False) for b in [*early, turn]], now=2001) == [False] * 11
    finally:
        for s in (before, after, store):
            await s.close()


async def test_expiry_forgets_ids_in_both_parts_and_an_ack_reaches_only_its_own_row(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    rnd = random.Random(6)
    short = [make(b.id.seq, 3000, lifetime=60) for b in second(3000, 10, rnd)]
    keep = make(70000 % 65536, 3000)  # outlives them, one rowid below the last
    last = make(9, 3001, lifetime=60)  # unsettled, the highest rowid: SQLite gives it to the next row
    store = await Store.open(path)
    for batch, now in ((short, 3000), ([keep], 3000), ([last], 3001)):  # each on the thread: it settles
        items = [(b, True, False) for b in batch]
        await store.put_each(items, now=now, app_has={b.id for b in batch}, overlap=True)
    flags = settled(path)
    assert {flags[b.id.key()] for b in [*short, keep]} == {1} and flags[last.id.key()] == 0
    assert await store.expire(3100) == []  # none was held
    assert (await store.stats()).seen == 1
    assert not store._recent.rows, "the unsettled part forgets its expired ids too"
    newer = make(11, 3100)
    assert await store.put_each([(newer, True, False)], now=3100, app_has={newer.id}) == [True]

    def delivered() -> dict[bytes, int]:
        with sqlite3.connect(path) as raw:
            return {bytes(key): flag for key, flag in raw.execute("SELECT id, delivered FROM seen")}

    await store.ack_deliveries([last.key])  # the expired id's rowid is the newer row's now
    assert delivered() == {keep.id.key(): AWAITING_APP, newer.id.key(): AWAITING_APP}
    await store.ack_deliveries([newer.key, keep.key])
    assert delivered() == {keep.id.key(): 1, newer.id.key(): 1}
    await store.close()


async def test_a_full_store_refuses_a_duplicate_of_either_part_as_a_duplicate(tmp_path: Path) -> None:
    """Over the quota the duplicates are looked for before eviction: in memory and on the index;
    an eviction for a FLASH bundle leaves the ids of bundles not held seen."""
    rnd = random.Random(7)
    early, late = second(4000, 10, rnd), second(4001, 2, rnd)
    size = len(encode_full(early[0]))  # each delivered copy takes an inbox copy's bytes
    store = await Store.open(tmp_path / "s.db", quota_bytes=14 * size)
    await store.put_each([(b, True, False) for b in [*early, *late]], now=4001)
    bulk = make(20, 4001, priority=Priority.BULK)
    assert await store.put(bulk, now=4001) is True  # held: 13 of the 14 copies' room
    assert await store.put_each([(early[0], True, False), (late[0], True, False)], now=4001) == [False, False]
    flash = make(21, 4001, priority=Priority.FLASH, size=120)
    assert await store.put(flash, now=4001) is True
    assert store.drain_evicted()[0].bundle_id == bulk.id
    assert await store.put_each([(b, True, False) for b in [*early, *late]], now=4001) == [False] * 12
    await store.close()


async def test_a_refused_put_leaves_its_ids_unseen(tmp_path: Path) -> None:
    """A put that needs eviction and is refused rolls back to its savepoint: ids it wrote unsettled
    are forgotten in memory too, so they are taken when they come again."""
    flash = [make(n, 5000, priority=Priority.FLASH) for n in range(3)]
    size = len(encode_full(flash[0]))
    store = await Store.open(tmp_path / "s.db", quota_bytes=2 * size)
    with pytest.raises(StoreFullError):
        await store.put_many(flash, now=5000, deliver=True, hold=False)  # three inbox copies
    assert await store.put_many(flash[:2], now=5000, deliver=True, hold=False) == [True, True]
    await store.close()


async def test_a_schema_3_file_is_migrated_with_every_id_settled_in_arrival_order(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    held = [make(9, 6000), make(1, 6000), make(5, 5990, priority=Priority.FLASH)]  # arrival != id order
    seen_only = make(3, 6000)
    with sqlite3.connect(path) as raw:
        for statements in MIGRATIONS[:3]:
            for statement in statements:
                raw.execute(statement)
        raw.execute("PRAGMA user_version = 3")
        for bundle in held:
            data = encode_full(bundle)
            raw.execute(
                "INSERT INTO seen (id, expires, delivered, priority, created, received_at, local, size, "
                "data) VALUES (?, ?, 0, ?, ?, 6000.5, 0, ?, ?)",
                (bundle.id.key(), bundle.expires, int(bundle.priority), bundle.created, len(data), data),
            )
        raw.execute(
            "INSERT INTO seen (id, expires, delivered) VALUES (?, ?, 1)",
            (seen_only.id.key(), seen_only.expires),
        )
        rowids = raw.execute("SELECT id, rowid FROM seen ORDER BY rowid").fetchall()
    store = await Store.open(path)
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        assert raw.execute("SELECT id, rowid FROM seen ORDER BY rowid").fetchall() == rowids
        assert {flag for (flag,) in raw.execute("SELECT settled FROM seen")} == {1}
        assert raw.execute("SELECT count(*) FROM bundles").fetchone()[0] == 3
    assert [s.bundle for s in await store.load_all()] == [held[2], held[0], held[1]]
    for bundle in [*held, seen_only]:
        assert await store.put_each([(bundle, True, False)], now=6001) == [False]
        assert await store.put(bundle, now=6001) is False
    assert await store.put_each([(make(4, 6000), True, False)], now=6001) == [True]
    await store.close()
