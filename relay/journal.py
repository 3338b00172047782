"""The command post's journal: what operators look back at once bundles have been delivered.

The store holds bundles in transit and forgets them once delivered; the journal keeps the history an
operator needs: messages, application records (alarms, detections) with their acknowledgements, and
the roster of units with when each was last heard and its last position fix. It is a separate SQLite
file so the forwarding store stays small, opened with the store's durability settings
(:mod:`relay.sqlite`, ``synchronous=FULL``): the command post acknowledges a delivery to the store
right after the journal's COMMIT, so a journal commit that a power cut could undo would lose a
message the store already forgot.

Records are generic: ``type`` and ``body`` come from the application that registered the payload kind
(ng112 fills in alarms, analytics_edge detections); the relay never interprets them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

from relay import sqlite
from relay.position import Position

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS messages (
        bundle_id TEXT PRIMARY KEY, origin TEXT NOT NULL, destination TEXT NOT NULL,
        kind INTEGER NOT NULL, priority TEXT NOT NULL, created REAL NOT NULL, received REAL NOT NULL,
        text TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS messages_received ON messages(received)",
    """CREATE TABLE IF NOT EXISTS records (
        record_id TEXT PRIMARY KEY, type TEXT NOT NULL, origin TEXT NOT NULL, priority TEXT NOT NULL,
        created REAL NOT NULL, received REAL NOT NULL, body TEXT NOT NULL, acks TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS records_type ON records(type, received)",
    """CREATE TABLE IF NOT EXISTS units (
        node_id TEXT PRIMARY KEY, name TEXT NOT NULL, roles TEXT NOT NULL, last_heard REAL NOT NULL,
        lat REAL, lon REAL, fixed REAL, accuracy_m INTEGER)""",
]
# Columns added after the first release: a journal written before them gets them (NULL) on open.
UNIT_COLUMNS_ADDED = {"fixed": "REAL", "accuracy_m": "INTEGER"}


@dataclass(frozen=True, slots=True)
class MessageEntry:
    bundle_id: str
    origin: str
    destination: str
    kind: int
    priority: str
    created: float
    received: float
    text: str


@dataclass(frozen=True, slots=True)
class RecordEntry:
    record_id: str
    type: str
    origin: str
    priority: str
    created: float
    received: float
    body: dict[str, Any]
    acks: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class UnitEntry:
    node_id: str
    name: str
    roles: list[str]
    last_heard: float
    lat: float | None
    lon: float | None
    fixed: float | None  # Unix time of the position fix (not when it arrived)
    accuracy_m: int | None


class UnknownRecordError(LookupError):
    """An acknowledgement named a record the journal does not hold."""


