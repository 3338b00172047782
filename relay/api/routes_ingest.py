"""The fast door for applications: many messages per request, or a stream of them on one socket.

``POST /api/v1/messages`` takes one message per request and stays for operators. An application
that feeds the mesh (a bulk loader, a gateway on the same machine) pays a request, a token check
and a store commit per message there. Here:

- ``POST /api/v1/messages/batch`` with ``{"messages": [...]}`` (up to :data:`MAX_BATCH`, each as
  the single POST's body) sends them in one call of the node (:meth:`relay.node.Node.send_many`:
  one id reservation, one store commit, one wake-up of the links); the answer lists, in order, each
  message's ``bundle_id`` or its ``error``. One request is one token
  of the operator's rate limit, whatever its size (the request body stays under 64 KiB).
- ``/api/v1/ingest?token=...``, a WebSocket for applications on the same machine only (loopback
  peers; others are closed with 4403): each text frame is a batch ``{"ref": any, "messages":
  [...]}``, answered by ``{"ref": ..., "results": [...]}`` once every message in it is durable.
  Up to :data:`MAX_IN_FLIGHT` frames are worked on at once, so a client that keeps sending without
  waiting for answers keeps the store's group commit full (frames that wait for the same commit share
  it); answers may come out of order (match them by ``ref``).

A result is ``{"bundle_id": "<hex>"}`` once the bundle is durable, or ``{"error": "..."}`` saying
what the application can fix (an unknown destination, a missing group key, a full store).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Depends, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.websockets import WebSocketDisconnected

from relay.api.destinations import resolve_destination
from relay.api.permissions import Action, allowed
from relay.api.tokens import Operator, TokenError, verify_token
from relay.bundle import BundleId, Destination, DestinationError, Kind, Priority
from relay.engine import Outgoing, SendError, StorageFullError

if TYPE_CHECKING:
    from crypto.certificate import Certificate
    from relay.api.app import ApiContext

log = logging.getLogger(__name__)

MAX_TEXT = 4096
MAX_BATCH = 500  # messages per request or frame (a batch of short texts still fits the 64 KiB body)
MAX_IN_FLIGHT = 32  # frames of one ingest socket worked on at once
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})

Require = Callable[[Action], Callable[[Request], Awaitable[Operator]]]


class SendMessage(BaseModel):
    to: str = Field(description="node:<hex id>, role:<name>, group:<name> or all", max_length=80)
    text: str = Field(min_length=1, max_length=MAX_TEXT)
    priority: Literal["FLASH", "IMMEDIATE", "PRIORITY", "ROUTINE", "BULK"] = "PRIORITY"
    lifetime_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600)


class SendBatch(BaseModel):
    messages: list[SendMessage] = Field(min_length=1, max_length=MAX_BATCH)
    ref: Any = Field(default=None, description="echoed in the ingest socket's answer")


class SendResult(BaseModel):
    bundle_id: str | None = Field(default=None, description="hex id, once the bundle is durable here")
    error: str | None = Field(default=None, description="why this message was not sent")


class BatchAnswer(BaseModel):
    accepted: int = Field(description="how many messages are durable (have a bundle_id)")
    results: list[SendResult] = Field(description="one per message, in the request's order")


async def send_batch(ctx: ApiContext, messages: Sequence[SendMessage]) -> list[dict[str, str]]:
    """Send the batch in one engine call (one id reservation, one store commit, one step of the core);
    a result per message, in order: a message that cannot go says why and holds no other back."""
    roster: list[Certificate] = list(ctx.roster())
    destinations: dict[str, Destination | DestinationError] = {}  # a batch often goes to one place
    outgoing: list[Outgoing] = []
    refused: dict[int, dict[str, str]] = {}
    for index, message in enumerate(messages):
        destination = destinations.get(message.to)
        if destination is None:
            try:
                destination = resolve_destination(message.to, roster)
            except DestinationError as exc:
                destination = exc
            destinations[message.to] = destination
        if isinstance(destination, DestinationError):
            refused[index] = {"error": f"cannot send to {message.to}: {destination}"}
            continue
        priority = Priority[message.priority]
        outgoing.append(Outgoing(destination, message.text.encode(), Kind.TEXT, priority, message.lifetime_s))
    # The links take the frames while the batch commits (NodeEngine.send_many): the answer waits
    # for nothing else.
    sent = iter(await ctx.node.send_many(outgoing))
    return [
        refused[index] if index in refused else _result(next(sent), message.to)
        for index, message in enumerate(messages)
    ]


def _result(outcome: BundleId | SendError, to: str) -> dict[str, str]:
    if isinstance(outcome, StorageFullError):
        return {"error": f"insufficient storage, not sent: {outcome}"}
    if isinstance(outcome, SendError):
        return {"error": f"cannot send to {to}: {outcome}"}
    return {"bundle_id": outcome.key().hex()}


async def serve_frames(
    ctx: ApiContext,
    receive: Callable[[], Awaitable[str | bytes | None]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """Answer the batch frames ``receive`` returns (None: the client left) through ``send`` (raises
    ConnectionError once the client left), up to :data:`MAX_IN_FLIGHT` at once; returns once the
    client left and every frame taken was sent.

    The task that read a frame hands the reading on to a new task and sends the frame's messages
    itself: they reach the links in the turn that read them (a task started per frame cost a lone
    message a loop turn), while the frames after it are read and committed alongside."""
    sending = asyncio.Lock()  # one answer on the socket at a time
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)
    tasks: set[asyncio.Task[None]] = set()
    reader: asyncio.Task[None] | None = None  # the task waiting for the next frame
    closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def answer(message: dict[str, Any]) -> None:
        async with sending:
            await send(message)

    def read_next() -> None:
        nonlocal reader
        if closed.done():
            return
        reader = asyncio.create_task(read_and_send())
        tasks.add(reader)
        reader.add_done_callback(done)

    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        failure = None if task.cancelled() else task.exception()
        if failure is not None and not isinstance(failure, ConnectionError):  # a client gone is no error
            log.error("an ingest frame failed: %s", failure, exc_info=failure)

    async def read_and_send() -> None:
        nonlocal reader
        raw: str | bytes | None = None
        try:
            raw = await receive()
        finally:
            if raw is None and not closed.done():  # the client left (or the socket failed)
                closed.set_result(None)
        if raw is None:
            return
        reader = None  # until read_next: this task now answers its frame
        try:
            batch = SendBatch.model_validate_json(raw)
        except ValidationError as exc:
            read_next()
            await answer({"error": f"not a batch: {exc.errors()[0]['msg']}"})
            return
        await slots.acquire()
        # The next reader starts a turn later, once this frame's messages are with the links:
        # started at once, its first step came before the link's (the WebSocket's receive, ~0.1 ms).
        asyncio.get_running_loop().call_soon(read_next)
        try:
            results = await send_batch(ctx, batch.messages)
            await answer({"ref": batch.ref, "results": results})
        finally:
            slots.release()

    read_next()
    try:
        await closed
    finally:
        if reader is not None:
            reader.cancel()  # waiting for a frame that will not come (the handler was cancelled)
        while tasks:  # what was taken is sent; only the answers are lost
            await asyncio.wait(set(tasks))


def ingest_router(ctx: ApiContext, require: Require) -> APIRouter:
    router = APIRouter(tags=["messages"])

    @router.post(
        "/api/v1/messages/batch",
        status_code=202,
        response_model=BatchAnswer,
        dependencies=[Depends(require(Action.SEND_MESSAGE))],
    )
    async def send_messages(body: SendBatch) -> JSONResponse:
        results = await send_batch(ctx, body.messages)
        # Encoded here: FastAPI's generic encoder walked each result (1.7 ms for 250 messages).
        answer = {"accepted": sum("bundle_id" in r for r in results), "results": results}
        return JSONResponse(answer, status_code=202)

    @router.websocket("/api/v1/ingest")
    async def ingest(websocket: WebSocket, token: str | None = None) -> None:
        await websocket.accept()
        refusal = _refusal(ctx, websocket, token)
        if refusal is not None:
            await websocket.close(code=refusal[0], reason=refusal[1][:120])
            return

        async def receive() -> str | bytes | None:
            # Not receive_text: once an answer found the client gone, Starlette refuses it, although
            # the frames the client sent before its close still wait to be read (and must be sent).
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return None
            return message.get("text") or message.get("bytes") or ""

        async def send(message: dict[str, Any]) -> None:
            try:
                await websocket.send_json(message)
            except (WebSocketDisconnect, WebSocketDisconnected, OSError) as exc:
                raise ConnectionError(f"the ingest client left: {exc}") from exc

        await serve_frames(ctx, receive, send)

    return router


def _refusal(ctx: ApiContext, websocket: WebSocket, token: str | None) -> tuple[int, str] | None:
    """Why this socket may not ingest (close code, reason), or None."""
    host = websocket.client.host if websocket.client is not None else ""
    if host not in LOOPBACK:
        return 4403, "the ingest socket is for applications on this machine; use /api/v1/messages/batch"
    if not token:
        return 4401, "missing token: connect with ?token=<token>"
    refusal = sender_refusal(ctx, token)
    return None if refusal is None else (4403 if refusal.forbidden else 4401, refusal.reason)


@dataclass(frozen=True, slots=True)
class SenderRefusal:
    reason: str
    forbidden: bool  # a valid token that may not send (else: not a valid token)


def sender_refusal(ctx: ApiContext, token: str) -> SenderRefusal | None:
    """Why ``token`` may not send through an ingest door (both doors ask), or None."""
    try:
        operator = verify_token(token, ctx.authority, ctx.revocations(), int(time.time()))
    except TokenError as exc:
        return SenderRefusal(str(exc), forbidden=False)
    if not allowed(operator.roles, Action.SEND_MESSAGE):
        return SenderRefusal(f"{operator.display} may not send messages", forbidden=True)
    return None
