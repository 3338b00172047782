"""Units for operators: everyone the deployment enrolled, by name, with when each was last heard.

The journal knows the units that sent something; the roster knows every enrolled node (a building
gateway or a camera that has been silent is still a unit the operator should see). Both merge here,
so no screen shows a bare node id where a name is known.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from relay.api.permissions import Action
from relay.api.tokens import Operator

if TYPE_CHECKING:
    from relay.api.app import ApiContext

Require = Callable[[Action], Callable[[Request], Awaitable[Operator]]]


class UnitOut(BaseModel):
    node_id: str
    name: str
    roles: list[str]
    last_heard: float | None = Field(description="Unix time; null if never heard since enrolment")
    lat: float | None = None
    lon: float | None = None
    fixed: float | None = Field(default=None, description="Unix time of the position fix")
    accuracy_m: int | None = None
    seq: int = Field(default=0, description="journal sequence of the unit's last change")


def units_router(ctx: ApiContext, require: Require) -> APIRouter:
    router = APIRouter(prefix="/api/v1/units", tags=["units"])

    @router.get("", dependencies=[Depends(require(Action.READ_UNITS))])
    async def units() -> list[UnitOut]:
        """Heard units from the journal, then enrolled nodes never heard, by name."""
        heard = {
            u.node_id: UnitOut.model_validate(u, from_attributes=True) for u in await ctx.journal.units()
        }
        for certificate in ctx.roster():
            node_id = certificate.node_id.hex()
            if node_id not in heard:
                heard[node_id] = UnitOut(
                    node_id=node_id, name=certificate.name, roles=sorted(certificate.roles), last_heard=None
                )
        return sorted(heard.values(), key=lambda unit: unit.name)

    return router
