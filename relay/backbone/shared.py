"""Messages and unit sightings that cross the backbone beside the record events.

These need no fold: the journal's own writes already give one result whatever the order and however
often they arrive. A message is kept once by its bundle id; a unit keeps the latest time it was
heard and its newest position fix (:meth:`relay.journal.Journal.heard`). Each is published with an
id from its content, so the same message or the same sighting is one event wherever it comes from.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

from relay.journal import MessageEntry, UnitEntry
from relay.position import InvalidPositionError, Position


class SharedError(ValueError):
    """A shared message or sighting that cannot be read."""


@dataclass(frozen=True, slots=True)
class Shared:
    event_id: str
    kind: Literal["message", "unit"]
    item: dict[str, Any]  # the journal entry's fields, without the local journal sequence

    def encode(self) -> bytes:
        return json.dumps({"event_id": self.event_id, "kind": self.kind, "item": self.item}).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Shared:
        try:
            data = json.loads(raw)
            kind = data["kind"]
            if kind not in ("message", "unit") or not isinstance(data["item"], dict):
                raise ValueError(f"kind {kind!r}")
            return cls(str(data["event_id"]), kind, data["item"])
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise SharedError(f"not a shared message or sighting: {exc}") from None

    def message(self) -> MessageEntry:
        try:
            return MessageEntry(**{**self.item, "seq": 0})
        except TypeError as exc:
            raise SharedError(f"not a message: {exc}") from None

    def sighting(self) -> tuple[UnitEntry, Position | None]:
        """The unit and its position fix (None if the post that saw it had none)."""
        try:
            unit = UnitEntry(**{**self.item, "seq": 0})
            if unit.fixed is None or unit.lat is None or unit.lon is None:
                return unit, None
            return unit, Position(unit.lat, unit.lon, int(unit.fixed), unit.accuracy_m)
        except (TypeError, InvalidPositionError) as exc:
            raise SharedError(f"not a unit sighting: {exc}") from None


def shared_message(entry: MessageEntry) -> Shared:
    item = {k: v for k, v in asdict(entry).items() if k != "seq"}
    return Shared(f"message:{entry.bundle_id}", "message", item)


def shared_unit(entry: UnitEntry) -> Shared:
    item = {k: v for k, v in asdict(entry).items() if k != "seq"}
    return Shared(f"unit:{entry.node_id}:{entry.last_heard!r}:{entry.fixed!r}", "unit", item)
