"""The command post's journal on PostgreSQL, for a post several API processes serve at once.

The same tables, records and cursor as the embedded SQLite journal (:mod:`relay.journal`), chosen
with ``[command_post] database = "postgresql://…"``. Every write takes its journal sequence from one
PostgreSQL sequence inside a transaction that first takes a transaction-level advisory lock, so
sequence numbers become visible in the order they were taken: a client that read everything up to
``seq`` and asks for what came after cannot miss a write another process was still committing. Each
write also NOTIFYs its sequence, so a process that did not write it learns of it at once
(:meth:`PgJournal.follow`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from typing import Any

import asyncpg

from relay.journal import (
    MESSAGE_COLUMNS,
    PRIORITY_RANK,
    RECORD_COLUMNS,
    UNIT_COLUMNS,
    Change,
    MessageEntry,
    RecordEntry,
    UnitEntry,
    UnitHeard,
    UnknownRecordError,
    message_row,
    record_row,
)
from relay.position import Position

SCHEMA = [
    "CREATE SEQUENCE IF NOT EXISTS journal_seq",
    """CREATE TABLE IF NOT EXISTS messages (
        bundle_id TEXT PRIMARY KEY, origin TEXT NOT NULL, destination TEXT NOT NULL,
        kind INTEGER NOT NULL, priority TEXT NOT NULL, created DOUBLE PRECISION NOT NULL,
        received DOUBLE PRECISION NOT NULL, text TEXT NOT NULL, seq BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS records (
        record_id TEXT PRIMARY KEY, type TEXT NOT NULL, origin TEXT NOT NULL, priority TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL, received DOUBLE PRECISION NOT NULL, body TEXT NOT NULL,
        acks TEXT NOT NULL, seq BIGINT NOT NULL, closed DOUBLE PRECISION)""",
    """CREATE TABLE IF NOT EXISTS units (
        node_id TEXT PRIMARY KEY, name TEXT NOT NULL, roles TEXT NOT NULL,
        last_heard DOUBLE PRECISION NOT NULL, lat DOUBLE PRECISION, lon DOUBLE PRECISION,
        fixed DOUBLE PRECISION, accuracy_m INTEGER, seq BIGINT NOT NULL)""",
    *(f"CREATE INDEX IF NOT EXISTS {t}_seq ON {t}(seq)" for t in ("messages", "records", "units")),
    "CREATE INDEX IF NOT EXISTS records_type ON records(type, received)",
]
WRITE_LOCK = 0x6D657368  # the advisory lock every journal write holds until it commits
CHANNEL = "mesh112_journal"


class PgJournal:
    """The :class:`relay.journal.Journal` interface on a PostgreSQL connection pool."""

    def __init__(self, pool: asyncpg.Pool, seq: int) -> None:
        self._pool = pool
        self._seq = seq  # the last journal sequence this process wrote or read
        self._following = False
        self._written: set[int] = set()  # while following: sequences this process wrote

    @classmethod
    async def open(cls, dsn: str) -> PgJournal:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=8)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK)  # two processes opening
            for statement in SCHEMA:
                await conn.execute(statement)
        return cls(pool, await cls._last_seq(pool))

    @staticmethod
    async def _last_seq(pool: asyncpg.Pool) -> int:
        query = " UNION ALL ".join(
            f"SELECT coalesce(max(seq), 0) AS s FROM {t}" for t in ("messages", "records", "units")
        )
        return int(await pool.fetchval(f"SELECT max(s) FROM ({query}) AS m"))

    @property
    def cursor(self) -> int:
        """The last journal sequence this process saw: a client holding it misses nothing (it may be
        shown again what another process wrote since)."""
        return self._seq

    async def close(self) -> None:
        await self._pool.close()

    async def _write(self, statement: str, *args: Any) -> tuple[int, str]:
        """Run one write with the next journal sequence as its last parameter; returns (seq, status)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK)
            seq = int(await conn.fetchval("SELECT nextval('journal_seq')"))
            status = await conn.execute(statement, *args, seq)
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, str(seq))
        self._seq = max(self._seq, seq)
        if self._following:
            self._written.add(seq)
        return seq, str(status)

    async def add_message(self, entry: MessageEntry) -> MessageEntry | None:
        seq, status = await self._write(
            f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) "
            "ON CONFLICT (bundle_id) DO NOTHING",
            *message_row(entry),
        )
        return replace(entry, seq=seq) if status.endswith(" 1") else None

    async def record_burst(
        self, units: Sequence[UnitHeard], entries: Sequence[MessageEntry]
    ) -> tuple[list[UnitEntry], list[MessageEntry]]:
        """As :meth:`relay.journal.Journal.record_burst`, one write per unit and message here (every
        write takes the advisory lock and notifies followers on its own)."""
        stored_units = [
            await self.heard(
                unit.node_id, name=unit.name, roles=unit.roles, at=unit.at, position=unit.position
            )
            for unit in units
        ]
        stored = [await self.add_message(entry) for entry in entries]
        return stored_units, [entry for entry in stored if entry is not None]

    async def messages(
        self, *, before: int | None = None, origin: str | None = None, limit: int = 100
    ) -> list[MessageEntry]:
        query = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE seq < $1"
        params: list[Any] = [before if before is not None else _NO_LIMIT]
        if origin is not None:
            params.append(origin)
            query += f" AND origin = ${len(params)}"
        params.append(limit)
        rows = await self._pool.fetch(query + f" ORDER BY seq DESC LIMIT ${len(params)}", *params)
        return [MessageEntry(*row) for row in rows]

    async def put_record(self, entry: RecordEntry) -> RecordEntry:
        await self._write(
            f"""INSERT INTO records ({RECORD_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,NULL)
               ON CONFLICT (record_id) DO UPDATE SET body=excluded.body, priority=excluded.priority,
                 received=excluded.received, seq=excluded.seq""",
            *record_row(entry),
        )
        return await self.record(entry.record_id)

    async def merge_records(self, entries: list[RecordEntry]) -> list[RecordEntry]:
        written = []
        for entry in entries:
            _, status = await self._write(
                f"""INSERT INTO records ({RECORD_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$11,$9)
                   ON CONFLICT (record_id) DO UPDATE SET type=excluded.type, origin=excluded.origin,
                     priority=excluded.priority, created=excluded.created, body=excluded.body,
                     acks=excluded.acks, seq=excluded.seq, closed=excluded.closed
                   WHERE records.seq = $10""",
                *record_row(entry),
                entry.closed,
                entry.seq,
            )
            if status.endswith(" 1"):  # "INSERT 0 1"; "INSERT 0 0" when the record was written since
                written.append(entry)
        return [await self.record(entry.record_id) for entry in written]

    async def records(
        self,
        *,
        type: str | None = None,
        before: int | None = None,
        limit: int = 100,
        origin: str | None = None,
    ) -> list[RecordEntry]:
        query = f"SELECT {RECORD_COLUMNS} FROM records WHERE seq < $1"
        params: list[Any] = [before if before is not None else _NO_LIMIT]
        for column, value in (("type", type), ("origin", origin)):
            if value is not None:
                params.append(value)
                query += f" AND {column} = ${len(params)}"
        params.append(limit)
        rows = await self._pool.fetch(query + f" ORDER BY seq DESC LIMIT ${len(params)}", *params)
        return [_record(row) for row in rows]

    async def latest_by_origin(
        self, *, type: str, limit: int = 1000, origin: str | None = None
    ) -> list[RecordEntry]:
        params: list[Any] = [type] if origin is None else [type, origin]
        where = "type = $1" if origin is None else "type = $1 AND origin = $2"
        query = f"""SELECT {RECORD_COLUMNS} FROM (SELECT {RECORD_COLUMNS}, ROW_NUMBER() OVER
            (PARTITION BY origin ORDER BY created DESC, seq DESC) AS place FROM records WHERE {where})
            AS latest WHERE place = 1 ORDER BY created DESC, seq DESC LIMIT ${len(params) + 1}"""
        rows = await self._pool.fetch(query, *params, limit)
        return [_record(row) for row in rows]

    async def open_types(self, priorities: Collection[str]) -> list[str]:
        rows = await self._pool.fetch(
            "SELECT DISTINCT type FROM records WHERE closed IS NULL AND priority = ANY($1)",
            list(priorities),
        )
        return sorted(row[0] for row in rows)

    async def open_records(
        self, *, type: str | None = None, limit: int = 1000, origin: str | None = None
    ) -> list[RecordEntry]:
        query = f"SELECT {RECORD_COLUMNS} FROM records WHERE closed IS NULL"
        params: list[Any] = []
        for column, value in (("type", type), ("origin", origin)):
            if value is not None:
                params.append(value)
                query += f" AND {column} = ${len(params)}"
        params.append(limit)
        rows = await self._pool.fetch(
            query + f" ORDER BY {PRIORITY_RANK}, created LIMIT ${len(params)}", *params
        )
        return [_record(row) for row in rows]

    async def record(self, record_id: str) -> RecordEntry:
        row = await self._pool.fetchrow(
            f"SELECT {RECORD_COLUMNS} FROM records WHERE record_id = $1", record_id
        )
        if row is None:
            raise UnknownRecordError(f"no record {record_id!r} in the journal")
        return _record(row)

    async def add_ack(self, record_id: str, ack: dict[str, Any], *, close: bool = False) -> RecordEntry:
        """Append an acknowledgement in one statement, so two processes acknowledging at once both
        keep theirs."""
        _, status = await self._write(
            """UPDATE records SET acks = (acks::jsonb || jsonb_build_array($2::jsonb))::text,
                 closed = CASE WHEN closed IS NULL AND $3 THEN $4 ELSE closed END, seq = $5
               WHERE record_id = $1""",
            record_id,
            json.dumps(ack),
            close,
            float(ack["at"]),
        )
        if status.endswith(" 0"):
            raise UnknownRecordError(f"no record {record_id!r} in the journal")
        return await self.record(record_id)

    async def update_ack(self, record_id: str, index: int, changes: dict[str, Any]) -> RecordEntry:
        entry = await self.record(record_id)
        if not 0 <= index < len(entry.acks):
            raise UnknownRecordError(f"record {record_id!r} has no acknowledgement {index}")
        await self._write(
            "UPDATE records SET seq = $5,"
            " acks = jsonb_set(acks::jsonb, $2, acks::jsonb -> $3::int || $4::jsonb)::text"
            " WHERE record_id = $1",
            record_id,
            [str(index)],
            index,
            json.dumps(changes),
        )
        return await self.record(record_id)

    async def changes(self, after: int, limit: int = 500) -> list[Change]:
        found: list[Change] = []
        queries: tuple[tuple[str, str, Callable[[Any], MessageEntry | RecordEntry | UnitEntry]], ...] = (
            ("message", f"SELECT {MESSAGE_COLUMNS} FROM messages", lambda r: MessageEntry(*r)),
            ("record", f"SELECT {RECORD_COLUMNS} FROM records", _record),
            ("unit", f"SELECT {UNIT_COLUMNS} FROM units", _unit),
        )
        for kind, select, make in queries:
            rows = await self._pool.fetch(f"{select} WHERE seq > $1 ORDER BY seq LIMIT $2", after, limit)
            found += [Change(int(row[8]), kind, make(row)) for row in rows]
        found.sort(key=lambda change: change.seq)
        found = found[:limit]
        if found:
            self._seq = max(self._seq, found[-1].seq)
        return found

    async def follow(self, on_change: Callable[[Change], None]) -> None:
        """Hand ``on_change`` every change another process writes, as it commits (LISTEN/NOTIFY),
        until cancelled: this process's live stream then shows them too. A change overwritten
        before it was read comes with the write that overwrote it."""
        seqs: asyncio.Queue[int] = asyncio.Queue()
        conn = await self._pool.acquire()
        self._following = True
        try:
            await conn.add_listener(
                CHANNEL, lambda _conn, _pid, _channel, payload: seqs.put_nowait(int(payload))
            )
            while True:
                seq = await seqs.get()
                if seq in self._written:
                    self._written.discard(seq)  # this process wrote it and published it itself
                    continue
                found = await self.changes(seq - 1, 1)
                if found and found[0].seq == seq:
                    on_change(found[0])
        finally:
            self._following = False
            await conn.reset()
            await self._pool.release(conn)

    async def heard(
        self, node_id: str, *, name: str, roles: list[str], at: float, position: Position | None = None
    ) -> UnitEntry:
        fix = (position.lat, position.lon, position.fixed, position.accuracy_m) if position else (None,) * 4
        newer = "excluded.fixed > coalesce(units.fixed, -1)"
        await self._write(
            f"""INSERT INTO units ({UNIT_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)
               ON CONFLICT (node_id) DO UPDATE SET name=excluded.name, roles=excluded.roles, seq=excluded.seq,
                 last_heard=greatest(units.last_heard, excluded.last_heard),
                 lat=CASE WHEN {newer} THEN excluded.lat ELSE units.lat END,
                 lon=CASE WHEN {newer} THEN excluded.lon ELSE units.lon END,
                 accuracy_m=CASE WHEN {newer} THEN excluded.accuracy_m ELSE units.accuracy_m END,
                 fixed=CASE WHEN {newer} THEN excluded.fixed ELSE units.fixed END""",
            node_id,
            name,
            json.dumps(roles),
            at,
            *fix,
        )
        row = await self._pool.fetchrow(f"SELECT {UNIT_COLUMNS} FROM units WHERE node_id = $1", node_id)
        assert row is not None  # written just above
        return _unit(row)

    async def units(self) -> list[UnitEntry]:
        return [
            _unit(row) for row in await self._pool.fetch(f"SELECT {UNIT_COLUMNS} FROM units ORDER BY name")
        ]


_NO_LIMIT = 1 << 62  # "before" when none is given: every sequence is below it


def _record(row: Any) -> RecordEntry:
    return RecordEntry(
        row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]), json.loads(row[7]), row[8], row[9]
    )


def _unit(row: Any) -> UnitEntry:
    return UnitEntry(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5], row[6], row[7], row[8])
