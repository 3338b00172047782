"""``mesh112 camera``: run a camera, try the detector on a picture, make a synthetic clip.

``camera run`` without ``--node`` is a dry run: the records that would be sent are printed as JSON
lines. With ``--node NODE.toml`` it runs that relay node in the same process and sends every event
and snapshot through it to the command post (``--to`` or ``[camera] destination``); a camera with
``[camera] lat``/``lon`` first reports that position, so the console lists and maps it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from analytics_edge import kinds
from analytics_edge.config import CameraConfig, load_camera_config
from analytics_edge.detectors import DetectorError, build_detector
from analytics_edge.pipeline import CameraPipeline, Outgoing, PipelineStats, run_camera
from analytics_edge.privacy import Anonymiser
from analytics_edge.records import event_body
from analytics_edge.sources import SourceConfig, SourceError, VideoSource
from relay.bundle import NODE_ID_LEN, BundleId, Destination, Kind, Priority
from relay.errors import Mesh112Error
from relay.position import POSITION_LIFETIME_S, Position, encode_position


class CameraError(Mesh112Error):
    """A camera command that cannot run (bad source, model or destination)."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("camera", help="edge camera analytics: detection events instead of video")
    commands = parser.add_subparsers(dest="camera_command", metavar="SUBCOMMAND", required=True)

    run = commands.add_parser("run", help="run a camera: detect, track, apply rules, send events")
    run.add_argument("--source", required=True, help="video file, rtsp:// or http(s):// URL, or /dev/videoN")
    run.add_argument("--config", type=Path, required=True, help="camera TOML (zones, rules, detector)")
    run.add_argument("--node", type=Path, help="relay node TOML to send through (default: print records)")
    run.add_argument("--to", help="destination node id in hex (default: [camera] destination)")
    run.add_argument("--loop", action="store_true", help="play a file source again and again (demo)")
    run.add_argument("--realtime", action="store_true", help="pace a file source at its own speed")
    run.add_argument("--max-frames", type=int, help="stop after this many frames")
    run.add_argument("--linger", type=float, default=5.0, help="seconds to keep the node up after the end")
    run.set_defaults(func=_run)

    detect = commands.add_parser("detect", help="run the detector on one picture and print what it finds")
    detect.add_argument("image", type=Path)
    detect.add_argument("--config", type=Path, help="camera TOML whose [detector] to use")
    detect.add_argument("--snapshot", type=Path, help="also write the anonymised JPEG that would be sent")
    detect.set_defaults(func=_detect)

    clip = commands.add_parser("clip", help="write a synthetic test clip (needs scikit-image)")
    clip.add_argument("scene", help="walking_past, entering_zone, standing_still, bag_left_behind, ...")
    clip.add_argument("output", type=Path, help="file to write (.mp4 or .mkv)")
    clip.set_defaults(func=_clip)


def _camera_config(path: Path | None) -> CameraConfig | None:
    return load_camera_config(path) if path is not None else None


def _pipeline(config: CameraConfig) -> CameraPipeline:
    try:
        detector = build_detector(config.detector, config.detector_options, config.base_dir)
    except DetectorError as exc:
        raise CameraError(str(exc)) from None
    anonymiser = Anonymiser(config.privacy) if config.pipeline.snapshots else None
    return CameraPipeline(
        detector, config.build_rules(), config.pipeline, anonymiser=anonymiser, start_time=time.time()
    )


def _run(args: argparse.Namespace) -> int:
    config = load_camera_config(args.config)
    source = VideoSource(SourceConfig(args.source, target_fps=config.fps, loop=args.loop))
    pipeline = _pipeline(config)
    try:
        if args.node is None:
            stats = asyncio.run(
                run_camera(source, pipeline, _PrintSink(), Destination.everyone(), **_opts(args))
            )
        else:
            stats = asyncio.run(_run_with_node(args, config, source, pipeline))
    except SourceError as exc:
        raise CameraError(str(exc)) from None
    print(json.dumps({"summary": _summary(stats)}), flush=True)
    return 0


def _opts(args: argparse.Namespace) -> dict[str, Any]:
    return {"realtime": args.realtime, "max_frames": args.max_frames}


