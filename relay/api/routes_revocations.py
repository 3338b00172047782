"""Revocations on a running deployment: the authority's signed list in, flooded to every node.

``POST /api/v1/revocations`` (admin only) takes the list's bytes exactly as the authority wrote them
(``application/octet-stream``; ``mesh112 authority revoke --via`` sends them). The node checks the
authority's signature, applies the list at once (sessions of revoked nodes cut, their frames, API
tokens and streams refused) and floods it to every node as a FLASH bundle. ``GET`` says which list
the node holds and what revoked or hostile peers have tried since it started; the same figures are
in ``/metrics`` as ``mesh112_security_events_total{what=...}`` and ``mesh112_revocation_serial``.
"""

from __future__ import annotations

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

if TYPE_CHECKING:
    from relay.api.app import ApiContext

log = logging.getLogger(__name__)

Require = Callable[[Action], Callable[[Request], Awaitable[Operator]]]


class RevocationsOut(BaseModel):
    serial: int | None = Field(description="serial of the list this node holds; null if none")
    revoked: list[str] = Field(description="node ids (hex) the list revokes")
    bundle_id: str | None = Field(default=None, description="the FLASH bundle carrying it (POST only)")
    security: dict[str, int] = Field(description="what revoked or hostile peers tried, by kind")


def revocations_router(ctx: ApiContext, require: Require) -> APIRouter:
    router = APIRouter(prefix="/api/v1/revocations", tags=["trust"])

    def out(bundle_id: str | None = None) -> RevocationsOut:
        held = ctx.revocations()
        return RevocationsOut(
            serial=None if held is None else held.serial,
            revoked=[] if held is None else [entry.node_id.hex() for entry in held.entries],
            bundle_id=bundle_id,
            security=asdict(ctx.node.security),
        )

    @router.get("", dependencies=[Depends(require(Action.READ_LINKS))])
    async def held() -> RevocationsOut:
        return out()

    revoker = Depends(require(Action.REVOKE))

    @router.post("", status_code=202)
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

    return router
