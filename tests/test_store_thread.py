"""Where the store's SQLite work runs: on its own thread through the loop's ``run_in_executor``, so
the simulator's loop (relay/sim/loop.py) runs all of it inline; work a cancelled caller left queued
still runs and stops counting as busy, so lone puts go back to the loop."""

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


def test_on_the_simulators_loop_every_transaction_runs_inline(tmp_path: Path) -> None:
    threads: list[str] = []

    async def scenario() -> None:
        store = await Store.open(tmp_path / "s.db")
        transaction = store._transaction

        def traced(batch, db):  # type: ignore[no-untyped-def]
            threads.append(threading.current_thread().name)
            return transaction(batch, db)

        store._transaction = traced  # type: ignore[method-assign]
        assert await store.put_many([make(1), make(2)], now=1000) == [True, True]  # a batch, not lone
        await store.delete(make(1).id, "forwarded")
        assert [s.bundle for s in await store.load_all()] == [make(2)]
        await store.close()

    with asyncio.Runner(loop_factory=InlineExecutorLoop) as runner:
        runner.run(scenario())
    assert threads == [threading.current_thread().name] * 2


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
    threads: list[str] = []
    transaction = store._transaction

    def traced(batch, db):  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread().name)
        return transaction(batch, db)

    store._transaction = traced  # type: ignore[method-assign]
    assert await store.put(make(1), now=1000) is True
    assert threads == [threading.current_thread().name]  # lone, on the loop again
    await store.close()
