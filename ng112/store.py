"""The gateway's durable alarm store (SQLite opened by :mod:`relay.sqlite`: WAL, synchronous=FULL).

The gateway answers 200 only after :meth:`AlarmStore.accept` returned, i.e. after the alarm is on
disk. The store also remembers, per record, the original CAP identity and the panel's contact, so an
Ack record coming back from the command post can be turned into a CAP Ack that references the
panel's own ``(sender, identifier, sent)`` and be sent to the right place. Accepting the same record
twice (a retransmitted or replayed CAP) is a no-op.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from ng112.record import AlarmRecord, decode_record
from relay import sqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alarm (
    key_id INTEGER NOT NULL, seq INTEGER NOT NULL, sent INTEGER NOT NULL,
    cap_sender TEXT NOT NULL, cap_identifier TEXT NOT NULL, cap_sent TEXT NOT NULL,
    panel TEXT NOT NULL, record BLOB NOT NULL, cap_xml BLOB, received_at REAL NOT NULL,
    PRIMARY KEY (key_id, seq)
);
CREATE TABLE IF NOT EXISTS followup (
    key_id INTEGER NOT NULL, seq INTEGER NOT NULL, payload BLOB NOT NULL, PRIMARY KEY (key_id, seq)
);
CREATE TABLE IF NOT EXISTS ack (
    key_id INTEGER NOT NULL, seq INTEGER NOT NULL, record BLOB NOT NULL, delivered_at REAL,
    PRIMARY KEY (key_id, seq)
);
"""


@dataclass(frozen=True, slots=True)
class StoredAlarm:
    record: AlarmRecord
    cap_sender: str
    cap_identifier: str
    cap_sent: str
    panel: str
    cap_xml: bytes | None
    received_at: float


class AlarmStore:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: Path) -> AlarmStore:
        db = await sqlite.connect(path)
        await db.executescript(_SCHEMA)
        await db.commit()
        return cls(db)

    async def close(self) -> None:
        await self._db.close()

    async def put(self, alarm: StoredAlarm) -> bool:
        """Store durably; True if new, False if this record was already stored."""
        cursor = await self._db.execute(
            "INSERT OR IGNORE INTO alarm VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                alarm.record.key_id, alarm.record.seq, alarm.record.sent, alarm.cap_sender,
                alarm.cap_identifier, alarm.cap_sent, alarm.panel, alarm.record.encode(), alarm.cap_xml,
                alarm.received_at,
            ),
        )  # fmt: skip
        await self._db.commit()
        return cursor.rowcount == 1

    async def forget(self, key_id: int, seq: int) -> None:
        """Remove an alarm whose hand-off failed, so the panel's retry is processed afresh."""
        await self._db.execute("DELETE FROM alarm WHERE key_id=? AND seq=?", (key_id, seq))
        await self._db.execute("DELETE FROM followup WHERE key_id=? AND seq=?", (key_id, seq))
        await self._db.commit()

    async def get(self, key_id: int, seq: int) -> StoredAlarm | None:
        async with self._db.execute(
            "SELECT record, cap_sender, cap_identifier, cap_sent, panel, cap_xml, received_at "
            "FROM alarm WHERE key_id=? AND seq=?",
            (key_id, seq),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        return StoredAlarm(decode_record(row[0]), row[1], row[2], row[3], row[4], row[5], row[6])

    async def put_followup(self, key_id: int, seq: int, payload: bytes) -> None:
        """Keep an alarm's encoded follow-up, so a command post's fetch request can be answered."""
        await self._db.execute("INSERT OR IGNORE INTO followup VALUES (?,?,?)", (key_id, seq, payload))
        await self._db.commit()

    async def followup(self, key_id: int, seq: int) -> bytes | None:
        async with self._db.execute(
            "SELECT payload FROM followup WHERE key_id=? AND seq=?", (key_id, seq)
        ) as cursor:
            row = await cursor.fetchone()
        return bytes(row[0]) if row else None

    async def count(self) -> int:
        async with self._db.execute("SELECT count(*) FROM alarm") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def put_ack(self, ack: AlarmRecord) -> bool:
        cursor = await self._db.execute(
            "INSERT OR IGNORE INTO ack VALUES (?,?,?,NULL)", (ack.key_id, ack.seq, ack.encode())
        )
        await self._db.commit()
        return cursor.rowcount == 1

    async def mark_ack_delivered(self, ack: AlarmRecord) -> None:
        await self._db.execute(
            "UPDATE ack SET delivered_at=? WHERE key_id=? AND seq=?", (time.time(), ack.key_id, ack.seq)
        )
        await self._db.commit()

    async def undelivered_acks(self) -> list[bytes]:
        async with self._db.execute("SELECT record FROM ack WHERE delivered_at IS NULL") as cursor:
            return [bytes(row[0]) for row in await cursor.fetchall()]
