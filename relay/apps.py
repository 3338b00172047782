"""The contract between a node and the applications that ride on it.

Everything an application (``ng112``, ``analytics_edge``, ``mobile``, the command post's journal)
may rely on is here, so it builds on one small module instead of reaching into the node:

* :class:`Sender` — what can ``send(destination, payload, …)`` a durable bundle (a :class:`Node`,
  the relay API's adapter, a test's recorder);
* :data:`App` — a field application: a coroutine that gets the running node;
* :class:`CommandPostApp` and :class:`RecordUpdate` — what an application adds to a command post.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from relay.bundle import BundleId, Destination, Priority
from relay.engine import Delivery

if TYPE_CHECKING:
    from relay.node import Node


class Sender(Protocol):
    """Something that sends a bundle and returns its id once the bundle is durable."""

    async def send(
        self, destination: Destination, payload: bytes, *, kind: int, priority: Priority, lifetime: int
    ) -> BundleId: ...


App = Callable[
    ["Node"], Coroutine[Any, Any, None]
]  # a field application riding on the node (gateway, camera)


@dataclass(frozen=True, slots=True)
class RecordUpdate:
    """A record an application wants in the command post's journal (new, or its new state)."""

    record_id: str
    body: dict[str, Any]


class CommandPostApp(Protocol):
    """What an application adds to a command post: its payload kinds, records and acknowledgements.

    Installed applications provide a factory ``(node) -> CommandPostApp`` in the entry-point group
    ``mesh112.command_post``; the relay never imports them. An application may also have a ``router``
    attribute (a FastAPI ``APIRouter`` of read-only routes, e.g. a feed for other systems); the API
    serves it under ``/api/v1/apps/<record_type>/`` to operators who may read records.
    """

    record_type: str
    kinds: Mapping[int, str]

    async def handle(self, delivery: Delivery) -> list[RecordUpdate]: ...

    async def acknowledge(self, record_id: str, ack: dict[str, Any]) -> BundleId | None:
        """Carry an operator's acknowledgement back (e.g. to the building); returns the bundle that
        carries it, whose delivery the console follows, or None if nothing is sent."""
        ...
