"""Where the store's SQLite work runs: on its own thread through the loop's ``run_in_executor``, so
the simulator's loop (relay/sim/loop.py) runs all of it inline; a lone put commits on the event loop
(no thread hops), durably, and never while the store's thread is using the connection; work a
cancelled caller left queued still runs and stops counting as busy, so lone puts go back to the
loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

from relay.bundle import Bundle, Destination, Priority
from relay.sim.loop import InlineExecutorLoop
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


def trace_threads(store: Store) -> list[str]:
    """The names of the threads the store's transactions run on, in order, from now on."""
    threads: list[str] = []
    transaction = store._transaction

    def traced(batch, db, **options):  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread().name)
        return transaction(batch, db, **options)

    store._transaction = traced  # type: ignore[method-assign]
    return threads


def test_on_the_simulators_loop_every_transaction_runs_inline(tmp_path: Path) -> None:
    threads: list[list[str]] = []

    async def scenario() -> None:
        store = await Store.open(tmp_path / "s.db")
        threads.append(trace_threads(store))
        assert await store.put_many([make(1), make(2)], now=1000) == [True, True]  # a batch, not lone
        await store.delete(make(1).id, "forwarded")
        assert [s.bundle for s in await store.load_all()] == [make(2)]
        await store.close()

    with asyncio.Runner(loop_factory=InlineExecutorLoop) as runner:
        runner.run(scenario())
    assert threads == [[threading.current_thread().name] * 2]


def test_on_the_simulators_loop_a_write_the_writer_would_take_alone_commits_in_its_callers_turn(
    tmp_path: Path,
) -> None:
    """The writer waits with nothing queued and no callback is ready: it would run next and take the
    op alone, so the op commits without waking it, durably. Otherwise it goes to the writer, which
    takes what was queued meanwhile in one transaction, as on any loop."""
    path = tmp_path / "s.db"
    batches: list[int] = []

    async def scenario() -> None:
        store = await Store.open(path)
        transaction = store._transaction

        def traced(batch, db, **options):  # type: ignore[no-untyped-def]
            batches.append(len(batch))
            return transaction(batch, db, **options)

        store._transaction = traced  # type: ignore[method-assign]
        await asyncio.sleep(0)  # the writer starts waiting
        waiting = store._wake
        assert await store.put(make(1), now=1000) is True
        assert store._wake is waiting  # never woken
        assert committed(path) == 1
        assert await asyncio.gather(*(store.put(make(i), now=1000) for i in range(2, 7))) == [True] * 5
        assert store._wake is not waiting  # the burst woke the writer: one transaction
        asyncio.get_running_loop().call_soon(lambda: None)  # a callback is ready: not the writer's turn next
        waiting = store._wake
        await store.delete(make(1).id, "forwarded")
        assert store._wake is not waiting
        assert committed(path) == 5
        await store.close()

    with asyncio.Runner(loop_factory=InlineExecutorLoop) as runner:
        runner.run(scenario())
    assert batches == [1, 5, 1]


async def test_work_left_by_a_cancelled_caller_runs_and_untracks(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "s.db")

    def slow(db: sqlite3.Connection) -> None:
        time.sleep(0.2)

    def count(db: sqlite3.Connection) -> int:
        return int(db.execute("SELECT count(*) FROM bundles").fetchone()[0])

    busy = asyncio.create_task(store._call(slow))
    await asyncio.sleep(0.05)  # slow runs on the thread; count waits behind it
    queued = asyncio.create_task(store._call(count))
    await asyncio.sleep(0)
    queued.cancel()
    await busy
    await store._call(lambda db: None)  # after the cancelled caller's work, in the thread's order
    assert not store._on_thread
    threads = trace_threads(store)
    assert await store.put(make(1), now=1000) is True
    assert threads == [threading.current_thread().name]  # lone, on the loop again
    await store.close()


async def test_a_lone_put_commits_on_the_loop_and_is_durable_when_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await Store.open(path)
    threads = trace_threads(store)
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
