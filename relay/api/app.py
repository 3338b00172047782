"""The relay API (FastAPI): what the command post's operators and the dashboard talk to.

Everything lives under ``/api/v1/``; ``/healthz`` is the only endpoint open without a token.
Operators authenticate with an authority-issued token (``Authorization: Bearer m112...``, or
``?token=`` for the WebSocket stream); the permission matrix in :mod:`relay.api.permissions` decides
what each role may do. Bodies are capped at ``MAX_BODY`` bytes and each operator is rate limited.
"""

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path as PathLib
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.routing import APIRouter
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from crypto.certificate import Certificate, RevocationList
from crypto.errors import CryptoError
from crypto.identity import PublicIdentity
from relay.api.destinations import resolve_destination
from relay.api.hub import CLIENT_GONE, EventHub
from relay.api.metrics import CONTENT_TYPE, ApiMetrics, NodeCollector
from relay.api.permissions import Action, allowed
from relay.api.routes_console import console_router
from relay.api.routes_ingest import SendMessage, ingest_router
from relay.api.routes_messages import messages_router
from relay.api.routes_records import event_filter, records_router
from relay.api.routes_revocations import revocations_router
from relay.api.routes_units import units_router
from relay.api.routes_webrtc import webrtc_router
from relay.api.tokens import Operator, TokenError, TokenVerifier
from relay.apps import Sender
from relay.bundle import (
    BundleDecodeError,
    BundleId,
    Destination,
    DestinationError,
    Kind,
    Priority,
    from_epoch,
)
from relay.core.receipts import BundleStatus
from relay.engine import Outgoing, SecurityCounters, SendError, StorageFullError
from relay.journal import JournalBackend
from relay.position import (
    MAX_ACCURACY_M,
    MAX_ALTITUDE_M,
    POSITION_LIFETIME_S,
    InvalidPositionError,
    Position,
    check_not_ahead,
    encode_position,
)
from relay.ratelimit import RateLimiter

MAX_BODY = 64 * 1024
STATIC = PathLib(__file__).parent / "static"
STREAM_RECHECK_S = 2.0  # an open stream re-checks its token (revoked, expired) at least this often
REPLAY_PAGE = 500  # journal changes read at a time when a stream resumes from a cursor


class NodeControl(Sender, Protocol):
    """What the API needs from the node it runs in (a :class:`relay.node.Node`)."""

    @property
    def node_id(self) -> bytes: ...

    def status(self, bundle_id: BundleId) -> BundleStatus: ...

    async def send_many(self, messages: Sequence[Outgoing]) -> list[BundleId | SendError]: ...

    def link_info(self) -> list[dict[str, Any]]: ...

    def health_problems(self) -> list[str]: ...

    async def publish_revocations(self, revocations: RevocationList) -> BundleId: ...

    @property
    def security(self) -> SecurityCounters: ...


AckHook = Callable[[str, dict[str, Any]], Awaitable[BundleId | None]]  # the bundle carrying it back


@dataclass
class ApiContext:
    node: NodeControl
    journal: JournalBackend
    authority: PublicIdentity
    revocations: Callable[[], RevocationList | None]
    hub: EventHub = field(default_factory=EventHub)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    ack_hooks: dict[str, AckHook] = field(default_factory=dict)  # record type -> carries the ack back
    app_routers: dict[str, APIRouter] = field(default_factory=dict)  # record type -> extra read-only routes
    rate_per_s: float = 20.0
    rate_burst: float = 60.0
    command_post: bytes | None = None  # node id position reports go to when they name no destination
    roster: Callable[[], Iterable[Certificate]] = lambda: ()  # whose names destinations may use
    node_metrics: NodeCollector | None = None  # the node's links, queues and store, read per scrape
    send_groups: Callable[[], Iterable[str]] = lambda: ()  # groups and roles the node holds a key for
    tiles: PathLib | None = None  # the console map's MBTiles file ([api] tiles in node.toml)


class ReportPosition(BaseModel):
    lat: float = Field(ge=-90, le=90, allow_inf_nan=False, description="degrees north (WGS 84)")
    lon: float = Field(ge=-180, le=180, allow_inf_nan=False, description="degrees east (WGS 84)")
    accuracy_m: float | None = Field(default=None, ge=0, le=MAX_ACCURACY_M, allow_inf_nan=False)
    altitude_m: float | None = Field(default=None, ge=-MAX_ALTITUDE_M, le=MAX_ALTITUDE_M, allow_inf_nan=False)
    fixed: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="Unix time of the fix; default: now"
    )
    to: str | None = Field(
        default=None, max_length=80, description="default: the node's [node] command_post from node.toml"
    )


