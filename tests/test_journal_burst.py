"""A burst of deliveries into the journal: what ``record_burst`` reports stored, and the live events."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from threading import current_thread
from typing import Any

import pytest

from relay.bundle import EPOCH_UNIX
from relay.journal import (
    Change,
    Journal,
    JournalClosedError,
    MessageEntry,
    RecordEntry,
    UnitHeard,
    UnknownRecordError,
)
from relay.position import Position

T0 = EPOCH_UNIX + 50_000_000


def _message(index: int) -> MessageEntry:
    return MessageEntry(f"{index:044x}", "aa" * 16, "node:bb", 3, "PRIORITY", T0, T0 + 1, f"text {index}")


async def test_a_burst_reports_only_the_messages_it_stored_with_their_seq(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        unit = UnitHeard("aa" * 16, "Responder 1", ["responder"], T0 + 1)
        _, first = await journal.record_burst([unit], [_message(i) for i in range(5)])
        assert [m.text for m in first] == [f"text {i}" for i in range(5)]
        held = {m.bundle_id: m for m in await journal.messages()}
        assert first == [held[m.bundle_id] for m in first]  # the seq each got, as the journal has it
        # Delivered again (a crash before the store's ack): the held ones are not reported twice.
        _, again = await journal.record_burst([unit], [_message(i) for i in range(3, 8)])
        assert [m.text for m in again] == ["text 5", "text 6", "text 7"]
        held = {m.bundle_id: m for m in await journal.messages()}
        assert again == [held[m.bundle_id] for m in again]
        assert len(held) == 8
        _, none = await journal.record_burst([unit], [_message(i) for i in range(8)])
        assert none == []
    finally:
        await journal.close()


async def test_a_burst_inserts_its_messages_a_hundred_to_a_statement(tmp_path: Path) -> None:
    """A command post's burst (a frame batch's worth) is a few INSERTs, not one per message; the
    messages held already are skipped and not reported, in every statement."""
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    statements: list[str] = []
    try:
        await journal.record_burst([], [_message(i) for i in range(0, 250, 50)])  # 0, 50, ... 200
        await journal._call(lambda db: db.set_trace_callback(statements.append))
        _, stored = await journal.record_burst([], [_message(i) for i in range(250)])
        inserts = [sql for sql in statements if sql.startswith("INSERT")]
        assert len(inserts) == 3  # 100, 100 and 50 rows
        assert [m.text for m in stored] == [f"text {i}" for i in range(250) if i % 50]
        held = {m.bundle_id: m for m in await journal.messages(limit=1000)}
        assert len(held) == 250 and stored == [held[m.bundle_id] for m in stored]
    finally:
        await journal.close()


async def test_a_message_event_carries_every_field_of_the_stored_message(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        _, [stored] = await journal.record_burst([], [_message(1)])
        event = Change(stored.seq, "message", stored).event()
        assert event["item"] == asdict(stored)
        assert (event["type"], event["seq"], event["bundle_id"], event["text"]) == (
            "message",
            stored.seq,
            stored.bundle_id,
            "text 1",
        )
    finally:
        await journal.close()


async def test_a_burst_reports_each_unit_as_stored_in_the_order_heard(tmp_path: Path) -> None:
    """Several units in one burst come back in the order given, each as the journal holds it: a
    unit heard again without a fix keeps its earlier position."""
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        fix = Position(48.2, 16.37, int(T0), 5)
        await journal.record_burst([UnitHeard("cc" * 16, "Camera 1", ["camera"], T0, fix)], [])
        heard = [
            UnitHeard("dd" * 16, "Responder 2", ["responder"], T0 + 2),
            UnitHeard("cc" * 16, "Camera 1", ["camera"], T0 + 2),
            UnitHeard("aa" * 16, "Responder 1", ["responder"], T0 + 2),
        ]
        stored, _ = await journal.record_burst(heard, [])
        assert [u.node_id for u in stored] == [u.node_id for u in heard]
        assert stored == [{u.node_id: u for u in await journal.units()}[u.node_id] for u in heard]
        assert (stored[1].lat, stored[1].lon, stored[1].last_heard) == (48.2, 16.37, T0 + 2)
        assert stored[0].lat is None
    finally:
        await journal.close()


async def test_a_burst_is_one_trip_to_the_journals_own_thread(tmp_path: Path) -> None:
    """Every statement of a burst runs on the journal's own thread, in one trip there: each trip
    waits for that thread and then for a busy event loop (issue 15)."""
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    threads: list[str] = []
    await journal._call(lambda db: db.set_trace_callback(lambda _: threads.append(current_thread().name)))
    trips = 0
    call = journal._call

    async def counted(work: Callable[[sqlite3.Connection], Any]) -> Any:
        nonlocal trips
        trips += 1
        return await call(work)

    try:
        journal._call = counted  # type: ignore[method-assign]
        unit = UnitHeard("aa" * 16, "Responder 1", ["responder"], T0 + 1)
        await journal.record_burst([unit], [_message(i) for i in range(5)])
        await journal.record_burst([unit], [_message(i) for i in range(3, 8)])  # some held: read back
        assert trips == 2
        assert threads and {name.split("_")[0] for name in threads} == {"journal:journal.sqlite3"}
    finally:
        journal._call = call  # type: ignore[method-assign]
        await journal.close()
    await journal.close()  # a second close does nothing
    with pytest.raises(JournalClosedError):
        await journal.messages()


async def test_two_acknowledgements_at_once_both_stay(tmp_path: Path) -> None:
    """An acknowledgement is read, appended and written in one trip: two at once do not overwrite
    each other."""
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        record = RecordEntry("alarm-1", "alarm", "aa" * 16, "FLASH", T0, T0 + 1, {"text": "fire"})
        await journal.put_record(record)
        await asyncio.gather(
            journal.add_ack("alarm-1", {"by": "dispatcher 1", "at": T0 + 2}),
            journal.add_ack("alarm-1", {"by": "dispatcher 2", "at": T0 + 3}, close=True),
        )
        stored = await journal.record("alarm-1")
        assert [ack["by"] for ack in stored.acks] == ["dispatcher 1", "dispatcher 2"]
        assert stored.closed == T0 + 3
        with pytest.raises(UnknownRecordError):
            await journal.add_ack("alarm-2", {"by": "dispatcher 1", "at": T0 + 4})
    finally:
        await journal.close()
