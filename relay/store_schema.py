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
