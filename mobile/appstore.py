"""The app's own SQLite file beside the node's store: the SOS and my messages, so a restart shows them.

The SOS row is written (and fsynced, :mod:`relay.sqlite`) the moment the responder confirms, before
the bundle is made; after a crash a row with no bundle is sent again under the same number, which
the command post counts once. The bundles themselves live in the node's store.
"""

from __future__ import annotations

from pathlib import Path

import aiosqlite

from mobile.state import Delivery, Message, Sos, SosPhase
from relay import sqlite
from relay.bundle import Priority

APP_FILE = "app.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sos (
    number INTEGER PRIMARY KEY, phase TEXT NOT NULL, raised REAL NOT NULL, lat REAL, lon REAL,
    bundle TEXT NOT NULL DEFAULT '', ack TEXT NOT NULL DEFAULT '', durable_ms REAL
);
CREATE TABLE IF NOT EXISTS message (
    bundle TEXT PRIMARY KEY, outgoing INTEGER NOT NULL, peer TEXT NOT NULL, text TEXT NOT NULL,
    at REAL NOT NULL, state TEXT NOT NULL, priority INTEGER NOT NULL
);
"""
MESSAGES_KEPT = 200  # shown after a restart; older ones stay in the command post's journal


class AppStore:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def open(cls, directory: Path) -> AppStore:
        db = await sqlite.connect(directory / APP_FILE)
        await db.executescript(_SCHEMA)
        await db.commit()
        return cls(db)

    async def close(self) -> None:
        await self._db.close()

    async def put_sos(self, sos: Sos) -> None:
        await self._db.execute(
            "INSERT OR REPLACE INTO sos VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (sos.number, sos.phase.value, sos.raised, sos.lat, sos.lon, sos.bundle, sos.ack, sos.durable_ms),
        )
        await self._db.commit()

    async def latest_sos(self) -> Sos | None:
        rows = list(await self._db.execute_fetchall("SELECT * FROM sos ORDER BY number DESC LIMIT 1"))
        if not rows:
            return None
        number, phase, raised, lat, lon, bundle, ack, durable_ms = rows[0]
        return Sos(number, SosPhase(phase), raised, lat, lon, bundle, ack, durable_ms)

    async def next_sos_number(self) -> int:
        rows = list(await self._db.execute_fetchall("SELECT max(number) FROM sos"))
        return (rows[0][0] or 0) % 0xFFFF + 1

    async def put_message(self, message: Message) -> None:
        await self._db.execute(
            "INSERT OR REPLACE INTO message VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                message.bundle,
                int(message.outgoing),
                message.peer,
                message.text,
                message.at,
                message.state.value,
                int(message.priority),
            ),
        )
        await self._db.commit()

    async def messages(self) -> list[Message]:
        rows = await self._db.execute_fetchall(
            "SELECT * FROM (SELECT * FROM message ORDER BY at DESC LIMIT ?) ORDER BY at", (MESSAGES_KEPT,)
        )
        return [
            Message(bundle, bool(out), peer, text, at, Delivery(state), Priority(priority))
            for bundle, out, peer, text, at, state, priority in rows
        ]
