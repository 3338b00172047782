"""``mesh112 video record`` and ``mesh112 video verify``: evidence clips recorded at the edge.

``record`` runs the unit's relay node, records ``--seconds`` of the anonymised picture as WebM
segments of ``--segment`` seconds in ``<data_dir>/clips/``, signs each one's manifest and sends clip
and manifest as a BULK bundle to ``--to``. It waits up to ``--wait`` seconds for delivery; what is not
delivered by then stays in the node's store and goes when the node next runs with a link to the post.

``verify`` checks a clip against its manifest with only the authority's public key, offline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from analytics_edge.synthetic import render, walking_past
from crypto.evidence import MAX_CAMERA, EvidenceError
from relay.bundle import NODE_ID_LEN
from relay.errors import Mesh112Error

CLIP_LIFETIME_S = 7 * 24 * 3600  # a clip may wait a week for a link that carries it


class ClipCommandError(Mesh112Error):
    """A recording or verification that cannot start; the message says what to fix."""


def register(commands: Any) -> None:
    """Add ``record`` and ``verify`` to the ``video`` command's subcommands."""
    record = commands.add_parser("record", help="record signed evidence clips and send them to a peer")
    record.add_argument("--node", type=Path, required=True, help="this unit's node.toml")
    record.add_argument("--to", required=True, help="the command post's node id (32 hex digits)")
    record.add_argument("--seconds", type=float, default=10.0, help="how much to record")
    record.add_argument("--segment", type=float, default=10.0, help="seconds per clip (one bundle each)")
    record.add_argument("--clip", type=Path, help="a video file to record from; default: a synthetic scene")
    record.add_argument("--camera", type=int, default=0, help="camera number in the manifest")
    record.add_argument("--kbps", type=int, default=300, help="VP8 bitrate of the recording")
    record.add_argument("--wait", type=float, default=60.0, help="seconds to wait for delivery (0: none)")
    record.set_defaults(func=_record)
    verify = commands.add_parser("verify", help="check a clip against its signed manifest, offline")
    verify.add_argument("clip", type=Path, help="the clip file (.webm)")
    verify.add_argument("manifest", type=Path, help="its manifest (.json)")
    verify.add_argument(
        "--authority",
        type=Path,
        required=True,
        help="authority.pub, or a directory holding it (the authority's or any node's)",
    )
    verify.set_defaults(func=_verify)


def _verify(args: argparse.Namespace) -> int:
    from crypto.certificate import RevocationList
    from crypto.errors import CryptoError
    from crypto.evidence import ClipManifest, verify_offline
    from crypto.identity import PublicIdentity
    from crypto.keystore import AUTHORITY_FILE, REVOCATIONS_FILE

    directory = args.authority if args.authority.is_dir() else args.authority.parent
    authority_file = args.authority / AUTHORITY_FILE if args.authority.is_dir() else args.authority
    try:
        authority = PublicIdentity.decode(authority_file.read_bytes())
        revocations_file = directory / REVOCATIONS_FILE
        revocations = None
        if revocations_file.is_file():
            revocations = RevocationList.decode(revocations_file.read_bytes())
            revocations.verify(authority)
        manifest = ClipManifest.decode(args.manifest.read_bytes())
        certificate = verify_offline(manifest, args.clip.read_bytes(), authority, revocations)
    except OSError as exc:
        raise ClipCommandError(f"cannot read {exc.filename}: {exc.strerror}") from None
    except EvidenceError as exc:
        print(json.dumps({"verified": False, "reason": str(exc)}))
        return 1
    except CryptoError as exc:
        raise ClipCommandError(f"cannot verify: {exc}") from None
    print(json.dumps({
        "verified": True,
        "node": manifest.node_id,
        "name": certificate.name,
        "camera": manifest.camera,
        "start": _utc(manifest.start),
        "end": _utc(manifest.end),
        "frames": manifest.frames,
        "sha256": manifest.sha256,
    }))  # fmt: skip
    return 0


