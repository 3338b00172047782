"""Held bundles read back from the store on the event loop, beside the store's writer thread.

The relay core keeps most held bundles only as small records (relay/core/held.py) and reads them back
when a link is ready to send one, with the next few queued behind it: one SELECT by primary keys on a
second connection to the store's file, used only on the event loop's thread. In WAL
mode it reads while the writer commits and sees every committed transaction, and the core holds a
bundle only after its commit, so crash safety is the store's alone; ``query_only`` makes sure this
connection never writes; held rows are settled (schema 4), so the read by ids is on the id index.
Start-up reads every held bundle through it in chunks, so restoring 100,000 never has all of them
decoded at once; it sorts their keys alone and then reads the rows by rowid, because a sort of whole
rows wrote every held payload to a SQLite temporary file and read it back (the ``held_eviction``
index runs the other way).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from relay import sqlite
from relay.bundle import BundleDecodeError, BundleId, decode_full
from relay.store import IN_CHUNK, StoredBundle
from relay.store_schema import StoreError

CHUNK = IN_CHUNK  # rows read and decoded at a time at start-up, one "rowid IN (...)" each
# the store's load_all order (HELD_IN_ORDER): highest class first, then oldest, then arrival
HELD_ORDER = "SELECT rowid FROM seen WHERE data IS NOT NULL ORDER BY priority, created, rowid"
CACHE_KIB = 256  # SQLite's page cache for this connection (its default is 2 MiB)


class StoreReader:
    """Reads of held bundles; the connection opens at the first read, so a node whose bundles all
    stay in memory never opens it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def get_many(self, bundle_ids: Sequence[BundleId]) -> dict[BundleId, bytes]:
        """The full encodings of those of ``bundle_ids`` still held (not delivered, expired or
        evicted since), by id: one SELECT for a link's next few queued bundles (the core reads
        ahead, relay/core/held.py). Not decoded: the core builds their frames from these bytes."""
        keys = {bundle_id.key(): bundle_id for bundle_id in bundle_ids}
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))
        rows = self._connection().execute(
            f"SELECT id, data FROM seen WHERE settled AND id IN ({marks}) AND data IS NOT NULL", tuple(keys)
        )
        return {keys[key]: data for key, data in rows}

    def held(self, damaged: Callable[[BundleId, str], None] | None = None) -> Iterator[StoredBundle]:
        """Every held bundle, highest class first and oldest first within a class (the store's
        ``load_all`` order), read and decoded :data:`CHUNK` at a time. A row deleted between the
        sort and its read is skipped: it is no longer held. A row that does not decode (the file
        is damaged) is told to ``damaged`` with why and skipped, so one bad row does not keep the
        node from starting; with no ``damaged``, it raises :class:`StoreError`."""
        db = self._connection()
        order = db.execute(HELD_ORDER)
        try:
            while rowids := [rowid for (rowid,) in order.fetchmany(CHUNK)]:
                marks = ",".join("?" * len(rowids))
                rows = {
                    row[0]: row[1:]
                    for row in db.execute(
                        f"SELECT rowid, id, data, received_at, local FROM seen WHERE rowid IN ({marks}) "
                        "AND data IS NOT NULL",
                        rowids,
                    )
                }
                for rowid in rowids:
                    if (row := rows.get(rowid)) is not None:
                        key, data, received_at, local = row
                        try:
                            bundle = decode_full(data)
                        except BundleDecodeError as exc:
                            if damaged is None:
                                raise StoreError(
                                    f"a stored bundle in {self.path} is corrupt ({exc}); the file is damaged"
                                ) from None
                            damaged(BundleId.from_key(key), str(exc))
                            continue
                        yield StoredBundle(bundle, float(received_at), bool(local))
        finally:
            order.close()  # ends the read transaction: later reads see later commits

    def close(self) -> None:
        """Close the connection (before the store's, so the store's close checkpoints the WAL)."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite.connect_sync(self.path, autocommit=True)
            db.execute("PRAGMA query_only = ON")
            db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")  # point reads: the OS caches the file
            self._db = db
        return self._db
