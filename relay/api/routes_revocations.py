"""Revocations on a running deployment: the authority's signed list in, flooded to every node.

``POST /api/v1/revocations`` (admin only) takes the list's bytes exactly as the authority wrote them
(``application/octet-stream``; ``mesh112 authority revoke --via`` sends them). The node checks the
authority's signature, applies the list at once (sessions of revoked nodes cut, their frames, API
tokens and streams refused) and floods it to every node as a FLASH bundle. ``GET`` says which list
the node holds and what revoked or hostile peers have tried since it started; the same figures are
in ``/metrics`` as ``mesh112_security_events_total{what=...}`` and ``mesh112_revocation_serial``.

``POST /api/v1/group-keys`` (admin only) carries the group keys the authority rotated after a
revocation: each is already sealed to its member and signed by the authority, so the node only
sends each to its member as an IMMEDIATE ``GROUP_KEY`` bundle.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from crypto.certificate import RevocationList
from crypto.errors import CryptoError
from crypto.identity import display_id
from relay.api.permissions import Action
from relay.api.tokens import Operator
from relay.bundle import Destination, Kind, Priority
from relay.engine import REVOCATION_LIFETIME_S, SendError

if TYPE_CHECKING:
    from relay.api.app import ApiContext

log = logging.getLogger(__name__)

Require = Callable[[Action], Callable[[Request], Awaitable[Operator]]]


class RevocationsOut(BaseModel):
    serial: int | None = Field(description="serial of the list this node holds; null if none")
    revoked: list[str] = Field(description="node ids (hex) the list revokes")
    bundle_id: str | None = Field(default=None, description="the FLASH bundle carrying it (POST only)")
    security: dict[str, int] = Field(description="what revoked or hostile peers tried, by kind")


class WrappedKey(BaseModel):
    node: str = Field(pattern=r"^[0-9a-f]{32}$", description="the member's node id (hex)")
    wrapped: str = Field(
        max_length=1024,
        pattern=r"^[A-Za-z0-9+/]+={0,2}$",
        description="base64: the key sealed to it by the authority",
    )


class GroupKeysIn(BaseModel):
    keys: list[WrappedKey] = Field(min_length=1, max_length=200)


class GroupKeysOut(BaseModel):
    bundle_ids: list[str] = Field(description="one IMMEDIATE GROUP_KEY bundle per key, in order")


def revocations_router(ctx: ApiContext, require: Require) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["trust"])

    def out(bundle_id: str | None = None) -> RevocationsOut:
        held = ctx.revocations()
        return RevocationsOut(
            serial=None if held is None else held.serial,
            revoked=[] if held is None else [entry.node_id.hex() for entry in held.entries],
            bundle_id=bundle_id,
            security=asdict(ctx.node.security),
        )

    @router.get("/revocations", dependencies=[Depends(require(Action.READ_LINKS))])
    async def held() -> RevocationsOut:
        return out()

    revoker = Depends(require(Action.REVOKE))

    @router.post("/revocations", status_code=202)
    async def publish(
        request: Request,
        operator: Operator = revoker,  # a default, not Annotated: this module's annotations are strings
    ) -> RevocationsOut:
        """Body: the signed revocation list (``revocations.bin`` of the authority directory)."""
        try:
            revocations = RevocationList.decode(await request.body())
            bundle_id = await ctx.node.publish_revocations(revocations)
        except CryptoError as exc:
            raise HTTPException(422, f"revocation list refused: {exc}") from None
        log.warning(
            "%s published revocation list serial %d (%s)",
            operator.display,
            revocations.serial,
            ", ".join(display_id(entry.node_id) for entry in revocations.entries) or "empty",
        )
        return out(bundle_id.key().hex())

    @router.post("/group-keys", status_code=202, dependencies=[revoker])
    async def group_keys(body: GroupKeysIn) -> GroupKeysOut:
        """Each key to its member (``mesh112 authority revoke --via`` sends the rotated keys)."""
        sent = []
        for entry in body.keys:
            try:
                wrapped = base64.b64decode(entry.wrapped, validate=True)
                bundle_id = await ctx.node.send(
                    Destination.to_node(bytes.fromhex(entry.node)),
                    wrapped,
                    kind=Kind.GROUP_KEY,
                    priority=Priority.IMMEDIATE,
                    lifetime=REVOCATION_LIFETIME_S,
                )
            except (ValueError, CryptoError, SendError) as exc:  # bad base64, unknown node
                raise HTTPException(422, f"group key for node {entry.node} not sent: {exc}") from None
            sent.append(bundle_id.key().hex())
        log.warning("%d rotated group key(s) sent to their members", len(sent))
        return GroupKeysOut(bundle_ids=sent)

    return router
