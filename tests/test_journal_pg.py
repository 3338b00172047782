"""The command post's journal on a real PostgreSQL server: the same answers as the SQLite journal,
and several processes writing one journal while a console follows it by cursor, one writer killed
with SIGKILL in the middle: the console misses nothing and sees nothing twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest

from relay.journal import Journal, MessageEntry, RecordEntry
from relay.journal_pg import PgJournal
from relay.position import Position
from tests.pg_server import postgres

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    with postgres() as address:
        yield address


async def exercise(journal: Journal | PgJournal) -> list[Any]:
    """The same writes and reads on either backend; what each answered, without journal sequences
    (one counter per backend, numbered alike here as both start empty)."""
    out: list[Any] = []
    message = MessageEntry("b1", "aa", "bb", 1, "PRIORITY", 10.0, 11.0, "hello")
    out.append(await journal.add_message(message))
    out.append(await journal.add_message(message))  # a re-delivery: None
    out.append(await journal.messages(limit=10))
    record = RecordEntry("alarm/1", "alarm", "aa", "FLASH", 10.0, 12.0, {"summary": "fire", "n": 1})
    out.append(await journal.put_record(record))
    out.append(await journal.put_record(RecordEntry("det/1", "detection", "cc", "IMMEDIATE", 9.0, 9.5, {})))
    out.append(await journal.add_ack("alarm/1", {"operator": "op", "action": "ON-WAY", "at": 13.0}))
    out.append(
        await journal.add_ack("alarm/1", {"operator": "op2", "action": "closed", "at": 14.0}, close=True)
    )
    out.append(await journal.update_ack("alarm/1", 0, {"state": "delivered"}))
    out.append(await journal.open_records())
    out.append(await journal.open_types(("FLASH", "IMMEDIATE")))
    for n, (origin, created) in enumerate((("u1", 50.0), ("u2", 51.0), ("u1", 52.0), ("u1", 49.0))):
        session = RecordEntry(f"webrtc/{n}", "webrtc", origin, "IMMEDIATE", created, 60.0 + n, {"n": n})
        out.append(await journal.put_record(session))
    out.append(await journal.latest_by_origin(type="webrtc"))  # u1's of 52.0 (not the later write), u2's
    out.append(await journal.latest_by_origin(type="webrtc", origin="u2", limit=5))
    out.append(await journal.records(type="alarm"))
    out.append(await journal.records(origin="cc"))
    merged = RecordEntry("alarm/2", "alarm", "dd", "FLASH", 20.0, 21.0, {"v": 2}, [{"at": 22.0}], closed=23.0)
    out.append(await journal.merge_records([merged]))
    # settled from no version, then from the one held: the first is refused (the record was written
    # since), the second written
    out.append(await journal.merge_records([replace(merged, body={"v": 3})]))
    held = await journal.record("alarm/2")
    out.append(await journal.merge_records([replace(merged, body={"v": 4}, seq=held.seq)]))
    fix = Position(50.0, 14.0, 1_800_000_100.0, 5)
    out.append(await journal.heard("aa", name="A", roles=["responder"], at=30.0, position=fix))
    old = Position(49.0, 13.0, 1_800_000_090.0, 9)
    out.append(await journal.heard("aa", name="A", roles=["responder"], at=31.0, position=old))  # older fix
    out.append(await journal.units())
    changes = await journal.changes(0)
    out.append([(c.seq, c.type, c.event()) for c in changes])
    out.append(journal.cursor)
    return out


async def test_postgres_answers_as_sqlite_does(dsn: str, tmp_path: Path) -> None:
    sqlite = await Journal.open(tmp_path / "journal.sqlite3")
    pg = await PgJournal.open(dsn)
    try:
        expected, got = await exercise(sqlite), await exercise(pg)
    finally:
        await sqlite.close()
        await pg.close()
    for index, (want, have) in enumerate(zip(expected, got, strict=True)):
        assert _plain(have) == _plain(want), f"answer {index} differs"
    reopened = await PgJournal.open(dsn)  # the cursor survives a restart
    try:
        assert reopened.cursor == got[-1]
    finally:
        await reopened.close()


async def test_each_units_newest_record_however_many_another_unit_made_since(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        for n in range(150):  # u1's session, then 149 of u2's, then a late copy of an older one of u1's
            origin, created = ("u1", 1000.0) if n == 0 else ("u2", 1000.0 + n)
            entry = RecordEntry(f"webrtc/{n}", "webrtc", origin, "IMMEDIATE", created, created, {"n": n})
            await journal.put_record(entry)
        await journal.put_record(RecordEntry("webrtc/late", "webrtc", "u1", "IMMEDIATE", 999.0, 2000.0, {}))
        latest = await journal.latest_by_origin(type="webrtc")
        assert [(r.origin, r.record_id) for r in latest] == [("u2", "webrtc/149"), ("u1", "webrtc/0")]
    finally:
        await journal.close()


async def test_a_merge_settled_from_an_older_version_leaves_the_record(tmp_path: Path) -> None:
    """The backbone's bridge settles a record from the version it read; an application that wrote
    the record since (an alarm's follow-up) keeps its write."""
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        read = await journal.put_record(RecordEntry("alarm/1", "alarm", "aa", "FLASH", 1.0, 1.0, {"v": 1}))
        newer = await journal.put_record(replace(read, body={"v": 2}))
        assert await journal.merge_records([replace(read, body={"v": 1}, acks=[{"at": 2.0}])]) == []
        assert await journal.record("alarm/1") == newer
        [merged] = await journal.merge_records([replace(newer, acks=[{"at": 2.0}])])
        assert (merged.body, merged.acks) == ({"v": 2}, [{"at": 2.0}])
    finally:
        await journal.close()


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    return value


WRITER = """
import asyncio, sys, time
from relay.journal import MessageEntry
from relay.journal_pg import PgJournal

async def main(dsn, name, count):
    journal = await PgJournal.open(dsn)
    for n in range(count):
        now = time.time()
        await journal.add_message(MessageEntry(f"{name}-{n}", "aa", "post", 1, "PRIORITY", now, now, str(n)))
        print(n, flush=True)
    await journal.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_two_writers_one_killed_the_console_misses_nothing(dsn: str) -> None:
    console = await PgJournal.open(dsn)
    start = console.cursor
    notified: list[int] = []
    follow = asyncio.create_task(console.follow(lambda change: notified.append(change.seq)))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writers = {
        name: subprocess.Popen(
            [sys.executable, "-c", WRITER, dsn, name, "3000"], stdout=subprocess.PIPE, env=env, cwd=REPO
        )
        for name in ("api1", "api2")
    }
    try:
        seen: dict[int, str] = {}
        cursor = start
        killed_after = None
        deadline = time.monotonic() + 60
        while True:
            for change in await console.changes(cursor, 500):
                assert change.seq > cursor  # strictly after: nothing twice, nothing out of order
                cursor = change.seq
                assert isinstance(change.item, MessageEntry)
                seen[change.seq] = change.item.bundle_id
            if killed_after is None and sum(b.startswith("api1-") for b in seen.values()) >= 500:
                writers["api1"].send_signal(signal.SIGKILL)  # one process dies mid-stream
                writers["api1"].wait(10)
                killed_after = len(seen)
            if (
                killed_after is not None
                and writers["api2"].poll() is not None
                and not await console.changes(cursor)
            ):
                break
            assert time.monotonic() < deadline, "writers did not finish within 60 s"
            await asyncio.sleep(0.05)
        assert writers["api2"].returncode == 0
        final = await console.messages(limit=10_000)
        written = {m.bundle_id for m in final if m.bundle_id.startswith(("api1-", "api2-"))}
        assert set(seen.values()) == written  # every committed write was seen once
        assert len(seen) == len(written)
        assert sum(b.startswith("api2-") for b in written) == 3000
        assert 500 <= sum(b.startswith("api1-") for b in written) < 3000
        await asyncio.sleep(0.5)
        assert set(notified) >= set(seen)  # NOTIFY told the console of every write as it happened
    finally:
        for writer in writers.values():
            if writer.poll() is None:
                writer.kill()
            writer.wait(10)
        follow.cancel()
        await asyncio.gather(follow, return_exceptions=True)
        await console.close()
