"""The journal's roster of units: last position by fix time, and journals from before positions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from relay.bundle import EPOCH_UNIX
from relay.journal import Journal
from relay.position import Position

T0 = EPOCH_UNIX + 50_000_000


async def test_a_late_older_fix_does_not_move_the_unit_back(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        await journal.heard("aa", name="Responder 1", roles=["responder"], at=T0)
        [unit] = await journal.units()
        assert (unit.lat, unit.lon, unit.fixed, unit.accuracy_m) == (None, None, None, None)

        newer = Position(52.52, 13.40, T0 + 60, accuracy_m=8)
        older = Position(52.00, 13.00, T0 + 30, accuracy_m=3)
        await journal.heard("aa", name="Responder 1", roles=["responder"], at=T0 + 61, position=newer)
        await journal.heard("aa", name="Responder 1", roles=["responder"], at=T0 + 90, position=older)
        await journal.heard("aa", name="Responder 1", roles=["responder"], at=T0 + 95)  # a text: no fix
        [unit] = await journal.units()
        assert (unit.lat, unit.lon, unit.fixed, unit.accuracy_m) == (52.52, 13.40, T0 + 60, 8)
        assert unit.last_heard == T0 + 95

        newest = Position(52.53, 13.41, T0 + 120)
        await journal.heard("aa", name="Responder 1", roles=["responder"], at=T0 + 121, position=newest)
        [unit] = await journal.units()
        assert (unit.lat, unit.lon, unit.fixed, unit.accuracy_m) == (52.53, 13.41, T0 + 120, None)
    finally:
        await journal.close()


async def test_a_journal_from_before_fix_times_opens_and_keeps_its_units(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    old = sqlite3.connect(path)
    old.execute(
        """CREATE TABLE units (node_id TEXT PRIMARY KEY, name TEXT NOT NULL, roles TEXT NOT NULL,
           last_heard REAL NOT NULL, lat REAL, lon REAL)"""
    )
    old.execute("INSERT INTO units VALUES ('bb', 'Old Unit', '[\"responder\"]', ?, 48.1, 11.5)", (T0,))
    old.commit()
    old.close()

    journal = await Journal.open(path)
    try:
        [unit] = await journal.units()
        assert (unit.name, unit.lat, unit.lon, unit.fixed) == ("Old Unit", 48.1, 11.5, None)
        await journal.heard(
            "bb", name="Old Unit", roles=["responder"], at=T0 + 5, position=Position(48.2, 11.6, T0)
        )
        [unit] = await journal.units()
        assert (unit.lat, unit.lon, unit.fixed) == (48.2, 11.6, T0)
    finally:
        await journal.close()
    reopened = await Journal.open(path)  # migrating twice is a no-op
    try:
        assert [u.fixed for u in await reopened.units()] == [T0]
    finally:
        await reopened.close()
