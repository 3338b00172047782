"""The store's SQLite schema and its migrations.

The schema version lives in SQLite's ``PRAGMA user_version``. Each migration is a list of statements
applied in one transaction together with the version bump, so a crash mid-migration leaves the
previous version intact. A file written by a newer Mesh112 is refused rather than guessed at.
To change the schema, append a migration; never edit one that has shipped.
"""

from __future__ import annotations

import sqlite3

from relay.errors import Mesh112Error


class StoreError(Mesh112Error):
    """The store cannot do what was asked; the message says what an operator can check."""


MIGRATIONS: list[list[str]] = [
    # 1: bundles held for forwarding, ids seen (dedup until expiry), the app inbox,
    #    per-neighbour forwarding state, per-origin id counters, and small metadata.
    [
        """CREATE TABLE bundles (
            id BLOB PRIMARY KEY,
            priority INTEGER NOT NULL,
            created INTEGER NOT NULL,
            expires INTEGER NOT NULL,
            received_at REAL NOT NULL,
            local INTEGER NOT NULL,
            size INTEGER NOT NULL,
            data BLOB NOT NULL
        )""",
        "CREATE INDEX bundles_eviction ON bundles (priority DESC, created)",
        "CREATE INDEX bundles_expiry ON bundles (expires)",
        """CREATE TABLE seen (
            id BLOB PRIMARY KEY,
            expires INTEGER NOT NULL,
            delivered INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID""",
        "CREATE INDEX seen_expiry ON seen (expires)",
        """CREATE TABLE inbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id BLOB NOT NULL UNIQUE,
            priority INTEGER NOT NULL,
            size INTEGER NOT NULL,
            data BLOB NOT NULL
        )""",
        """CREATE TABLE forwarding (
            id BLOB NOT NULL,
            neighbour BLOB NOT NULL,
            link TEXT NOT NULL,
            state TEXT NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (id, neighbour, link)
        ) WITHOUT ROWID""",
        """CREATE TABLE origin_seq (
            origin BLOB PRIMARY KEY,
            created INTEGER NOT NULL,
            seq INTEGER NOT NULL
        ) WITHOUT ROWID""",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
        "INSERT INTO meta (key, value) VALUES ('high_water_bytes', 0)",
    ],
    # 2: one row per accepted id instead of a seen row plus a held row: a put writes one row (its
    #    table, its id index, the expiry index, the eviction index) instead of two rows and six
    #    B-trees. ``data`` (and ``size``) are set while the bundle is held; delete and eviction clear
    #    them and the id stays seen until ``expires``. The bundle's columns are NULL only for ids
    #    seen before this version and no longer held. The rowid keeps arrival order. ``bundles`` is
    #    now a view of the held rows, for operators' and tests' reads.
    [
        """CREATE TABLE seen_v2 (
            id BLOB NOT NULL UNIQUE,
            expires INTEGER NOT NULL,
            delivered INTEGER NOT NULL,
            priority INTEGER,
            created INTEGER,
            received_at REAL,
            local INTEGER,
            size INTEGER,
            data BLOB
        )""",
        """INSERT INTO seen_v2 (id, expires, delivered, priority, created, received_at, local, size, data)
            SELECT b.id, b.expires, COALESCE(s.delivered, 0), b.priority, b.created, b.received_at,
                b.local, b.size, b.data
            FROM bundles AS b LEFT JOIN seen AS s ON s.id = b.id ORDER BY b.rowid""",
        """INSERT INTO seen_v2 (id, expires, delivered)
            SELECT id, expires, delivered FROM seen WHERE id NOT IN (SELECT id FROM bundles)""",
        "DROP TABLE bundles",
        "DROP TABLE seen",
        "ALTER TABLE seen_v2 RENAME TO seen",
        "CREATE INDEX seen_expiry ON seen (expires)",
        "CREATE INDEX held_eviction ON seen (priority DESC, created) WHERE data IS NOT NULL",
        """CREATE VIEW bundles AS
            SELECT id, priority, created, expires, received_at, local, size, data
            FROM seen WHERE data IS NOT NULL""",
    ],
    # 3: an origin's id mark gains a window: besides ids up to (created, seq), ids dated up to
    #    ``horizon`` with a seq below ``floor`` may have been issued (relay/store.py, _IdMark). NULL in
    #    rows written before: no window, the mark alone.
    [
        "ALTER TABLE origin_seq ADD COLUMN horizon INTEGER",
        "ALTER TABLE origin_seq ADD COLUMN floor INTEGER",
    ],
    # 4: the id index is partial (``seen_id``, ``WHERE settled``). A row not held here (a command
    #    post's delivered bundle) is written unsettled: it is appended in arrival order and its id is
    #    looked up in memory (relay/store_accept.py, RecentIds), and a few thousand are settled into
    #    the index in one transaction. Ids are a keyed permutation within their second
    #    (crypto/ids.py), so each commit's inserts into the index landed on as many pages as it had
    #    ids, each a WAL frame. Held rows are settled when written. The table is rebuilt (SQLite
    #    cannot drop a UNIQUE column constraint) with its rowids, which keep arrival order.
    [
        "DROP VIEW bundles",
        """CREATE TABLE seen_v4 (
            id BLOB NOT NULL,
            expires INTEGER NOT NULL,
            delivered INTEGER NOT NULL,
            priority INTEGER,
            created INTEGER,
            received_at REAL,
            local INTEGER,
            size INTEGER,
            data BLOB,
            settled INTEGER NOT NULL
        )""",
        """INSERT INTO seen_v4
            (rowid, id, expires, delivered, priority, created, received_at, local, size, data, settled)
            SELECT rowid, id, expires, delivered, priority, created, received_at, local, size, data, 1
            FROM seen ORDER BY rowid""",
        "DROP TABLE seen",
        "ALTER TABLE seen_v4 RENAME TO seen",
        "CREATE UNIQUE INDEX seen_id ON seen (id) WHERE settled",
        "CREATE INDEX seen_expiry ON seen (expires)",
        "CREATE INDEX held_eviction ON seen (priority DESC, created) WHERE data IS NOT NULL",
        """CREATE VIEW bundles AS
            SELECT id, priority, created, expires, received_at, local, size, data
            FROM seen WHERE data IS NOT NULL""",
    ],
]

SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection) -> int:
    """Bring the open database up to :data:`SCHEMA_VERSION`; returns the version found on disk."""
    found = schema_version(db)
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"store schema version {found} is newer than this Mesh112 understands ({SCHEMA_VERSION}); "
            "upgrade Mesh112 or point the node at another data directory"
        )
    for version in range(found + 1, SCHEMA_VERSION + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[version - 1]:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {version}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    return found
