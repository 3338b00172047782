"""Records (alarms, detections) for operators: the open queue, history by cursor, acknowledgements.

The open queue is what a dispatcher works from: every record no acknowledgement has closed, highest
priority first and oldest first, however much traffic came after it. An acknowledgement names an
action (``received``, ``dispatched``, ``en_route``, ``on_scene``, ``false_alarm``, ``cancelled`` or
free text) and may close the record; the application that owns the record type carries it back
(NG112: a CAP Ack to the building), and the bundle it sent is kept with the acknowledgement so the
console can show whether it reached the building.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from relay.api.permissions import Action, allowed
from relay.api.tokens import Operator
from relay.bundle import BundleId
from relay.journal import MAX_SEQ, Change, RecordEntry, UnknownRecordError

if TYPE_CHECKING:
    from relay.api.app import ApiContext

Require = Callable[[Action], Callable[[Request], Awaitable[Operator]]]


def record_scope(operator: Operator) -> str | None:
    """Whose records the operator may read: None for all of them (dispatchers, observers), else the
    hex node id whose records only (a building operator signs in as its building's gateway node)."""
    return None if allowed(operator.roles, Action.READ_RECORDS) else operator.node_id.hex()


def event_filter(operator: Operator) -> Callable[[dict[str, Any]], bool]:
    """Which stream events the operator sees: everything it may read; a building only its records."""
    own = record_scope(operator)
    if own is None:
        return lambda event: True
    return lambda event: event.get("type") in ("record", "lagging") and event.get("origin") in (None, own)


class AckRecord(BaseModel):
    action: str = Field(min_length=1, max_length=200, description="what the command post is doing")
    close: bool = Field(default=False, description="take the record out of the open queue")


class RecordOut(BaseModel):
    record_id: str
    type: str
    origin: str
    priority: str
    created: float
    received: float
    body: dict[str, Any]
    acks: list[dict[str, Any]]
    seq: int = Field(description="journal sequence of the record's last change (a cursor)")
    closed: float | None = Field(description="when an acknowledgement closed it; null while open")


def _out(entry: RecordEntry) -> RecordOut:
    return RecordOut(**asdict(entry))


def records_router(ctx: ApiContext, require: Require) -> APIRouter:
    router = APIRouter(prefix="/api/v1/records", tags=["records"])
    reader = Depends(require(Action.READ_OWN_RECORDS))  # a building: its own records only
    acker = Depends(require(Action.ACK_RECORD))

    @router.get("")
    async def records(
        operator: Operator = reader,
        type: Annotated[str | None, Query(max_length=32)] = None,
        before: Annotated[
            int | None, Query(ge=1, le=MAX_SEQ, description="page back: the last page's lowest seq")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[RecordOut]:
        """Records by their last change, newest first."""
        found = await ctx.journal.records(
            type=type, before=before, limit=limit, origin=record_scope(operator)
        )
        return [_out(r) for r in found]

    @router.get("/latest")
    async def latest_records(
        type: Annotated[str, Query(max_length=32)],
        operator: Operator = reader,
        limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    ) -> list[RecordOut]:
        """Each unit's newest record of ``type`` (by creation), newest first: its current state."""
        found = await ctx.journal.latest_by_origin(type=type, limit=limit, origin=record_scope(operator))
        return [_out(r) for r in found]

    @router.get("/open")
    async def open_records(
        operator: Operator = reader,
        type: Annotated[str | None, Query(max_length=32)] = None,
        limit: Annotated[int, Query(ge=1, le=5000)] = 5000,
    ) -> list[RecordOut]:
        """Every record not closed yet, highest priority first, then oldest first."""
        found = await ctx.journal.open_records(type=type, limit=limit, origin=record_scope(operator))
        return [_out(r) for r in found]

    @router.get("/{record_id}")
    async def record(
        record_id: Annotated[str, Path(max_length=128)], operator: Operator = reader
    ) -> RecordOut:
        try:
            entry = await ctx.journal.record(record_id)
        except UnknownRecordError as exc:
            raise HTTPException(404, str(exc)) from None
        if record_scope(operator) not in (None, entry.origin):
            raise HTTPException(404, f"no record {record_id!r} of {operator.display}")
        return _out(entry)

    @router.post("/{record_id}/ack")
    async def ack_record(
        record_id: Annotated[str, Path(max_length=128)],
        body: AckRecord,
        operator: Operator = acker,  # a default, not Annotated: this module's annotations are strings
    ) -> RecordOut:
        """Acknowledge (and perhaps close) a record; the owning application carries it back."""
        ack: dict[str, Any] = {"operator": operator.display, "action": body.action, "at": time.time()}
        try:
            entry = await ctx.journal.record(record_id)
        except UnknownRecordError as exc:
            raise HTTPException(404, str(exc)) from None
        hook = ctx.ack_hooks.get(entry.type)
        if hook is not None:
            try:
                sent = await hook(entry.record_id, ack)
            except ValueError as exc:  # the application refused the action (e.g. all blank)
                raise HTTPException(422, str(exc)) from None
            if isinstance(sent, BundleId):
                ack["bundle_id"] = sent.key().hex()
        ack["state"] = "sent" if hook is not None else "recorded"
        entry = await ctx.journal.add_ack(record_id, ack, close=body.close)
        ctx.hub.publish(Change(entry.seq, "record", entry).event())
        return _out(entry)

    return router