def _record(args: argparse.Namespace) -> int:
    try:
        target = bytes.fromhex(args.to)
    except ValueError:
        target = b""
    if len(target) != NODE_ID_LEN:
        raise ClipCommandError(f"--to must be a node id of 32 hex digits, got {args.to!r}")
    if not 0 < args.segment <= 60 or args.seconds <= 0:
        raise ClipCommandError("--seconds must be positive and --segment between 0 and 60 seconds")
    if not 0 <= args.camera <= MAX_CAMERA:
        raise ClipCommandError(f"--camera must be 0-{MAX_CAMERA}, got {args.camera}")
    asyncio.run(_run(args, target))
    return 0


async def _run(args: argparse.Namespace, target: bytes) -> None:
    from analytics_edge.clips import CLIPS_DIR
    from relay import daemon
    from relay.config import load_config

    config = load_config(args.node)
    stop = asyncio.Event()
    failure: list[BaseException] = []

    async def app(node: Any) -> None:
        try:
            await _record_and_send(node, args, target, config.node.data_dir / CLIPS_DIR)
        except Exception as exc:  # reported after the node stops
            failure.append(exc)
        finally:
            stop.set()

    await daemon.run(config, stop, apps=[app])
    if failure:
        raise failure[0]


async def _record_and_send(node: Any, args: argparse.Namespace, target: bytes, directory: Path) -> None:
    from analytics_edge.clip_wire import encode_clip_bundle
    from analytics_edge.clips import CODEC, record_clip
    from analytics_edge.kinds import CLIP, register_kinds
    from crypto.evidence import sign_clip
    from relay.bundle import Destination, Priority
    from relay.core.status import State

    register_kinds(node.kinds)
    source = _source(args.clip)
    engine = node.engine
    sent = []
    offset = 0.0
    while offset < args.seconds - 1e-6:
        seconds = min(args.segment, args.seconds - offset)
        start = time.time()
        name = f"{args.camera}-{datetime.fromtimestamp(start, UTC):%Y%m%dT%H%M%S%f}.webm"
        recording = await asyncio.to_thread(
            record_clip,
            source,
            directory / name,
            seconds=seconds,
            offset_s=offset,
            start=start,
            bitrate=args.kbps * 1000,
        )
        clip = recording.path.read_bytes()
        manifest = sign_clip(
            engine.identity,
            engine.certificate,
            clip,
            camera=args.camera,
            start=recording.start,
            end=recording.end,
            frames=recording.frames,
            codec=CODEC,
        )
        recording.path.with_suffix(".json").write_bytes(manifest.encode())
        bundle_id = await node.send(
            Destination.to_node(target),
            encode_clip_bundle(manifest, clip),
            kind=CLIP,
            priority=Priority.BULK,
            lifetime=CLIP_LIFETIME_S,
        )
        sent.append(bundle_id)
        print(json.dumps({
            "clip": str(recording.path),
            "frames": recording.frames,
            "size": manifest.size,
            "sha256": manifest.sha256,
        }), flush=True)  # fmt: skip
        offset += seconds
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline and any(node.status(b).state != State.DELIVERED for b in sent):
        await asyncio.sleep(0.2)
    delivered = sum(node.status(b).state == State.DELIVERED for b in sent)
    print(json.dumps({"delivered": delivered, "waiting": len(sent) - delivered}), flush=True)


def _source(clip: Path | None) -> Callable[[float], np.ndarray]:
    """Frames at media time ``t`` (seconds): the synthetic scene, or the file's frames in order."""
    if clip is None:
        scene = walking_past(duration_s=3600)
        return lambda t: render(scene, t % 8.0)
    import av

    if not clip.is_file():
        raise ClipCommandError(f"--clip {clip}: no such file")
    container = av.open(str(clip))
    rate = float(container.streams.video[0].average_rate or 10)
    frames = container.decode(video=0)
    index = -1
    current: np.ndarray = np.zeros((240, 320, 3), np.uint8)

    def frame_at(t: float) -> np.ndarray:
        """The file's frame at ``t`` (asked in increasing order), looping at its end."""
        nonlocal container, frames, index, current
        while index < int(t * rate):
            try:
                current = next(frames).to_ndarray(format="rgb24")
            except StopIteration:
                container.close()
                container = av.open(str(clip))
                frames = container.decode(video=0)
                current = next(frames).to_ndarray(format="rgb24")
            index += 1
        return current

    return frame_at


def _utc(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="seconds")