async def _run_with_node(
    args: argparse.Namespace, config: CameraConfig, source: VideoSource, pipeline: CameraPipeline
) -> PipelineStats:
    from relay import daemon
    from relay.config import load_config
    from relay.node import Node

    target = bytes.fromhex(args.to) if args.to else config.destination
    if target is None or len(target) != NODE_ID_LEN:
        raise CameraError("say where events go: --to NODE_ID_HEX or [camera] destination")
    stop = asyncio.Event()
    ready: asyncio.Future[Node] = asyncio.get_running_loop().create_future()
    runner = asyncio.create_task(daemon.run(load_config(args.node), stop, ready=ready.set_result))
    try:
        waiters: list[asyncio.Future[Any]] = [runner, ready]
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if runner in done:
            runner.result()  # the node failed to start: raise its error
            raise CameraError("the relay node stopped before it was ready")
        node = ready.result()
        kinds.register_kinds(node.kinds)  # with validators: a bad record is refused at the source
        destination = Destination.to_node(target)
        if config.position is not None:
            fix = encode_position(Position.from_fix(*config.position, time.time()))
            await node.send(
                destination, fix, kind=Kind.POSITION, priority=Priority.PRIORITY, lifetime=POSITION_LIFETIME_S
            )
        stats = await run_camera(source, pipeline, node, destination, on_sent=_print_sent, **_opts(args))
        await asyncio.sleep(args.linger)
        return stats
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


class _PrintSink:
    """Dry run: records are printed, nothing leaves the machine."""

    def __init__(self) -> None:
        self._seq = 0

    async def send(
        self, destination: Destination, payload: bytes, *, kind: int, priority: Priority, lifetime: int
    ) -> BundleId:
        self._seq += 1
        _print_record(kind, payload, priority)
        return BundleId(bytes(NODE_ID_LEN), int(time.time()) & 0xFFFF_FFFF, self._seq & 0xFFFF)


def _print_sent(item: Outgoing, bundle_id: BundleId) -> None:
    _print_record(item.kind, item.payload, item.priority, str(bundle_id))


def _print_record(kind: int, payload: bytes, priority: Priority, bundle: str | None = None) -> None:
    line: dict[str, Any] = {"kind": kind, "bytes": len(payload), "priority": priority.name}
    if bundle is not None:
        line["bundle"] = bundle
    if kind == kinds.DETECTION_EVENT:
        line["event"] = event_body(payload)
    print(json.dumps(line), flush=True)


def _summary(stats: PipelineStats) -> dict[str, Any]:
    return {
        "frames": stats.frames,
        "events": stats.events,
        "snapshots": stats.snapshots,
        "event_bytes": stats.event_bytes,
        "snapshot_bytes": stats.snapshot_bytes,
        "inference_ms_per_frame": round(1000 * stats.inference_s / max(stats.frames, 1), 1),
        "events_by_type": stats.events_by_type,
    }


def _detect(args: argparse.Namespace) -> int:
    config = _camera_config(args.config)
    name, options, base = ("ssdlite_person", {}, None) if config is None else (
        config.detector, config.detector_options, config.base_dir
    )  # fmt: skip
    try:
        detector = build_detector(name, options, base)
        image = np.asarray(Image.open(args.image).convert("RGB"))
        found = detector.detect(image)
    except DetectorError as exc:
        raise CameraError(str(exc)) from None
    for d in found:
        box = [round(v, 1) for v in (d.x1, d.y1, d.x2, d.y2)]
        print(json.dumps({"label": d.label, "score": round(d.score, 3), "box": box}))
    if args.snapshot is not None:
        from analytics_edge.privacy import encode_snapshot

        privacy = config.privacy if config is not None else None
        masked = Anonymiser(privacy).anonymise(image, [(d.x1, d.y1, d.x2, d.y2) for d in found])
        args.snapshot.write_bytes(encode_snapshot(masked, 24_000))
    return 0


def _clip(args: argparse.Namespace) -> int:
    from analytics_edge import synthetic

    if args.scene not in synthetic.SCENES:
        raise CameraError(f"unknown scene {args.scene!r}; known: {', '.join(synthetic.SCENES)}")
    synthetic.write_clip(synthetic.SCENES[args.scene], args.output)
    print(args.output)
    return 0
