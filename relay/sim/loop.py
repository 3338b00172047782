"""The simulator's event loop: an asyncio loop that runs blocking calls inline instead of on a thread.

A node's store hands its SQLite work to ``loop.run_in_executor`` (the store's own thread), so the
node's event loop keeps serving links while a transaction commits. The simulator waits for every
engine call to finish before it takes the next event, so that thread buys it nothing and costs a
thread switch there and back plus a wake-up of the loop per transaction: with many stores on a
busy machine, a quarter to a third of a run. On this loop the call runs at once on the loop's
thread: the same SQL, the same transactions and commits (``synchronous=FULL``), in the same order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar, TypeVarTuple, Unpack

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class InlineExecutorLoop(asyncio.SelectorEventLoop):
    def run_in_executor(
        self, executor: Executor | None, func: Callable[[Unpack[Ts]], T], *args: *Ts
    ) -> asyncio.Future[T]:
        """``func(*args)`` now; its result or exception is in the returned (done) future."""
        future: asyncio.Future[T] = self.create_future()
        try:
            future.set_result(func(*args))
        except Exception as exc:  # the awaiting caller gets it, as from an executor's thread
            future.set_exception(exc)
        return future
