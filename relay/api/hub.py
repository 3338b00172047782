"""Fan-out of live events to WebSocket subscribers, with bounded queues.

A subscriber that falls more than ``limit`` events behind is cut off (its queue is closed with a
``lagging`` marker) rather than letting memory grow: the dashboard reconnects and re-reads the
journal, which is the source of truth.
"""

from __future__ import annotations

import asyncio
from typing import Any

LAGGING: dict[str, Any] = {"type": "lagging", "detail": "too slow; reconnect and re-read /api/v1"}
CLIENT_GONE: dict[str, Any] = {"type": "client-gone"}  # a stream's own marker, never published or sent


class EventHub:
    def __init__(self, limit: int = 1000) -> None:
        self._limit = limit
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self._limit + 1)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._queues.discard(queue)

    def publish(self, event: dict[str, Any]) -> None:
        for queue in list(self._queues):
            if queue.qsize() >= self._limit:
                self._queues.discard(queue)
                queue.put_nowait(LAGGING)
            else:
                queue.put_nowait(event)

    @property
    def subscribers(self) -> int:
        return len(self._queues)
