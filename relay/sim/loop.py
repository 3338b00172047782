"""The simulator's event loop: an asyncio loop that runs blocking calls inline instead of on a thread.

A node's store hands its SQLite work to ``loop.run_in_executor`` (the store's own thread), so the
node's event loop keeps serving links while a transaction commits. The simulator waits for every
engine call to finish before it takes the next event, so that thread buys it nothing and costs a
thread switch there and back plus a wake-up of the loop per transaction: with many stores on a
busy machine, a quarter to a third of a run. On this loop the call runs at once on the loop's
thread: the same SQL, the same transactions and commits (``synchronous=FULL``), in the same order.

Nothing in a simulation waits on a socket or a pipe, so the loop's poll between callbacks (an
``epoll_wait`` system call on every turn with callbacks ready, 3 % of a run) is skipped; a poll that
would wait still goes to the real selector.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar, TypeVarTuple, Unpack

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class _ReadySelector(selectors.DefaultSelector):
    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout == 0:
            return []  # callbacks are ready: asyncio only looks for I/O, and there is none
        return super().select(timeout)


class InlineExecutorLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        super().__init__(_ReadySelector())

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

    def nothing_ready(self) -> bool:
        """No callback waits for its turn: a task woken now is the next to run. A store whose
        writer would take only the op being queued commits it in its caller's turn then
        (``Store._writer_next_alone``): the same transaction, without two turns of the loop."""
        return not self._ready  # type: ignore[attr-defined]  # BaseEventLoop's queue of ready callbacks
