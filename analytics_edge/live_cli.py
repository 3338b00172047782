"""``mesh112 video stream``: a field unit streams live video to the command post over its webrtc link.

It runs the unit's relay node (``--node NODE.toml``, which needs a ``[[links]] type = "webrtc"``)
with one application: the live track (faces blurred on the device, VP8 below aiortc's floors, frame
numbers and capture times stamped into the pixels) offered to ``--to``. The offer goes over the mesh
as a bundle (FLASH with ``--sos``) and the answer comes back the same way; with ``--api URL`` and a
token it goes through the command post's relay API instead. One JSON line per second says what was
sent.

When the data channel is not up within ``--fallback-after`` seconds (LoRa only, the path below the
floor, no answer), the unit sends masked keyframe snapshots instead: anonymised JPEGs as BULK bundles
of the camera snapshot kind, as often as a quarter of its other links' budget allows (on LoRa: the
duty cycle's), until the channel comes up.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from analytics_edge.clip_cli import register as register_clips
from analytics_edge.synthetic import render, walking_past
from relay.bundle import NODE_ID_LEN, Kind
from relay.errors import Mesh112Error

TOKEN_ENV = "MESH112_TOKEN"


class VideoError(Mesh112Error):
    """A stream that cannot start (no webrtc link, bad peer, no answer); the message says which."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("video", help="live video from this unit to the command post (WebRTC)")
    commands = parser.add_subparsers(dest="video_command", metavar="SUBCOMMAND", required=True)
    stream = commands.add_parser("stream", help="run this node and stream live video to a peer")
    stream.add_argument("--node", type=Path, required=True, help="this unit's node.toml (with a webrtc link)")
    stream.add_argument("--to", required=True, help="the command post's node id (32 hex digits)")
    stream.add_argument("--sos", action="store_true", help="an SOS video request: the offer travels as FLASH")
    stream.add_argument(
        "--clip", type=Path, help="a video file to stream (looped); default: a synthetic scene"
    )
    stream.add_argument("--kbps", type=int, default=64, help="what the path is expected to carry (start)")
    stream.add_argument(
        "--max-kbps", type=int, default=1500, help="the most the encoder may use (caps resolution and fps)"
    )
    stream.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: until Ctrl-C)")
    stream.add_argument("--api", help="signal through this command post API (http://HOST:PORT) instead")
    stream.add_argument("--token", help=f"API token for --api (default: ${TOKEN_ENV})")
    stream.add_argument(
        "--fallback-after",
        type=float,
        default=15.0,
        help="seconds without a channel before snapshots (0: never)",
    )
    stream.add_argument("--snapshot-bytes", type=int, default=6000, help="largest snapshot (JPEG) to send")
    stream.set_defaults(func=_stream)
    register_clips(commands)  # record and verify evidence clips (analytics_edge.clip_cli)


def _stream(args: argparse.Namespace) -> int:
    try:
        target = bytes.fromhex(args.to)
    except ValueError:
        target = b""
    if len(target) != NODE_ID_LEN:
        raise VideoError(f"--to must be a node id of 32 hex digits, got {args.to!r}")
    token = args.token or os.environ.get(TOKEN_ENV)
    if args.api and not token:
        raise VideoError(f"--api needs a token: --token or ${TOKEN_ENV}")
    asyncio.run(_run(args, target, token))
    return 0


async def _run(args: argparse.Namespace, target: bytes, token: str | None) -> None:
    from relay import daemon
    from relay.config import load_config

    stop = asyncio.Event()
    failure: list[BaseException] = []

    async def app(node: Any) -> None:
        try:
            await _stream_from(node, args, target, token, stop)
        except Exception as exc:  # reported after the node stops
            failure.append(exc)
        finally:
            stop.set()

    await daemon.run(load_config(args.node), stop, apps=[app])
    if failure:
        raise failure[0]


