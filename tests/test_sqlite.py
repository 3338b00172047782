"""Every SQLite file Mesh112 keeps is opened by relay.sqlite, with the same durability settings.

``synchronous`` is a per-connection setting that no other connection can see, so it is read on the
live connection of each opener: the store, the journal, the NG112 gateway store and the alarm book.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from engine_net import Deployment

from ng112.command_post import command_post_app
from ng112.store import AlarmStore
from relay import sqlite
from relay.bundle import to_epoch
from relay.journal import Journal
from relay.node import Node
from relay.store import Store

EXPECTED = {
    "journal_mode": "wal",
    "synchronous": 2,  # FULL
    "busy_timeout": sqlite.BUSY_TIMEOUT_MS,
    "foreign_keys": 1,
    "secure_delete": 2,  # FAST
}
PAGES = ("page_size", "wal_autocheckpoint")


async def _settings(db: aiosqlite.Connection) -> dict[str, Any]:
    settings = {}
    for name in EXPECTED:
        [row] = await db.execute_fetchall(f"PRAGMA {name}")
        settings[name] = row[0]
    return settings


async def test_every_async_opener_uses_the_durability_settings(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "store.sqlite3")
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    gateway = await AlarmStore.open(tmp_path / "ng112-gateway.sqlite")
    try:
        assert await _settings(gateway._db) == EXPECTED, "AlarmStore"
        # the store's and the journal's connections are plain sqlite3, each used only on its own thread
        for name, opened in (("Store", store), ("Journal", journal)):
            pragmas = await opened._call(
                lambda db: {n: db.execute(f"PRAGMA {n}").fetchone()[0] for n in EXPECTED}
            )
            assert pragmas == EXPECTED, name
    finally:
        await gateway.close()
        await journal.close()
        await store.close()


async def test_the_alarm_book_uses_the_durability_settings(tmp_path: Path) -> None:
    net = Deployment()
    net.enrol("post", frozenset({"dispatcher"}))
    node = Node(await net.open("post", tmp_path, to_epoch(time.time())), [])
    try:
        book = command_post_app(node)
        settings = {name: book._db.execute(f"PRAGMA {name}").fetchone()[0] for name in EXPECTED}
        assert settings == EXPECTED
    finally:
        await node.stop()


async def test_autocommit_leaves_transactions_to_the_caller(tmp_path: Path) -> None:
    db = await sqlite.connect(tmp_path / "a.sqlite3", autocommit=True)
    try:
        await db.execute("CREATE TABLE t (x)")
        await db.execute("INSERT INTO t VALUES (1)")
        assert not db.in_transaction  # committed at once, as the store's writer expects
    finally:
        await db.close()
    sync = sqlite.connect_sync(tmp_path / "b.sqlite3")
    try:
        sync.execute("CREATE TABLE t (x)")
        sync.execute("INSERT INTO t VALUES (1)")
        assert sync.in_transaction  # implicit transaction until commit()
        sync.commit()
    finally:
        sync.close()


async def test_foreign_keys_are_enforced(tmp_path: Path) -> None:
    db = sqlite.connect_sync(tmp_path / "fk.sqlite3", autocommit=True)
    try:
        db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        db.execute("CREATE TABLE child (parent INTEGER REFERENCES parent(id))")
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("INSERT INTO child VALUES (7)")
    finally:
        db.close()


async def test_a_file_that_refuses_wal_is_refused_with_a_reason() -> None:
    # An in-memory database cannot use WAL, as a file on some network mounts cannot.
    with pytest.raises(sqlite.SQLiteSetupError, match=r"journal_mode.*local filesystem"):
        await sqlite.connect(Path(":memory:"))
    with pytest.raises(sqlite.SQLiteSetupError, match="journal_mode"):
        sqlite.connect_sync(Path(":memory:"))


async def test_a_new_journal_takes_large_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    """The journal's page size applies to a new file only; a journal written with SQLite's default
    4 KiB pages opens with its pages and rows as they were. Either way the log is checkpointed
    after the same number of bytes."""
    new = await Journal.open(tmp_path / "new.sqlite3")
    try:
        pages = await new._call(lambda db: [db.execute(f"PRAGMA {n}").fetchone()[0] for n in PAGES])
        assert pages == [65536, sqlite.CHECKPOINT_BYTES // 65536]
    finally:
        await new.close()
    old = sqlite.connect_sync(tmp_path / "old.sqlite3")  # as Journal.open made it before
    old.execute(
        "CREATE TABLE messages (bundle_id TEXT PRIMARY KEY, origin TEXT NOT NULL, "
        "destination TEXT NOT NULL, kind INTEGER NOT NULL, priority TEXT NOT NULL, "
        "created REAL NOT NULL, received REAL NOT NULL, text TEXT NOT NULL)"
    )
    old.execute(
        "INSERT INTO messages VALUES ('b1', 'aa', 'node:bb', 3, 'ROUTINE', 1.0, 2.0, ?)", ("x" * 10_000,)
    )
    old.commit()
    old.close()
    journal = await Journal.open(tmp_path / "old.sqlite3")
    try:
        pages = await journal._call(lambda db: [db.execute(f"PRAGMA {n}").fetchone()[0] for n in PAGES])
        assert pages == [4096, sqlite.CHECKPOINT_BYTES // 4096]
        [message] = await journal.messages()
        assert (message.bundle_id, message.text) == ("b1", "x" * 10_000)
    finally:
        await journal.close()


def test_blobs_and_nulls_are_bound_through_registered_adapters_unchanged() -> None:
    """Python 3.11's sqlite3 adapts every bytes and None parameter: with no adapter registered for
    them, each bind made and threw away an AttributeError (the store binds several per bundle).
    Importing relay.sqlite registers adapters that return the value itself."""
    assert (bytes, sqlite3.PrepareProtocol) in sqlite3.adapters
    assert (type(None), sqlite3.PrepareProtocol) in sqlite3.adapters
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (a, b)")
    db.execute("INSERT INTO t VALUES (?, ?)", (b"\x00id", None))
    assert db.execute("SELECT a, typeof(a), b, typeof(b) FROM t").fetchall() == [
        (b"\x00id", "blob", None, "null")
    ]
    db.close()
