"""A record's state as the fold of its events, the same at every post whatever the arrival order.

Command posts learn of an alarm (or any journal record) from different places: the building's
bundle, another post over the backbone, a replay after a cut link. Each change is an event with a
globally unique id: the record was *raised*, its body *updated*, an operator *acknowledged* it with
a code, or it was *closed*. The state merges events with three rules that are each commutative,
associative and idempotent, so any permutation or repetition of one set of events gives one state:

* the body is the latest write, latest by ``(at, event_id)`` (a total order every post agrees on);
* acknowledgements are a set, listed by ``(at, event_id)``;
* closed is the earliest close, and stays closed.

Sans I/O: the backbone adapter (:mod:`relay.backbone.post`) feeds events in and writes states out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    RAISED = "raised"
    UPDATED = "updated"
    ACKNOWLEDGED = "acknowledged"
    CLOSED = "closed"


class EventError(ValueError):
    """An event that cannot be folded (missing fields, an id reused for different content)."""


@dataclass(frozen=True, slots=True)
class RecordEvent:
    """One change to one record. ``event_id`` is unique across the region (a bundle id, or the
    publishing post's name and journal sequence); ``at`` is when it happened at its source."""

    event_id: str
    record_id: str
    kind: EventKind
    at: float
    post: str  # the command post that published it
    type: str = ""  # raised/updated: the record type ("alarm", "detection", ...)
    origin: str = ""  # raised/updated: the node the record came from (hex)
    priority: str = "ROUTINE"
    body: Mapping[str, Any] = field(default_factory=dict)  # raised/updated: the record body
    code: str = ""  # acknowledged: the action code or text
    operator: str = ""  # acknowledged/closed: who

    def order(self) -> tuple[float, str]:
        return (self.at, self.event_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "record_id": self.record_id,
            "kind": self.kind.value,
            "at": self.at,
            "post": self.post,
            "type": self.type,
            "origin": self.origin,
            "priority": self.priority,
            "body": dict(self.body),
            "code": self.code,
            "operator": self.operator,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RecordEvent:
        try:
            return cls(
                event_id=str(data["event_id"]),
                record_id=str(data["record_id"]),
                kind=EventKind(data["kind"]),
                at=float(data["at"]),
                post=str(data["post"]),
                type=str(data.get("type", "")),
                origin=str(data.get("origin", "")),
                priority=str(data.get("priority", "ROUTINE")),
                body=dict(data.get("body") or {}),
                code=str(data.get("code", "")),
                operator=str(data.get("operator", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EventError(f"not a record event: {exc}") from None

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> RecordEvent:
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EventError(f"not a record event: {exc}") from None
        if not isinstance(data, dict):
            raise EventError("not a record event: expected a JSON object")
        return cls.from_json(data)


@dataclass(frozen=True, slots=True)
class Ack:
    event_id: str
    at: float
    post: str
    code: str
    operator: str


@dataclass(frozen=True, slots=True)
class RecordState:
    """What every post shows for a record once it has seen the same events."""

    record_id: str
    type: str = ""
    origin: str = ""
    priority: str = "ROUTINE"
    created: float | None = None  # when it was raised; None while only later events arrived
    body: Mapping[str, Any] = field(default_factory=dict)
    body_from: tuple[float, str] | None = None  # the (at, event_id) the body came from
    acks: tuple[Ack, ...] = ()
    closed: float | None = None
    events: frozenset[str] = frozenset()

    def merge(self, event: RecordEvent) -> RecordState:
        """This state with ``event`` folded in (itself if the event was seen already)."""
        if event.record_id != self.record_id:
            raise EventError(f"event {event.event_id} is for {event.record_id}, not {self.record_id}")
        if event.event_id in self.events:
            return self
        state = replace(self, events=self.events | {event.event_id})
        if event.kind in (EventKind.RAISED, EventKind.UPDATED):
            if event.kind is EventKind.RAISED and (state.created is None or event.at < state.created):
                state = replace(state, created=event.at)
            if state.body_from is None or event.order() > state.body_from:
                state = replace(
                    state,
                    type=event.type,
                    origin=event.origin,
                    priority=event.priority,
                    body=dict(event.body),
                    body_from=event.order(),
                )
        elif event.kind is EventKind.ACKNOWLEDGED:
            ack = Ack(event.event_id, event.at, event.post, event.code, event.operator)
            state = replace(state, acks=tuple(sorted((*state.acks, ack), key=lambda a: (a.at, a.event_id))))
        elif state.closed is None or event.at < state.closed:
            state = replace(state, closed=event.at)
        return state

    def content(self) -> dict[str, Any]:
        """The state without what is local to one post, as plain JSON."""
        return {
            "record_id": self.record_id,
            "type": self.type,
            "origin": self.origin,
            "priority": self.priority,
            "created": self.created,
            "body": dict(self.body),
            "acks": [
                {"event_id": a.event_id, "at": a.at, "post": a.post, "code": a.code, "operator": a.operator}
                for a in self.acks
            ],
            "closed": self.closed,
        }

    def content_hash(self) -> str:
        return _hash(self.content())


def fold(events: Iterable[RecordEvent]) -> dict[str, RecordState]:
    """Every record's state from a bag of events (any order, duplicates allowed)."""
    table = RecordTable()
    for event in events:
        table.apply(event)
    return dict(table.states)


@dataclass
class RecordTable:
    """The folded states of many records, fed one event at a time."""

    states: dict[str, RecordState] = field(default_factory=dict)

    def apply(self, event: RecordEvent) -> RecordState | None:
        """The record's new state, or None if the event was already folded in (nothing changes)."""
        state = self.states.get(event.record_id) or RecordState(event.record_id)
        merged = state.merge(event)
        if merged is state:
            return None
        self.states[event.record_id] = merged
        return merged

    def content_hash(self) -> str:
        """One hash over every record's content: equal at two posts iff their tables agree."""
        return table_hash(state.content() for state in self.states.values())


def table_hash(contents: Iterable[Mapping[str, Any]]) -> str:
    """The hash of a table of record contents (as :meth:`RecordState.content` writes them)."""
    digest = hashlib.sha256()
    for content in sorted(contents, key=lambda c: str(c["record_id"])):
        digest.update(_hash(content).encode())
    return digest.hexdigest()


def _hash(content: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
