"""A lone put commits on the event loop (no thread hops), durably, and never while the store's thread
is using the connection: then it waits for the thread like any batch."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

from relay.bundle import Bundle, Destination, Priority
from relay.store import Store

ORIGIN = bytes(range(16))


def make(seq: int) -> Bundle:
    return Bundle(ORIGIN, Destination.everyone(), 1000, seq, 3600, Priority.ROUTINE, 40, b"x" * 100)


def committed(path: Path) -> int:
    """Held bundles another connection sees: only what was committed."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM bundles").fetchone()[0])
    finally:
        db.close()


async def test_a_lone_put_commits_on_the_loop_and_is_durable_when_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await Store.open(path)
    threads: list[str] = []
    transaction = store._transaction

    def traced(batch, db):  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread().name)
        return transaction(batch, db)

    store._transaction = traced  # type: ignore[method-assign]
    assert await store.put(make(1), now=1000) is True
    assert committed(path) == 1
    assert await asyncio.gather(*(store.put(make(i), now=1000) for i in range(2, 12))) == [True] * 10
    assert committed(path) == 11
    main = threading.current_thread().name
    assert threads[0] == main  # the lone put
    assert any(name != main for name in threads[1:])  # the burst went to the store's thread as a batch
    await store.close()


async def test_a_lone_put_waits_while_the_thread_uses_the_connection(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await Store.open(path)
    spans: list[tuple[str, float, float]] = []

    def slow_read(db: sqlite3.Connection) -> int:
        started = time.monotonic()
        count = int(db.execute("SELECT count(*) FROM bundles").fetchone()[0])
        time.sleep(0.2)
        spans.append(("read", started, time.monotonic()))
        return count

    transaction = store._transaction

    def traced(batch, db):  # type: ignore[no-untyped-def]
        started = time.monotonic()
        result = transaction(batch, db)
        spans.append(("put", started, time.monotonic()))
        return result

    store._transaction = traced  # type: ignore[method-assign]
    reading = asyncio.create_task(store._call(slow_read))
    await asyncio.sleep(0.05)  # the read is running on the store's thread
    assert await store.put(make(1), now=1000) is True
    assert await reading == 0  # it never saw the put, committed or not
    span = {name: (start, end) for name, start, end in spans}
    assert span["put"][0] >= span["read"][1]  # one user of the connection at a time
    assert committed(path) == 1
    await store.close()
