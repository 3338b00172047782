"""One way to open every SQLite file Mesh112 keeps, with the same durability settings.

The store, the command post's journal, the NG112 gateway's alarm store and the alarm book all open
their file here, so none of them can drift to weaker settings (the journal once ran with
``synchronous=NORMAL`` while the store it acknowledges ran with ``FULL``; a power cut could then
lose a delivered message from both):

- ``journal_mode=WAL``: readers never block the writer; refused on filesystems without shared
  memory (some network mounts), which is an error an operator must fix, not a silent fallback;
- ``synchronous=FULL``: every COMMIT fsyncs the write-ahead log, so a committed transaction
  survives a power cut or kernel crash, not only a killed process;
- ``busy_timeout``: a second connection (an operator's ``sqlite3`` shell, a backup) makes a writer
  wait instead of failing at once;
- ``foreign_keys=ON``: declared references are enforced (SQLite leaves them off by default);
- ``secure_delete=FAST``: a deleted row's bytes are zeroed in the pages a write touches anyway, but a
  page the delete frees is not rewritten. Debian's SQLite rewrites it (``ON``), upstream's leaves the
  bytes (``OFF``); ``ON`` made each 10 kB bundle leaving the store's inbox three more log frames to
  write, sync and checkpoint (issue 15, docs/store.md).

Each setting is read back after it is set, so a file that does not honour one is refused here.

Importing this module also registers identity adapters for ``bytes`` and ``None`` with :mod:`sqlite3`
(process-wide, as its registry is): Python 3.11's module adapts every parameter that is not exactly
an int, float, str or bytearray before binding it, and for a blob or a NULL with no adapter
registered it asks the protocol type for ``__adapt__``, an attribute lookup that fails with an
AttributeError formatted and thrown away, per parameter (1,500-2,200 instructions; the store binds
ids and NULLs for every bundle it takes, acks and deletes). A registered adapter answers from the
registry; these return the value itself, so what is bound does not change.

A caller may ask for a larger ``page_size`` (the journal does: docs/store.md). It applies to a new
file only, in the same first write that creates it, so a crash cannot leave a file half converted;
an existing file keeps its page size. The WAL is checkpointed every :data:`CHECKPOINT_BYTES` whatever
the file's page size (SQLite counts ``wal_autocheckpoint`` in pages), so larger pages do not grow
the log on disk.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Literal

import aiosqlite

from relay.errors import Mesh112Error

__all__ = ["BUSY_TIMEOUT_MS", "CHECKPOINT_BYTES", "SQLiteSetupError", "connect", "connect_sync"]

BUSY_TIMEOUT_MS = 5000
CHECKPOINT_BYTES = 1000 * 4096  # SQLite's default: 1000 pages of its default 4 KiB
SYNCHRONOUS_FULL = 2  # what PRAGMA synchronous reads back for FULL


def _null(value: None) -> None:
    return value


sqlite3.register_adapter(bytes, bytes)  # bytes(b) is b itself: the registry's answer, not a lookup
sqlite3.register_adapter(type(None), _null)

# Set in this order: the journal mode first (it may create the -wal file), then per-connection settings.
_PRAGMAS = (
    ("journal_mode", "WAL", "wal"),
    ("synchronous", "FULL", SYNCHRONOUS_FULL),
    ("busy_timeout", str(BUSY_TIMEOUT_MS), BUSY_TIMEOUT_MS),
    ("foreign_keys", "ON", 1),
    ("secure_delete", "FAST", 2),
)


class SQLiteSetupError(Mesh112Error):
    """A SQLite file does not accept Mesh112's durability settings (e.g. WAL on a network mount)."""


async def connect(path: Path, *, autocommit: bool = False) -> aiosqlite.Connection:
    """Open ``path`` with aiosqlite and the durability settings. ``autocommit``: no implicit
    transactions (the caller issues BEGIN/COMMIT itself, as the store's group commit does)."""
    db = await aiosqlite.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=_isolation(autocommit))
    try:
        for name, value, expected in _PRAGMAS:
            rows = list(await db.execute_fetchall(f"PRAGMA {name} = {value}"))
            if name != "journal_mode":  # only journal_mode answers the assignment
                rows = list(await db.execute_fetchall(f"PRAGMA {name}"))
            _check(path, name, rows[0][0] if rows else None, expected)
    except BaseException:
        await db.close()
        raise
    return db


def connect_sync(
    path: Path, *, autocommit: bool = False, check_same_thread: bool = True, page_size: int | None = None
) -> sqlite3.Connection:
    """:func:`connect` for code that runs outside the event loop (plain :mod:`sqlite3`);
    ``check_same_thread=False`` for a caller that hands the connection between threads itself,
    never using it from two at once (the store); ``page_size`` for a new file (see above)."""
    db = sqlite3.connect(
        path,
        timeout=BUSY_TIMEOUT_MS / 1000,
        isolation_level=_isolation(autocommit),
        check_same_thread=check_same_thread,
    )
    try:
        if page_size is not None:  # before the journal mode, whose switch writes a new file's header
            db.execute(f"PRAGMA page_size = {int(page_size)}")
        for name, value, expected in _PRAGMAS:
            row = db.execute(f"PRAGMA {name} = {value}").fetchone()
            if name != "journal_mode":
                row = db.execute(f"PRAGMA {name}").fetchone()
            _check(path, name, row[0] if row else None, expected)
        (size,) = db.execute("PRAGMA page_size").fetchone()  # the file's own, if it existed
        db.execute(f"PRAGMA wal_autocheckpoint = {max(1, CHECKPOINT_BYTES // size)}")
    except BaseException:
        db.close()
        raise
    return db


def _isolation(autocommit: bool) -> Literal["DEFERRED"] | None:
    return None if autocommit else "DEFERRED"


def _check(path: Path, name: str, got: object, expected: object) -> None:
    if got != expected:
        raise SQLiteSetupError(
            f"{path}: SQLite would not set {name} to {expected!r} (got {got!r}); keep the data directory "
            "on a local filesystem"
        )
