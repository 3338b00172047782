"""The journal's indexes are the ones its queries read: each costs every message written an entry."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from relay.bundle import EPOCH_UNIX
from relay.journal import Journal, MessageEntry

T0 = EPOCH_UNIX + 50_000_000


def _indexes(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {
            row[0]
            for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        }
    finally:
        db.close()


async def test_messages_are_indexed_by_seq_alone_and_an_older_journal_loses_its_arrival_index(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.sqlite3"
    journal = await Journal.open(path)
    await journal.add_message(
        MessageEntry("b1" * 22, "aa" * 16, "node:bb", 1, "PRIORITY", T0, T0 + 1, "first")
    )
    await journal.close()
    assert {"messages_seq", "records_seq", "units_seq", "records_type"} == _indexes(path)
    old = sqlite3.connect(path)  # a journal written before: messages also indexed by arrival time
    old.execute("CREATE INDEX messages_received ON messages(received)")
    old.commit()
    old.close()
    journal = await Journal.open(path)
    try:
        assert "messages_received" not in _indexes(path)
        await journal.add_message(
            MessageEntry("b2" * 22, "aa" * 16, "node:bb", 1, "PRIORITY", T0, T0 + 2, "second")
        )
        assert [m.text for m in await journal.messages()] == ["second", "first"]
    finally:
        await journal.close()
