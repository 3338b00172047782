"""Reading the message journal, newest first, paged back by journal sequence (a cursor)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from relay.api.permissions import Action
from relay.api.tokens import Operator
from relay.journal import MAX_SEQ

if TYPE_CHECKING:
    from relay.api.app import ApiContext

Require = Callable[[Action], Callable[[Request], Awaitable[Operator]]]


class MessageOut(BaseModel):
    bundle_id: str
    origin: str
    destination: str
    kind: int
    priority: str
    created: float
    received: float
    text: str
    seq: int = Field(description="journal sequence (a cursor)")


def messages_router(ctx: ApiContext, require: Require) -> APIRouter:
    router = APIRouter(prefix="/api/v1/messages", tags=["messages"])

    @router.get("", dependencies=[Depends(require(Action.READ_MESSAGES))])
    async def list_messages(
        before: Annotated[
            int | None, Query(ge=1, le=MAX_SEQ, description="page back: the last page's lowest seq")
        ] = None,
        origin: Annotated[str | None, Query(max_length=32)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[MessageOut]:
        found = await ctx.journal.messages(before=before, origin=origin, limit=limit)
        return [MessageOut(**asdict(m)) for m in found]

    return router
