"""The ingest door as a Unix socket, for applications on the node's own machine.

``<data_dir>/ingest.sock`` (mode 0600: the node's own user) takes the ingest WebSocket's frames as
lines of JSON, each ended by ``\\n``. The first line is ``{"token": "<token>"}`` of an operator who
may send messages, answered by ``{"ready": true}`` (or ``{"error": ...}``, and the socket closes);
every line after it is a batch ``{"ref": any, "messages": [...]}``, answered by a line
``{"ref": ..., "results": [...]}`` once all of it is durable, as on the WebSocket
(:func:`relay.api.routes_ingest.serve_frames`: up to ``MAX_IN_FLIGHT`` at once, answers matched by
``ref``). A line that is not a batch gets ``{"error": ...}`` and the socket stays open.

Why a second local door: a lone message through the WebSocket paid its client's framing and
masking, uvicorn's frame parser and the ASGI hand-over, about 0.15 ms of the 2 ms an application's
message took to the next hop's application (docs/benchmarks.md); here it is one line read from a
stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relay.api.routes_ingest import sender_refusal, serve_frames

if TYPE_CHECKING:
    from relay.api.app import ApiContext

log = logging.getLogger(__name__)

SOCKET_FILE = "ingest.sock"
MAX_LINE = 4 << 20  # a batch of MAX_BATCH messages of MAX_TEXT characters, escaped, fits


async def open_ingest_socket(ctx: ApiContext, path: Path) -> asyncio.AbstractServer | None:
    """Listen on ``path`` (a socket left by a killed node is replaced); None, logged, where the
    path cannot take a Unix socket (longer than the system allows): the WebSocket door stays."""
    with contextlib.suppress(FileNotFoundError):
        if path.is_socket():
            path.unlink()
    try:
        server = await asyncio.start_unix_server(
            lambda reader, writer: _serve(ctx, reader, writer), path, limit=MAX_LINE
        )
    except OSError as exc:
        log.warning("ingest socket %s not opened (%s); applications can use /api/v1/ingest", path, exc)
        return None
    os.chmod(path, 0o600)
    return server


async def _serve(ctx: ApiContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    async def send(message: dict[str, Any]) -> None:
        writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        await writer.drain()

    async def receive() -> bytes | None:
        try:
            line = await reader.readline()
        except ValueError:  # over MAX_LINE: the stream cannot find the next line, so the door closes
            writer.write(json.dumps({"error": f"a line is longer than {MAX_LINE} bytes"}).encode() + b"\n")
            return None
        except ConnectionError:  # the client vanished
            return None
        return line or None

    try:
        refusal = _refusal(ctx, await receive())
        if refusal is not None:
            await send({"error": refusal})
            return
        await send({"ready": True})
        await serve_frames(ctx, receive, send)
    except ConnectionError:
        pass  # the client left before its answers
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def _refusal(ctx: ApiContext, first: bytes | None) -> str | None:
    """Why the client whose first line is ``first`` may not send (an error for it), or None."""
    try:
        token = json.loads(first or b"null")["token"]
    except (ValueError, TypeError, KeyError):
        return 'the first line must be {"token": "<token>"}'
    if not isinstance(token, str):
        return 'the first line must be {"token": "<token>"}'
    refusal = sender_refusal(ctx, token)
    return None if refusal is None else refusal.reason
