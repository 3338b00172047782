"""What the console needs besides items: catching up by cursor, the map's tiles, the send targets.

``/api/v1/changes?after=SEQ`` returns every message, record and unit written after journal sequence
``SEQ`` (the stream does the same on reconnect with ``?after=``), so a client that lost its
connection resumes where it was and misses nothing. Map tiles come from a local MBTiles file named
in node.toml (``[api] tiles``); the node never fetches tiles from anywhere.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from prometheus_client.core import Metric
from pydantic import BaseModel, Field

from relay.api.permissions import Action
from relay.api.routes_records import event_filter
from relay.api.tokens import Operator
from relay.bundle import Priority
from relay.journal import MAX_SEQ

if TYPE_CHECKING:
    from relay.api.app import ApiContext

Require = Callable[[Action], Callable[[Request], Awaitable[Operator]]]
# the priorities whose records the console's queue shows whatever their type (dashboard.js: queued)
URGENT = (Priority.FLASH.name, Priority.IMMEDIATE.name)
TILE_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp"}


class ChangesOut(BaseModel):
    cursor: int = Field(description="pass as ?after= to continue; equals the request's after when none")
    changes: list[dict[str, Any]] = Field(description="stream events: type, seq, item (the whole item)")


class ConsoleOut(BaseModel):
    cursor: int = Field(description="the journal's current sequence: open the stream with ?after=cursor")
    groups: list[str] = Field(description="groups and roles this node holds a key for (send targets)")
    tiles: dict[str, Any] | None = Field(description="the local tile set's metadata; null: draw a grid")
    record_types: list[str] = Field(
        description="the record types of the applications installed here, and of any record still open "
        "at FLASH or IMMEDIATE (another post's application, over the backbone): the queue's to load"
    )


class HealthOut(BaseModel):
    at: float = Field(description="Unix time of the reading")
    queues: dict[str, dict[str, int]] = Field(description="link -> priority -> items waiting")
    airtime: dict[str, dict[str, float]] = Field(
        description="LoRa link -> used_s (own transmit time in the last hour) and budget_s (duty cycle)"
    )
    peers: list[dict[str, Any]] = Field(description="neighbours seen since start: link, kind, peer, name, up")
    latency_s: float | None = Field(description="median created -> received of the last 100 items here")


def health_of(metrics: Iterable[Metric]) -> dict[str, Any]:
    """The console's health reading from the node's Prometheus families (one source for both)."""
    queues: dict[str, dict[str, int]] = {}
    airtime: dict[str, dict[str, float]] = {}
    peers: list[dict[str, Any]] = []
    for family in metrics:
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "mesh112_queue_depth":
                queues.setdefault(labels["link"], {})[labels["priority"]] = int(sample.value)
            elif sample.name == "mesh112_lora_airtime_seconds":
                airtime.setdefault(labels["link"], {})["used_s"] = sample.value
            elif sample.name == "mesh112_lora_airtime_budget_seconds":
                airtime.setdefault(labels["link"], {})["budget_s"] = sample.value
            elif sample.name == "mesh112_link_peer_up":
                peers.append({**labels, "up": sample.value > 0})
    return {"queues": queues, "airtime": airtime, "peers": peers}


class TileSetError(ValueError):
    """The MBTiles file named in node.toml cannot be read as a raster tile set."""


def tile_metadata(path: Path) -> dict[str, Any]:
    """name, format, bounds, minzoom and maxzoom of an MBTiles file (raster formats only)."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = dict(db.execute("SELECT name, value FROM metadata").fetchall())
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise TileSetError(f"{path} is not an MBTiles file: {exc}") from None
    fmt = str(rows.get("format", "png"))
    if fmt not in TILE_TYPES:
        raise TileSetError(f"{path} holds {fmt!r} tiles; the console draws png, jpg or webp")
    bounds = [float(v) for v in str(rows.get("bounds", "-180,-85,180,85")).split(",")]
    return {
        "name": rows.get("name", path.stem),
        "format": fmt,
        "bounds": bounds,
        "minzoom": int(rows.get("minzoom", 0)),
        "maxzoom": int(rows.get("maxzoom", 18)),
        "attribution": rows.get("attribution", ""),
    }


def read_tile(path: Path, z: int, x: int, y: int) -> bytes | None:
    """One tile by XYZ address (MBTiles rows count from the south: TMS)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = db.execute(
            "SELECT tile_data FROM tiles WHERE zoom_level=? AND tile_column=? AND tile_row=?",
            (z, x, (1 << z) - 1 - y),
        ).fetchone()
    finally:
        db.close()
    return bytes(row[0]) if row else None


def console_router(ctx: ApiContext, require: Require) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["console"])
    metadata = tile_metadata(ctx.tiles) if ctx.tiles is not None else None
    streamer = Depends(require(Action.STREAM))  # a default, not Annotated: annotations here are strings

    @router.get("/console", dependencies=[Depends(require(Action.STREAM))])
    async def console() -> ConsoleOut:
        return ConsoleOut(
            cursor=ctx.journal.cursor,
            groups=sorted(ctx.send_groups()),
            tiles=metadata,
            record_types=sorted(set(ctx.ack_hooks).union(await ctx.journal.open_types(URGENT))),
        )

    @router.get("/changes")
    async def changes(
        operator: Operator = streamer,
        after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
        limit: Annotated[int, Query(ge=1, le=2000)] = 500,
    ) -> ChangesOut:
        found = await ctx.journal.changes(after, limit)
        visible = event_filter(operator)
        return ChangesOut(
            cursor=found[-1].seq if found else after,
            changes=[event for event in (c.event() for c in found) if visible(event)],
        )

    @router.get("/health", dependencies=[Depends(require(Action.READ_LINKS))])
    async def health() -> HealthOut:
        """Queues per link and priority, LoRa airtime against the duty cycle, neighbours up and down,
        and delivery latency: what the console plots, without Prometheus."""
        reading = health_of(ctx.node_metrics.collect()) if ctx.node_metrics is not None else {}
        times = [(m.created, m.received) for m in await ctx.journal.messages(limit=50)]
        times += [(r.created, r.received) for r in await ctx.journal.records(limit=50)]
        delays = sorted(max(0.0, received - created) for created, received in times)
        return HealthOut(
            at=time.time(),
            queues=reading.get("queues", {}),
            airtime=reading.get("airtime", {}),
            peers=reading.get("peers", []),
            latency_s=round(delays[len(delays) // 2], 3) if delays else None,
        )

    @router.get(
        "/tiles/{z}/{x}/{y}",
        dependencies=[Depends(require(Action.READ_UNITS))],
        response_class=Response,
        summary="one map tile from the node's MBTiles file",
    )
    async def tile(
        z: Annotated[int, PathParam(ge=0, le=24)],
        x: Annotated[int, PathParam(ge=0, le=(1 << 24) - 1)],
        y: Annotated[int, PathParam(ge=0, le=(1 << 24) - 1)],
    ) -> Response:
        if ctx.tiles is None or metadata is None:
            raise HTTPException(404, 'no tile set: set [api] tiles = "path.mbtiles" in node.toml')
        data = await asyncio.to_thread(read_tile, ctx.tiles, z, x, y)
        if data is None:
            raise HTTPException(404, f"no tile {z}/{x}/{y} in {ctx.tiles.name}")
        return Response(
            data,
            media_type=TILE_TYPES[metadata["format"]],
            headers={"Cache-Control": "private, max-age=3600"},
        )

    return router
