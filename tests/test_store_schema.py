"""Store schema version 2 (one row per accepted id) on real SQLite files: a version-1 file is
migrated with everything it held, saw and queued; the insert itself finds duplicates."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from relay.bundle import Bundle, Destination, Priority, encode_full
from relay.store import Store
from relay.store_reader import StoreReader
from relay.store_schema import MIGRATIONS, SCHEMA_VERSION

ORIGIN = bytes(range(16))
OTHER = bytes(range(16, 32))


def make(
    seq: int, priority: Priority = Priority.ROUTINE, *, origin: bytes = ORIGIN, created: int = 1000
) -> Bundle:
    return Bundle(origin, Destination.everyone(), created, seq, 3600, priority, 40, bytes([seq % 256]) * 50)


def _version_1_file(path: Path) -> dict[str, Bundle]:
    """A store file as version 1 wrote it: held bundles (arrival order differing from id order),
    an id seen and delivered but no longer held, and an inbox entry."""
    bundles = {
        "late_id_first": make(9, Priority.BULK, origin=OTHER),
        "early_id_second": make(1, Priority.BULK),
        "flash": make(2, Priority.FLASH, created=990),
        "delivered_held": make(3, Priority.IMMEDIATE),
        "gone": make(4, Priority.PRIORITY),
        "inbox": make(5, Priority.PRIORITY),
    }
    db = sqlite3.connect(path, isolation_level=None)
    for statement in MIGRATIONS[0]:
        db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    for name, bundle in bundles.items():
        data = encode_full(bundle)
        delivered = int(name in ("delivered_held", "gone", "inbox"))
        db.execute("INSERT INTO seen VALUES (?, ?, ?)", (bundle.id.key(), bundle.expires, delivered))
        if name not in ("gone", "inbox"):
            db.execute(
                "INSERT INTO bundles (id, priority, created, expires, received_at, local, size, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    bundle.id.key(),
                    int(bundle.priority),
                    bundle.created,
                    bundle.expires,
                    1000.5,
                    0,
                    len(data),
                    data,
                ),
            )
    inbox = bundles["inbox"]
    data = encode_full(inbox)
    db.execute(
        "INSERT INTO inbox (id, priority, size, data) VALUES (?, ?, ?, ?)",
        (inbox.id.key(), int(inbox.priority), len(data), data),
    )
    db.close()
    return bundles


async def test_a_version_1_file_is_migrated_with_what_it_held_saw_and_queued(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    bundles = _version_1_file(path)
    held = ["flash", "delivered_held", "late_id_first", "early_id_second"]  # class, created, arrival
    store = await Store.open(path)
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    assert raw.execute("SELECT count(*) FROM bundles").fetchone()[0] == 4  # the view of held rows
    raw.close()
    assert [s.bundle for s in await store.load_all()] == [bundles[name] for name in held]
    assert [s.bundle for s in StoreReader(path).held()] == [bundles[name] for name in held]
    assert [s.received_at for s in await store.load_all()] == [1000.5] * 4
    for bundle in bundles.values():  # held or only seen: every id is still a duplicate
        assert await store.put(bundle, now=1001) is False
    stats = await store.stats()
    assert stats.seen == 6 and stats.inbox == 1
    assert stats.bytes_used == sum(len(encode_full(bundles[name])) for name in [*held, "inbox"])
    await store.enqueue_delivery(bundles["delivered_held"].id)  # delivered before: not queued again
    await store.enqueue_delivery(bundles["flash"].id)
    assert await store.pending_deliveries() == [bundles["flash"], bundles["inbox"]]
    assert await store.get(bundles["gone"].id) is None
    assert await store.put(make(6), now=1001) is True
    await store.close()


async def test_the_insert_finds_duplicates_among_new_ids_in_one_batch(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "s.db")
    held, deleted, only_delivered = make(1), make(2), make(3)
    await store.put_many([held, deleted], now=1000)
    await store.delete(deleted.id, "forwarded with custody")
    await store.put(only_delivered, now=1000, deliver=True, hold=False)
    await store.ack_delivery(only_delivered.id)
    fresh = [make(10), make(11)]
    batch = [fresh[0], held, deleted, only_delivered, fresh[1], fresh[0]]
    assert await store.put_many(batch, now=1000, deliver=True) == [True, False, False, False, True, False]
    assert await store.pending_deliveries() == fresh  # only the new ones reached the inbox
    stats = await store.stats()
    assert stats.held_by_priority[Priority.ROUTINE] == 3 and stats.seen == 5
    assert stats.bytes_used == len(encode_full(held)) + 2 * sum(len(encode_full(b)) for b in fresh)
    many = [make(100 + n) for n in range(250)]  # past one 100-row statement, seen ids spread through it
    seen_at = {0, 99, 100, 150, 249}
    await store.put_many([many[n] for n in seen_at], now=1000)
    assert await store.put_many(many, now=1000) == [n not in seen_at for n in range(250)]
    stats = await store.stats()
    await store.close()
    store = await Store.open(tmp_path / "s.db")  # bytes used counted from the file agree
    assert (await store.stats()).bytes_used == stats.bytes_used
    assert len(await store.load_all()) == 3 + 250
    await store.close()
