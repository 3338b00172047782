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

Every write (a message, a record or its acknowledgement, a unit heard) takes the next journal
sequence number ``seq``, one counter for all three tables. A client that saw everything up to ``seq``
asks for what changed after it (:meth:`Journal.changes`) and misses nothing, however bursty the
traffic: unlike a time window, a cursor cannot skip two items written in the same instant.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from relay import sqlite
from relay.position import Position

if TYPE_CHECKING:
    from relay.journal_pg import PgJournal

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS messages (
        bundle_id TEXT PRIMARY KEY, origin TEXT NOT NULL, destination TEXT NOT NULL,
        kind INTEGER NOT NULL, priority TEXT NOT NULL, created REAL NOT NULL, received REAL NOT NULL,
        text TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS records (
        record_id TEXT PRIMARY KEY, type TEXT NOT NULL, origin TEXT NOT NULL, priority TEXT NOT NULL,
        created REAL NOT NULL, received REAL NOT NULL, body TEXT NOT NULL, acks TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS records_type ON records(type, received)",
    """CREATE TABLE IF NOT EXISTS units (
        node_id TEXT PRIMARY KEY, name TEXT NOT NULL, roles TEXT NOT NULL, last_heard REAL NOT NULL,
        lat REAL, lon REAL, fixed REAL, accuracy_m INTEGER)""",
]
# Columns added after the first release: a journal written before them gets them (NULL) on open.
COLUMNS_ADDED = {
    "units": {"fixed": "REAL", "accuracy_m": "INTEGER", "seq": "INTEGER NOT NULL DEFAULT 0"},
    "messages": {"seq": "INTEGER NOT NULL DEFAULT 0"},
    "records": {"seq": "INTEGER NOT NULL DEFAULT 0", "closed": "REAL"},
}
_T = TypeVar("_T")
# A new journal's pages: a message of up to 10 kB fits several to a page instead of spanning three
# overflow pages of 4 KiB, each its own log frame to write, sync and checkpoint (half of the
# journal's thread time per 10 kB message, issue 15; docs/store.md). Existing journals keep theirs.
PAGE_SIZE = 65536
MAX_SEQ = 1 << 62  # a cursor beyond any journal's life, within SQLite's 64-bit integers
SEQ_INDEXES = [f"CREATE INDEX IF NOT EXISTS {table}_seq ON {table}(seq)" for table in COLUMNS_ADDED]
# Indexes of earlier releases that no query reads, dropped on open: each cost every message written an
# index entry (messages by arrival time: the messages are read by seq, issue 15).
INDEXES_DROPPED = ["messages_received"]
MESSAGE_COLUMNS = "bundle_id, origin, destination, kind, priority, created, received, text, seq"
RECORD_COLUMNS = "record_id, type, origin, priority, created, received, body, acks, seq, closed"
UNIT_COLUMNS = "node_id, name, roles, last_heard, lat, lon, fixed, accuracy_m, seq"
# A unit heard: its position changes only to a newer fix (see Journal.heard).
UNIT_UPSERT = f"""INSERT INTO units ({UNIT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)
    ON CONFLICT(node_id) DO UPDATE SET name=excluded.name, roles=excluded.roles, seq=excluded.seq,
      last_heard=max(last_heard, excluded.last_heard),
      lat=CASE WHEN excluded.fixed > coalesce(fixed, -1) THEN excluded.lat ELSE lat END,
      lon=CASE WHEN excluded.fixed > coalesce(fixed, -1) THEN excluded.lon ELSE lon END,
      accuracy_m=CASE WHEN excluded.fixed > coalesce(fixed, -1) THEN excluded.accuracy_m ELSE accuracy_m END,
      fixed=CASE WHEN excluded.fixed > coalesce(fixed, -1) THEN excluded.fixed ELSE fixed END"""


# Open records come highest priority first, then oldest first.
def _rank(column: str) -> str:
    return (
        f"CASE {column} WHEN 'FLASH' THEN 0 WHEN 'IMMEDIATE' THEN 1 WHEN 'PRIORITY' THEN 2 "
        "WHEN 'ROUTINE' THEN 3 ELSE 4 END"
    )


PRIORITY_RANK = _rank("priority")


@dataclass(slots=True)  # not frozen: two per message a burst records (a frozen init ~4x the cost)
class MessageEntry:
    bundle_id: str
    origin: str
    destination: str
    kind: int
    priority: str
    created: float
    received: float
    text: str
    seq: int = 0  # journal sequence of the write that stored it

    def stored_as(self, seq: int) -> MessageEntry:
        """This message with the journal sequence its write got (what ``replace`` does, at a third
        of its cost: a burst makes one per message)."""
        return MessageEntry(
            self.bundle_id,
            self.origin,
            self.destination,
            self.kind,
            self.priority,
            self.created,
            self.received,
            self.text,
            seq,
        )


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
    seq: int = 0  # journal sequence of the last write (arrival, update or acknowledgement)
    closed: float | None = None  # Unix time an acknowledgement closed it; open records have None


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
    seq: int = 0


@dataclass(frozen=True, slots=True)
class UnitHeard:
    """A unit heard from in a burst of deliveries (see :meth:`Journal.heard`)."""

    node_id: str
    name: str
    roles: list[str]
    at: float
    position: Position | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """One item as a write left it, for a client catching up after ``seq``."""

    seq: int
    type: str  # "message", "record" or "unit"
    item: MessageEntry | RecordEntry | UnitEntry

    def event(self) -> dict[str, Any]:
        """The live-stream event for this change: the whole item, so a client applies it without
        reading it back, plus the fields stream clients filter on."""
        item = self.item
        # A message holds str and numbers only: its fields as they are, not asdict's deep copy (in a
        # burst of text that copy was a sixth of the command post's loop, issue 15).
        if isinstance(item, MessageEntry):
            body = {
                "bundle_id": item.bundle_id,
                "origin": item.origin,
                "destination": item.destination,
                "kind": item.kind,
                "priority": item.priority,
                "created": item.created,
                "received": item.received,
                "text": item.text,
                "seq": item.seq,
            }
            return {
                "type": self.type,
                "seq": self.seq,
                "item": body,
                "bundle_id": item.bundle_id,
                "origin": item.origin,
                "text": item.text,
            }
        event: dict[str, Any] = {"type": self.type, "seq": self.seq, "item": asdict(item)}
        if isinstance(item, RecordEntry):
            event.update(record_type=item.type, record_id=item.record_id, origin=item.origin)
        return event


JournalBackend: TypeAlias = "Journal | PgJournal"  # embedded SQLite, or PostgreSQL shared by processes


class UnknownRecordError(LookupError):
    """An acknowledgement named a record the journal does not hold."""


class JournalClosedError(RuntimeError):
    """The journal was used after :meth:`Journal.close`."""


def _insert_messages(rows: int) -> str:
    """One INSERT of ``rows`` messages; a message already held is ignored."""
    values = ",".join(["(?,?,?,?,?,?,?,?,?)"] * rows)
    return f"INSERT OR IGNORE INTO messages ({MESSAGE_COLUMNS}) VALUES {values}"


INSERT_MESSAGES = _insert_messages(1)
# A burst's messages go up to this many rows to one INSERT: a statement per row reopens the table
# and its two indexes (a command post's burst is a frame batch's worth, about 250 messages). 100
# rows of 9 variables stay under SQLite's old limit of 999.
MESSAGES_PER_INSERT = 100
PUT_RECORD = f"""INSERT INTO records ({RECORD_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,NULL)
    ON CONFLICT(record_id) DO UPDATE SET body=excluded.body,
      priority=CASE WHEN {_rank("excluded.priority")} < {PRIORITY_RANK}
        THEN excluded.priority ELSE priority END,
      received=excluded.received, seq=excluded.seq"""
MERGE_RECORD = f"""INSERT INTO records ({RECORD_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)
    ON CONFLICT(record_id) DO UPDATE SET type=excluded.type, origin=excluded.origin,
      priority=excluded.priority, created=excluded.created, body=excluded.body,
      acks=excluded.acks, seq=excluded.seq, closed=excluded.closed
    WHERE records.seq = ?"""


class Journal:
    """The journal on a plain :mod:`sqlite3` connection used only on the journal's own thread, as
    the store uses its file (:meth:`relay.store.Store._call`): every operation is one function run
    there, so it costs one trip whatever number of statements it takes."""

    def __init__(self, db: sqlite3.Connection, thread: ThreadPoolExecutor, seq: int = 0) -> None:
        """Use :meth:`open`."""
        self._db = db  # used on ``_thread`` only
        self._thread = thread
        self._seq = seq  # the last journal sequence number written
        self._closed = False

    @classmethod
    async def open(cls, path: Path) -> Journal:
        """Open (creating or migrating) the journal file at ``path``."""
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"journal:{Path(path).name}")
        try:
            db = await asyncio.get_running_loop().run_in_executor(
                thread, functools.partial(sqlite.connect_sync, Path(path), page_size=PAGE_SIZE)
            )
        except BaseException:
            thread.shutdown(wait=False)
            raise
        journal = cls(db, thread)
        try:
            journal._seq = await journal._call(_migrate)
        except BaseException:
            await journal.close()
            raise
        return journal

    @property
    def cursor(self) -> int:
        """The journal sequence of the last write: a client holding it has seen everything."""
        return self._seq

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    async def close(self) -> None:
        if self._closed:
            return
        await self._call(sqlite3.Connection.close)
        self._closed = True
        self._thread.shutdown(wait=False)

    async def _call(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work(db)`` on the journal's thread in one trip. Each trip wakes the thread, then the
        event loop, and under load each waited 0.3-1.3 ms for the GIL while the loop worked (a burst
        once took four to six: 4-6 ms before the live stream heard of it; docs/benchmarks.md).
        Shielded: a cancelled caller leaves its write to finish there, never half done. Through the
        loop's ``run_in_executor``, which the simulator's loop runs inline (relay/sim/loop.py)."""
        if self._closed:
            raise JournalClosedError("the journal is closed")
        work_done = asyncio.get_running_loop().run_in_executor(self._thread, work, self._db)
        return await asyncio.shield(work_done)

    async def add_message(self, entry: MessageEntry) -> MessageEntry | None:
        """The message as stored (with its ``seq``), or None if the journal held it already."""
        seq = self._next_seq()
        row = (*message_row(entry), seq)

        def write(db: sqlite3.Connection) -> int:
            inserted = db.execute(INSERT_MESSAGES, row).rowcount
            db.commit()
            return inserted

        return entry.stored_as(seq) if await self._call(write) == 1 else None

    async def messages(
        self, *, before: int | None = None, origin: str | None = None, limit: int = 100
    ) -> list[MessageEntry]:
        """The newest ``limit`` messages written before journal sequence ``before`` (default: all),
        newest first; page back by passing the last one's ``seq`` as ``before``."""
        query = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE seq < ?"
        params: list[Any] = [before if before is not None else self._seq + 1]
        if origin is not None:
            query += " AND origin = ?"
            params.append(origin)
        query += " ORDER BY seq DESC LIMIT ?"
        params.append(limit)
        rows = await self._call(lambda db: db.execute(query, params).fetchall())
        return [MessageEntry(*row) for row in rows]

    async def put_record(self, entry: RecordEntry) -> RecordEntry:
        """Insert a record, or replace the body of one already held (an Update); acks are kept, and
        so is the highest priority it arrived with (a follow-up sent at BULK does not turn a FLASH
        alarm into a routine one). Returns the record as stored."""
        row = (*record_row(entry), self._next_seq())

        def write(db: sqlite3.Connection) -> RecordEntry:
            db.execute(PUT_RECORD, row)
            db.commit()
            return _read_record(db, entry.record_id)

        return await self._call(write)

    async def merge_records(self, entries: list[RecordEntry]) -> list[RecordEntry]:
        """Write whole records (body, acknowledgements and closed) as another source settled them, in
        one commit: the backbone's folded state of records other command posts share
        (:mod:`relay.backbone.bridge`). Each entry's ``seq`` is that of the version it was settled
        from (0: none was held); a record written since is left as it is, its newer write the
        caller's to fold in first. Returns the records written, as stored."""
        rows = [(*record_row(entry), self._next_seq(), entry.closed, entry.seq) for entry in entries]

        def write(db: sqlite3.Connection) -> list[RecordEntry]:
            kept = [db.execute(MERGE_RECORD, row).rowcount for row in rows]
            written = [entry for entry, wrote in zip(entries, kept, strict=True) if wrote]
            db.commit()
            return [_read_record(db, entry.record_id) for entry in written]

        return await self._call(write)

    async def records(
        self,
        *,
        type: str | None = None,
        before: int | None = None,
        limit: int = 100,
        origin: str | None = None,
    ) -> list[RecordEntry]:
        """The ``limit`` most recently written records before journal sequence ``before``, newest
        first; only ``origin``'s when given."""
        query = f"SELECT {RECORD_COLUMNS} FROM records WHERE seq < ?"
        params: list[Any] = [before if before is not None else self._seq + 1]
        for column, value in (("type", type), ("origin", origin)):
            if value is not None:
                query += f" AND {column} = ?"
                params.append(value)
        query += " ORDER BY seq DESC LIMIT ?"
        params.append(limit)
        rows = await self._call(lambda db: db.execute(query, params).fetchall())
        return [_record(row) for row in rows]

    async def latest_by_origin(
        self, *, type: str, limit: int = 1000, origin: str | None = None
    ) -> list[RecordEntry]:
        """Each origin's newest record of ``type`` by creation, newest first: a unit's current state
        (its video session), however many records other units made since. Only ``origin``'s when given."""
        where, params = "type = ?", [type]
        if origin is not None:
            where, params = where + " AND origin = ?", [type, origin]
        query = f"""SELECT {RECORD_COLUMNS} FROM (SELECT {RECORD_COLUMNS}, ROW_NUMBER() OVER
            (PARTITION BY origin ORDER BY created DESC, seq DESC) AS place FROM records WHERE {where})
            WHERE place = 1 ORDER BY created DESC, seq DESC LIMIT ?"""
        rows = await self._call(lambda db: db.execute(query, [*params, limit]).fetchall())
        return [_record(row) for row in rows]

    async def open_records(
        self, *, type: str | None = None, limit: int = 1000, origin: str | None = None
    ) -> list[RecordEntry]:
        """Records no acknowledgement has closed, highest priority first, then oldest first: the
        operator's queue. Nothing leaves it by age or by newer traffic. Only ``origin``'s when given."""
        query = f"SELECT {RECORD_COLUMNS} FROM records WHERE closed IS NULL"
        params: list[Any] = []
        for column, value in (("type", type), ("origin", origin)):
            if value is not None:
                query += f" AND {column} = ?"
                params.append(value)
        query += f" ORDER BY {PRIORITY_RANK}, created LIMIT ?"
        params.append(limit)
        rows = await self._call(lambda db: db.execute(query, params).fetchall())
        return [_record(row) for row in rows]

    async def open_types(self, priorities: Collection[str]) -> list[str]:
        """The types of the records still open at one of ``priorities``, sorted: what an operator's
        queue may hold besides the applications installed here (another post's, over the backbone)."""
        marks = ",".join("?" * len(priorities))
        query = f"SELECT DISTINCT type FROM records WHERE closed IS NULL AND priority IN ({marks})"
        rows = await self._call(lambda db: db.execute(query, tuple(priorities)).fetchall())
        return sorted(row[0] for row in rows)

    async def record(self, record_id: str) -> RecordEntry:
        return await self._call(lambda db: _read_record(db, record_id))

    async def add_ack(self, record_id: str, ack: dict[str, Any], *, close: bool = False) -> RecordEntry:
        """Append an acknowledgement; ``close`` takes the record out of the open queue for good. Read,
        appended and written in one trip, so two acknowledgements at once both stay."""
        seq = self._next_seq()

        def write(db: sqlite3.Connection) -> RecordEntry:
            entry = _read_record(db, record_id)
            acks = [*entry.acks, ack]
            closed = entry.closed if entry.closed is not None or not close else float(ack["at"])
            db.execute(
                "UPDATE records SET acks = ?, closed = ?, seq = ? WHERE record_id = ?",
                (json.dumps(acks), closed, seq, record_id),
            )
            db.commit()
            return _read_record(db, record_id)

        return await self._call(write)

    async def update_ack(self, record_id: str, index: int, changes: dict[str, Any]) -> RecordEntry:
        """Merge ``changes`` into acknowledgement ``index`` of a record (e.g. its delivery state)."""
        seq = self._next_seq()

        def write(db: sqlite3.Connection) -> RecordEntry:
            entry = _read_record(db, record_id)
            if not 0 <= index < len(entry.acks):
                raise UnknownRecordError(f"record {record_id!r} has no acknowledgement {index}")
            acks = [dict(ack) for ack in entry.acks]
            acks[index].update(changes)
            db.execute(
                "UPDATE records SET acks = ?, seq = ? WHERE record_id = ?", (json.dumps(acks), seq, record_id)
            )
            db.commit()
            return _read_record(db, record_id)

        return await self._call(write)

    async def changes(self, after: int, limit: int = 500) -> list[Change]:
        """Every item whose last write came after journal sequence ``after``, oldest write first, at
        most ``limit``; continue from the last one's ``seq``."""
        after = max(0, min(after, MAX_SEQ))  # a client's cursor, e.g. the stream's ?after=
        queries: tuple[tuple[str, str, Callable[[Any], MessageEntry | RecordEntry | UnitEntry]], ...] = (
            ("message", f"SELECT {MESSAGE_COLUMNS} FROM messages", lambda r: MessageEntry(*r)),
            ("record", f"SELECT {RECORD_COLUMNS} FROM records", _record),
            ("unit", f"SELECT {UNIT_COLUMNS} FROM units", _unit),
        )

        def read(db: sqlite3.Connection) -> list[list[Any]]:
            return [
                db.execute(f"{select} WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)).fetchall()
                for _, select, _ in queries
            ]

        found: list[Change] = []
        for (kind, _, make), rows in zip(queries, await self._call(read), strict=True):
            found += [Change(int(row[8]), kind, make(row)) for row in rows]  # seq is 9th
        found.sort(key=lambda change: change.seq)
        return found[:limit]

    async def heard(
        self, node_id: str, *, name: str, roles: list[str], at: float, position: Position | None = None
    ) -> UnitEntry:
        """A unit was heard from (any bundle originated by it). Its position changes only to a newer
        fix: bundles overtake each other in a delay-tolerant network, and a late old fix must not
        move the unit back to where it was."""
        [unit], _ = await self.record_burst([UnitHeard(node_id, name, roles, at, position)], [])
        return unit

    async def record_burst(
        self, units: Sequence[UnitHeard], entries: Sequence[MessageEntry]
    ) -> tuple[list[UnitEntry], list[MessageEntry]]:
        """What a burst of deliveries tells the journal, in one commit (one fsync, not one per
        table) and one trip: the units heard (as :meth:`heard`) and the messages (as
        :meth:`add_message`). Returns the units as stored and the messages stored, with their ``seq``
        (here the given entries themselves, their ``seq`` set)."""
        unit_rows = [(*_unit_params(unit), self._next_seq()) for unit in units]
        # the messages' seqs follow the units' (a burst's are numbered here, not one call each)
        message_rows = [(*message_row(entry), seq) for seq, entry in enumerate(entries, self._seq + 1)]
        self._seq += len(message_rows)
        ids = [unit.node_id for unit in units]

        def write(db: sqlite3.Connection) -> tuple[list[Any], set[int] | None]:
            if unit_rows:
                db.executemany(UNIT_UPSERT, unit_rows)
            inserted = 0  # rows inserted: an ignored one (held already) counts 0
            for start in range(0, len(message_rows), MESSAGES_PER_INSERT):
                chunk = message_rows[start : start + MESSAGES_PER_INSERT]
                sql = _insert_messages(len(chunk))
                inserted += db.execute(sql, list(chain.from_iterable(chunk))).rowcount  # flattened in C
            db.commit()
            units_stored: list[Any] = []
            if ids:
                marks = ",".join("?" * len(ids))
                units_stored = db.execute(
                    f"SELECT {UNIT_COLUMNS} FROM units WHERE node_id IN ({marks})", ids
                ).fetchall()
            if inserted == len(message_rows):  # all new, the usual case: nothing to read back
                return units_stored, None
            held_since = db.execute(
                "SELECT seq FROM messages WHERE seq >= ? AND seq <= ?",
                (message_rows[0][-1], message_rows[-1][-1]),
            ).fetchall()
            return units_stored, {row[0] for row in held_since}

        rows, stored_seqs = await self._call(write)
        by_id = {row[0]: row for row in rows}
        stored_units = [_unit(by_id[node_id]) for node_id in ids]  # written just above
        stored_messages: list[MessageEntry] = []
        for entry, row in zip(entries, message_rows, strict=True):
            if stored_seqs is None or row[-1] in stored_seqs:
                entry.seq = row[-1]  # the caller's entry itself: a copy cost an init per message
                stored_messages.append(entry)
        return stored_units, stored_messages

    async def units(self) -> list[UnitEntry]:
        rows = await self._call(
            lambda db: db.execute(f"SELECT {UNIT_COLUMNS} FROM units ORDER BY name").fetchall()
        )
        return [_unit(r) for r in rows]


def _migrate(db: sqlite3.Connection) -> int:
    """Create or bring up to date the journal's tables; the last journal sequence written."""
    for statement in SCHEMA:
        db.execute(statement)
    for table, columns in COLUMNS_ADDED.items():
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for column, sql_type in columns.items():
            if column not in present:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")
    for statement in SEQ_INDEXES:
        db.execute(statement)
    for index in INDEXES_DROPPED:
        db.execute(f"DROP INDEX IF EXISTS {index}")
    db.commit()
    seq = 0
    for table in COLUMNS_ADDED:
        row = db.execute(f"SELECT coalesce(max(seq), 0) FROM {table}").fetchone()
        seq = max(seq, int(row[0]) if row else 0)
    return seq


def _read_record(db: sqlite3.Connection, record_id: str) -> RecordEntry:
    row = db.execute(f"SELECT {RECORD_COLUMNS} FROM records WHERE record_id = ?", (record_id,)).fetchone()
    if row is None:
        raise UnknownRecordError(f"no record {record_id!r} in the journal")
    return _record(row)


def record_row(entry: RecordEntry) -> tuple[Any, ...]:
    """A record's columns in RECORD_COLUMNS order (without seq and closed), for either backend."""
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


def message_row(entry: MessageEntry) -> tuple[Any, ...]:
    """A message's columns in MESSAGE_COLUMNS order (without seq), for either backend."""
    return (
        entry.bundle_id,
        entry.origin,
        entry.destination,
        entry.kind,
        entry.priority,
        entry.created,
        entry.received,
        entry.text,
    )


def _unit_params(unit: UnitHeard) -> tuple[Any, ...]:
    """A unit heard as UNIT_COLUMNS without seq."""
    position = unit.position
    fix = (position.lat, position.lon, position.fixed, position.accuracy_m) if position else (None,) * 4
    return (unit.node_id, unit.name, json.dumps(unit.roles), unit.at, *fix)


def _record(row: Any) -> RecordEntry:
    return RecordEntry(
        row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]), json.loads(row[7]), row[8], row[9]
    )


def _unit(row: Any) -> UnitEntry:
    return UnitEntry(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5], row[6], row[7], row[8])