async def _stream_from(
    node: Any, args: argparse.Namespace, target: bytes, token: str | None, stop: asyncio.Event
) -> None:
    import httpx

    from analytics_edge.live import LiveVideoTrack, allow_low_bitrates, encoder_bitrate
    from analytics_edge.privacy import Anonymiser
    from relay.links.webrtc import WebRtcLink
    from relay.links.webrtc_mesh import MeshSignaller

    link = next((item for item in node.links.values() if isinstance(item, WebRtcLink)), None)
    if link is None:
        raise VideoError(f'{args.node} has no webrtc link: add [[links]] type = "webrtc"')
    start = args.kbps * 1000
    cap = max(start, args.max_kbps * 1000)
    allow_low_bitrates(floor_bps=min(30_000, start), start_bps=start, cap_bps=cap)
    track = LiveVideoTrack(
        _source(args.clip), Anonymiser(), bitrate=lambda: encoder_bitrate(link.video_sender(target)) or start
    )
    link.video_source = lambda peer: track if peer == target else None
    tasks: list[asyncio.Task[None]] = []
    if args.api:
        async with httpx.AsyncClient(base_url=args.api, timeout=30) as client:
            response = await client.post(
                "/api/v1/webrtc/signal",
                content=await link.offer(target, sos=args.sos),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"},
            )
        if response.status_code != 200:
            raise VideoError(f"the command post refused the offer: {response.status_code} {response.text}")
        await link.accept(response.content)
    else:
        signaller = MeshSignaller(node, link)
        link.connect(target, sos=args.sos)
        tasks.append(asyncio.create_task(_signals(node, signaller)))
    began = time.monotonic()
    fallback = SnapshotFallback(node, target, _source(args.clip), args.snapshot_bytes)
    try:
        while not args.seconds or time.monotonic() - began < args.seconds:
            await asyncio.sleep(1.0)
            if (
                args.fallback_after
                and target not in link.peers()
                and time.monotonic() - began > args.fallback_after
            ):
                await fallback.maybe_send(time.monotonic())
            rung = track.steps[-1] if track.steps else None
            print(json.dumps({
                "up": target in link.peers(),
                "frames": track.frames,
                "size": f"{rung.width}x{rung.height}" if rung else None,
                "target_kbps": (encoder_bitrate(link.video_sender(target)) or 0) // 1000,
                "blur_ms": round(float(np.median(track.blur_ms[-30:])), 1) if track.blur_ms else None,
                "snapshots": fallback.sent,
            }), flush=True)  # fmt: skip
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class SnapshotFallback:
    """Masked snapshots as BULK bundles while no data channel is up, paced to the links' budget."""

    BUDGET_SHARE = 0.25  # of the other links' bytes per second (LoRa: after its duty cycle)

    def __init__(
        self, node: Any, target: bytes, source: Callable[[float], np.ndarray], max_bytes: int
    ) -> None:
        from analytics_edge.kinds import register_kinds
        from analytics_edge.privacy import Anonymiser

        register_kinds(node.kinds)
        self._node, self._target, self._source, self._max_bytes = node, target, source, max_bytes
        self._anonymiser = Anonymiser()
        budget = sum(
            link.profile.bitrate * link.profile.duty_cycle
            for link in node.links.values()
            if link.profile.kind != "webrtc"
        )
        self.interval_s = max_bytes / (self.BUDGET_SHARE * budget) if budget else float("inf")
        self._next = 0.0
        self._began = time.monotonic()
        self.sent = 0

    async def maybe_send(self, now: float) -> None:
        from analytics_edge.events import SnapshotRecord, encode_snapshot_record
        from analytics_edge.kinds import SNAPSHOT
        from analytics_edge.privacy import encode_snapshot
        from relay.bundle import Destination, Priority

        if now < self._next:
            return
        self._next = now + self.interval_s
        picture = self._anonymiser.anonymise(self._source(now - self._began), [])
        jpeg = encode_snapshot(picture, self._max_bytes - 12)
        width, height = Image.open(io.BytesIO(jpeg)).size
        record = SnapshotRecord(0, self.sent & 0xFFFF, int(time.time()), width, height, jpeg)
        await self._node.send(
            Destination.to_node(self._target),
            encode_snapshot_record(record),
            kind=SNAPSHOT,
            priority=Priority.BULK,
        )
        self.sent += 1


async def _signals(node: Any, signaller: Any) -> None:
    """This node's inbox while it streams: signals to the signaller, the rest acknowledged and shown."""
    async for delivery in node.inbox():
        if delivery.kind == Kind.WEBRTC_SIGNAL:
            await signaller.handle(delivery)
        else:
            print(
                json.dumps({"delivery": node.kinds.name(delivery.kind), "bytes": len(delivery.payload)}),
                flush=True,
            )
        await node.ack(delivery.bundle_id)


def _source(clip: Path | None) -> Callable[[float], np.ndarray]:
    if clip is None:
        scene = walking_past(duration_s=3600)
        return lambda t: render(scene, t % 8.0)
    import av

    container = av.open(str(clip))
    frames = container.decode(video=0)

    def next_frame(t: float) -> np.ndarray:
        nonlocal container, frames
        try:
            return np.asarray(next(frames).to_ndarray(format="rgb24"))
        except StopIteration:
            container.close()
            container = av.open(str(clip))
            frames = container.decode(video=0)
            return np.asarray(next(frames).to_ndarray(format="rgb24"))

    return next_frame