class Journal:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: Path) -> Journal:
        db = await sqlite.connect(path)
        for statement in SCHEMA:
            await db.execute(statement)
        async with db.execute("PRAGMA table_info(units)") as cursor:
            present = {row[1] for row in await cursor.fetchall()}
        for column, sql_type in UNIT_COLUMNS_ADDED.items():
            if column not in present:
                await db.execute(f"ALTER TABLE units ADD COLUMN {column} {sql_type}")
        await db.commit()
        return cls(db)

    async def close(self) -> None:
        await self._db.close()

    async def add_message(self, entry: MessageEntry) -> bool:
        cursor = await self._db.execute(
            "INSERT OR IGNORE INTO messages VALUES (?,?,?,?,?,?,?,?)",
            (
                entry.bundle_id,
                entry.origin,
                entry.destination,
                entry.kind,
                entry.priority,
                entry.created,
                entry.received,
                entry.text,
            ),
        )
        await self._db.commit()
        return cursor.rowcount == 1

    async def messages(
        self, *, since: float = 0.0, origin: str | None = None, limit: int = 100
    ) -> list[MessageEntry]:
        query = "SELECT * FROM messages WHERE received >= ?"
        params: list[Any] = [since]
        if origin is not None:
            query += " AND origin = ?"
            params.append(origin)
        query += " ORDER BY received DESC LIMIT ?"
        params.append(limit)
        async with self._db.execute(query, params) as cursor:
            return [MessageEntry(*row) for row in await cursor.fetchall()]

    async def put_record(self, entry: RecordEntry) -> None:
        """Insert a record, or replace the body of one already held (an Update); acks are kept."""
        await self._db.execute(
            """INSERT INTO records VALUES (?,?,?,?,?,?,?,?)
               ON CONFLICT(record_id) DO UPDATE SET body=excluded.body, priority=excluded.priority,
                 received=excluded.received""",
            _record_row(entry),
        )
        await self._db.commit()

    async def records(self, *, type: str | None = None, limit: int = 100) -> list[RecordEntry]:
        query = "SELECT * FROM records"
        params: list[Any] = []
        if type is not None:
            query += " WHERE type = ?"
            params.append(type)
        query += " ORDER BY received DESC LIMIT ?"
        params.append(limit)
        async with self._db.execute(query, params) as cursor:
            return [_record(row) for row in await cursor.fetchall()]

    async def record(self, record_id: str) -> RecordEntry:
        async with self._db.execute("SELECT * FROM records WHERE record_id = ?", (record_id,)) as cursor:
            row = await cursor.fetchone()
        if row is None:
            raise UnknownRecordError(f"no record {record_id!r} in the journal")
        return _record(row)

    async def add_ack(self, record_id: str, ack: dict[str, Any]) -> RecordEntry:
        entry = await self.record(record_id)
        acks = [*entry.acks, ack]
        await self._db.execute(
            "UPDATE records SET acks = ? WHERE record_id = ?", (json.dumps(acks), record_id)
        )
        await self._db.commit()
        return await self.record(record_id)

    async def heard(
        self, node_id: str, *, name: str, roles: list[str], at: float, position: Position | None = None
    ) -> None:
        """A unit was heard from (any bundle originated by it). Its position changes only to a newer
        fix: bundles overtake each other in a delay-tolerant network, and a late old fix must not
        move the unit back to where it was."""
        fix = (position.lat, position.lon, position.fixed, position.accuracy_m) if position else (None,) * 4
        await self._db.execute(
            """INSERT INTO units (node_id, name, roles, last_heard, lat, lon, fixed, accuracy_m)
               VALUES (?,?,?,?,?,?,?,?)
               ON CONFLICT(node_id) DO UPDATE SET name=excluded.name, roles=excluded.roles,
                 last_heard=max(last_heard, excluded.last_heard),
                 lat=CASE WHEN excluded.fixed > coalesce(fixed, -1) THEN excluded.lat ELSE lat END,
                 lon=CASE WHEN excluded.fixed > coalesce(fixed, -1) THEN excluded.lon ELSE lon END,
                 accuracy_m=CASE WHEN excluded.fixed > coalesce(fixed, -1)
                   THEN excluded.accuracy_m ELSE accuracy_m END,
                 fixed=CASE WHEN excluded.fixed > coalesce(fixed, -1) THEN excluded.fixed ELSE fixed END""",
            (node_id, name, json.dumps(roles), at, *fix),
        )
        await self._db.commit()

    async def units(self) -> list[UnitEntry]:
        async with self._db.execute(
            "SELECT node_id, name, roles, last_heard, lat, lon, fixed, accuracy_m FROM units ORDER BY name"
        ) as cursor:
            rows = await cursor.fetchall()
        return [UnitEntry(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6], r[7]) for r in rows]


def _record_row(entry: RecordEntry) -> tuple[Any, ...]:
    body, acks = json.dumps(entry.body, sort_keys=True), json.dumps(entry.acks)
    return (
        entry.record_id,
        entry.type,
        entry.origin,
        entry.priority,
        entry.created,
        entry.received,
        body,
        acks,
    )


def _record(row: Any) -> RecordEntry:
    return RecordEntry(row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]), json.loads(row[7]))