class _BodyLimit:
    """Refuses request bodies over ``MAX_BODY`` before the application reads them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            response = JSONResponse({"detail": f"request body over {MAX_BODY} bytes"}, status_code=413)
            await response(scope, receive, send)
            return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > MAX_BODY:
                raise HTTPException(413, f"request body over {MAX_BODY} bytes")
            return message

        await self.app(scope, limited, send)


def parse_bundle_id(text: str) -> BundleId:
    try:
        return BundleId.from_key(bytes.fromhex(text))
    except (ValueError, BundleDecodeError):
        raise HTTPException(404, f"{text!r} is not a bundle id (44 hex digits)") from None


def _status_json(bundle_id: BundleId, status: BundleStatus) -> dict[str, Any]:
    return {
        "bundle_id": bundle_id.key().hex(),
        "state": status.state.value,
        "peer": status.peer.hex() if status.peer else None,
        "link": status.link,
        "at": from_epoch(status.at) if status.at is not None else None,
        "hops": status.hops,
        "path": list(status.path_labels()),
        "path_complete": status.path_complete,
        "reason": status.reason,  # why an evicted bundle was dropped
        "summary": str(status),
    }


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(title="Mesh112 relay API", version="1", docs_url="/docs", openapi_url="/openapi.json")
    app.add_middleware(_BodyLimit)

    @app.exception_handler(UnicodeDecodeError)
    async def not_utf8(request: Request, exc: UnicodeDecodeError) -> JSONResponse:
        return JSONResponse({"detail": "request body is not UTF-8 JSON"}, status_code=422)

    @app.exception_handler(DestinationError)
    async def bad_destination(request: Request, exc: DestinationError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    limiter: RateLimiter[bytes] = RateLimiter(ctx.rate_per_s, ctx.rate_burst)
    tokens = TokenVerifier(ctx.authority)
    metrics = ApiMetrics(ctx.registry, lambda: ctx.hub.subscribers)
    if ctx.node_metrics is not None:
        ctx.registry.register(ctx.node_metrics)

    def operator_from(token: str | None) -> Operator:
        if not token:
            raise HTTPException(401, "missing token: send 'Authorization: Bearer <token>'")
        try:
            return tokens.verify(token, ctx.revocations(), int(time.time()))
        except TokenError as exc:
            raise HTTPException(401, str(exc)) from None

    def require(action: Action) -> Callable[[Request], Awaitable[Operator]]:
        # async although it never awaits: FastAPI runs a plain ``def`` dependency in a worker thread,
        # a hop that cost more than checking the token itself.
        async def dependency(request: Request) -> Operator:
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            operator = operator_from(token.strip() if scheme.lower() == "bearer" else None)
            if not allowed(operator.roles, action):
                raise HTTPException(
                    403, f"{operator.display} with roles {sorted(operator.roles)} may not {action.value}"
                )
            wait = limiter.take(operator.node_id, time.monotonic())
            if wait:
                raise HTTPException(429, "rate limit exceeded", headers={"Retry-After": f"{wait:.0f}"})
            metrics.requests.labels(action.value).inc()
            return operator

        return dependency

    for record_type, router in ctx.app_routers.items():  # an application's read-only extras (CAP feed)
        app.include_router(
            router,
            prefix=f"/api/v1/apps/{record_type}",
            tags=[record_type],
            dependencies=[Depends(require(Action.READ_RECORDS))],
        )

    for make_router in (
        messages_router,
        ingest_router,
        records_router,
        units_router,
        console_router,
        webrtc_router,
    ):
        app.include_router(make_router(ctx, require))
    app.include_router(revocations_router(ctx, require))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        """The dashboard shell; it holds no data and reads everything through the API with a token."""
        return FileResponse(STATIC / "index.html")

    @app.get("/api/v1/whoami", tags=["ops"])
    async def whoami(operator: Annotated[Operator, Depends(require(Action.READ_STATUS))]) -> dict[str, Any]:
        return {
            "node": ctx.node.node_id.hex(),
            "operator": operator.node_id.hex(),
            "name": operator.name,
            "roles": sorted(operator.roles),
            "expires": operator.expires,
        }

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> JSONResponse:
        """200 ``ok``, or 503 ``degraded`` with the problems (a full disk, say) an operator must fix."""
        problems = ctx.node.health_problems()
        status = "degraded" if problems else "ok"
        body = {"status": status, "node": ctx.node.node_id.hex(), "problems": problems}
        return JSONResponse(body, status_code=503 if problems else 200)

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def scrape(_: Annotated[Operator, Depends(require(Action.METRICS))]) -> PlainTextResponse:
        if ctx.node_metrics is not None:
            await ctx.node_metrics.refresh()
        return PlainTextResponse(generate_latest(ctx.registry).decode(), media_type=CONTENT_TYPE)

    @app.post("/api/v1/messages", tags=["messages"], status_code=202)
    async def send_message(
        body: SendMessage, operator: Annotated[Operator, Depends(require(Action.SEND_MESSAGE))]
    ) -> dict[str, Any]:
        destination = resolve_destination(body.to, ctx.roster())
        try:
            bundle_id = await ctx.node.send(
                destination,
                body.text.encode(),
                kind=Kind.TEXT,
                priority=Priority[body.priority],
                lifetime=body.lifetime_s,
            )
        except StorageFullError as exc:
            raise HTTPException(507, f"insufficient storage, not sent: {exc}") from None
        except (CryptoError, SendError) as exc:  # no certificate or group key for the destination
            raise HTTPException(422, f"cannot send to {body.to}: {exc}") from None
        metrics.sent.inc()
        return _status_json(bundle_id, ctx.node.status(bundle_id))

    @app.post("/api/v1/positions", tags=["units"], status_code=202)
    async def report_position(
        body: ReportPosition, _: Annotated[Operator, Depends(require(Action.REPORT_POSITION))]
    ) -> dict[str, Any]:
        if body.to is not None:
            destination = resolve_destination(body.to, ctx.roster())
        elif ctx.command_post is not None:
            destination = Destination.to_node(ctx.command_post)
        else:
            raise HTTPException(422, "no destination: give 'to', or set command_post in [node] of node.toml")
        now = time.time()
        try:
            position = Position.from_fix(
                body.lat,
                body.lon,
                now if body.fixed is None else body.fixed,
                body.accuracy_m,
                body.altitude_m,
            )
            check_not_ahead(position, now)
            bundle_id = await ctx.node.send(
                destination,
                encode_position(position),
                kind=Kind.POSITION,
                priority=Priority.PRIORITY,
                lifetime=POSITION_LIFETIME_S,
            )
        except InvalidPositionError as exc:
            raise HTTPException(422, str(exc)) from None
        except StorageFullError as exc:
            raise HTTPException(507, f"insufficient storage, not sent: {exc}") from None
        except (CryptoError, SendError) as exc:  # no certificate or group key for the destination
            raise HTTPException(422, f"cannot send to {destination}: {exc}") from None
        return _status_json(bundle_id, ctx.node.status(bundle_id))

    @app.get("/api/v1/bundles/{bundle_id}", tags=["messages"])
    async def bundle_status(
        bundle_id: str, _: Annotated[Operator, Depends(require(Action.READ_STATUS))]
    ) -> dict[str, Any]:
        parsed = parse_bundle_id(bundle_id)
        return _status_json(parsed, ctx.node.status(parsed))

    @app.get("/api/v1/links", tags=["links"])
    async def links(_: Annotated[Operator, Depends(require(Action.READ_LINKS))]) -> list[dict[str, Any]]:
        return ctx.node.link_info()

    @app.websocket("/api/v1/stream")
    async def stream(websocket: WebSocket, token: str | None = None, after: int | None = None) -> None:
        """Live events; with ``?after=SEQ`` first every journal change after SEQ, so a reconnecting
        client misses nothing (live events it already got in the replay are not sent twice)."""
        # Accept first so the refusal reaches the browser as a close code it can show (4401/4403),
        # not as an opaque failed handshake.
        await websocket.accept()
        try:
            operator = operator_from(token)
        except HTTPException as exc:
            await websocket.close(code=4401, reason=str(exc.detail)[:120])
            return
        if not allowed(operator.roles, Action.STREAM):
            await websocket.close(code=4403, reason=f"{operator.display} may not stream"[:120])
            return
        visible = event_filter(operator)  # a building operator sees only its own records
        queue = ctx.hub.subscribe()  # before the replay: nothing written meanwhile is lost
        watch = asyncio.create_task(_wake_when_closed(websocket, queue), name="stream-close")
        try:
            replayed = after
            while replayed is not None:
                changes = await ctx.journal.changes(replayed, REPLAY_PAGE)
                for change in changes:
                    if visible(change.event()):
                        await websocket.send_json(change.event())
                    replayed = change.seq
                if len(changes) < REPLAY_PAGE:
                    break
            while True:
                event = await _next_event(queue)
                if event is CLIENT_GONE:
                    return
                if event is None or event.get("type") == "revocation":
                    try:  # revoked or expired since the stream opened: closed now
                        operator_from(token)
                    except HTTPException as exc:
                        await websocket.close(code=4401, reason=str(exc.detail)[:120])
                        return
                    if event is None:
                        continue
                if replayed is not None and event.get("seq", replayed + 1) <= replayed:
                    continue  # sent in the replay already
                if not visible(event):
                    continue
                await websocket.send_json(event)
                if event.get("type") == "lagging":
                    await websocket.close(code=1013)
                    return
        except (WebSocketDisconnect, asyncio.CancelledError):
            pass
        finally:
            watch.cancel()
            ctx.hub.unsubscribe(queue)

    return app


async def _wake_when_closed(websocket: WebSocket, queue: asyncio.Queue[dict[str, Any]]) -> None:
    """Wait for the client to close its stream (it sends nothing), then wake the stream's loop: in
    a quiet spell it sends nothing either, so it would outlive its client, its subscription still
    held and a server shutdown waiting on it."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass  # a client's message: the stream takes none
    with contextlib.suppress(asyncio.QueueFull):  # full: the lagging marker in it ends the stream
        queue.put_nowait(CLIENT_GONE)


async def _next_event(queue: asyncio.Queue[dict[str, Any]]) -> dict[str, Any] | None:
    """The next event for a stream, or None after ``STREAM_RECHECK_S`` without one."""
    try:
        async with asyncio.timeout(STREAM_RECHECK_S):
            return await queue.get()
    except TimeoutError:
        return None
