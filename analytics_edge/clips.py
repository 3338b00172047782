"""Evidence clips: recorded at the edge with faces blurred, signed, uploaded later by store-and-forward.

When live video cannot run, a unit records short WebM segments (VP8) of the anonymised picture into
its data directory, signs each one's manifest (:mod:`crypto.evidence`) and sends clip and manifest as
one BULK bundle of kind :data:`CLIP` to the command post. The relay core keeps a bundle that big off
costly links (LoRa) and carries it when an IP or WebRTC link comes up, however much later.

The command post (:class:`ClipRecords`, entry point ``mesh112.command_post``) checks the signature
against its trust store and the SHA-256 against the file, keeps verified clips in
``<data_dir>/clips/`` and journals a ``clip`` record either way; a refused clip is counted and not kept.
Operators download a clip and its manifest under ``/api/v1/apps/clip/<record id>/``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import av
import numpy as np
from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, Response
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from analytics_edge.clip_wire import MAX_CLIP_BYTES, ClipDecodeError, decode_clip_bundle
from analytics_edge.detectors.base import resize_rgb
from analytics_edge.kinds import CLIP
from analytics_edge.privacy import Anonymiser
from crypto.errors import CryptoError
from crypto.evidence import ClipManifest, verify_clip
from relay.apps import RecordUpdate
from relay.engine import Delivery
from relay.node import Node

CODEC = "vp8/webm"
CLIPS_DIR = "clips"
_VP8_OPTIONS = {"deadline": "realtime", "cpu-used": "8"}  # a field unit's CPU: speed over size
_RECORD_ID = re.compile(r"^[0-9a-f]{8}-[0-9]{1,5}-[0-9a-f]{16}$")


class ClipTooLargeError(ValueError):
    """A recorded segment that does not fit one bundle; the message says what to lower."""


@dataclass(frozen=True, slots=True)
class Recording:
    """One segment written by :func:`record_clip`."""

    path: Path
    start: float  # unix seconds of the first frame
    end: float
    frames: int


def record_clip(
    source: Callable[[float], np.ndarray],
    path: Path,
    *,
    seconds: float,
    offset_s: float,
    start: float,
    fps: float = 10.0,
    size: tuple[int, int] = (320, 240),
    bitrate: int = 300_000,
) -> Recording:
    """Write ``seconds`` of ``source`` (from ``offset_s`` on), faces blurred, as VP8 in WebM.

    Frames are taken at ``fps`` in media time and encoded as fast as the CPU allows; ``start`` is the
    wall time the first frame stands for, so the manifest's times are those of the picture."""
    anonymiser = Anonymiser()
    count = max(1, round(seconds * fps))
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="webm") as container:
        stream = container.add_stream("libvpx", rate=round(fps), options=_VP8_OPTIONS)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = bitrate
        for index in range(count):
            picture = anonymiser.anonymise(source(offset_s + index / fps), [])
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(resize_rgb(picture, *size)), format="rgb24"
            )
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    size_bytes = path.stat().st_size
    if size_bytes > MAX_CLIP_BYTES:
        raise ClipTooLargeError(
            f"{path.name} is {size_bytes} bytes, more than one bundle carries: lower --kbps or --segment"
        )
    return Recording(path, start, start + count / fps, count)


class ClipRecords:
    """The command post side: verify, keep, journal and serve evidence clips."""

    record_type = "clip"
    kinds: ClassVar[Mapping[int, str]] = {CLIP: "evidence_clip"}

    def __init__(self, node: Node, directory: Path) -> None:
        self._node = node
        self.directory = directory
        self.counts = {"verified": 0, "refused": 0}
        self.router = self._routes()

    async def handle(self, delivery: Delivery) -> list[RecordUpdate]:
        origin = delivery.origin.hex()
        try:
            manifest, clip = decode_clip_bundle(delivery.payload)
        except ClipDecodeError as exc:
            return [self._refused(origin, hashlib.sha256(delivery.payload).hexdigest(), None, str(exc))]
        try:
            signer = self._node.engine.trust.check(bytes.fromhex(manifest.node_id), self._node.now())
            verify_clip(manifest, clip, signer)
        except (CryptoError, ValueError) as exc:
            return [self._refused(origin, hashlib.sha256(delivery.payload).hexdigest(), manifest, str(exc))]
        record_id = f"{origin[:8]}-{manifest.camera}-{manifest.sha256[:16]}"
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / f"{record_id}.webm").write_bytes(clip)
        (self.directory / f"{record_id}.json").write_bytes(manifest.encode())
        self.counts["verified"] += 1
        base = f"/api/v1/apps/{self.record_type}/{record_id}"
        body = {**_summary(origin, manifest), "verified": True, "reason": None}
        body |= {"download": f"{base}/clip", "manifest_url": f"{base}/manifest"}
        return [RecordUpdate(record_id, body)]

    def _refused(self, origin: str, digest: str, manifest: ClipManifest | None, reason: str) -> RecordUpdate:
        self.counts["refused"] += 1
        body = _summary(origin, manifest) if manifest else {"origin": origin}
        return RecordUpdate(
            f"{origin[:8]}-refused-{digest[:16]}", {**body, "verified": False, "reason": reason}
        )

    async def acknowledge(self, record_id: str, ack: dict[str, Any]) -> None:
        """Clips need no acknowledgement back to the unit; the journal keeps the operator's."""

    def _routes(self) -> APIRouter:
        router = APIRouter()

        @router.get("/counts")
        def counts() -> dict[str, int]:
            """Clips verified and refused since the command post started."""
            return dict(self.counts)

        @router.get("/{record_id}/clip")
        def clip(record_id: str) -> FileResponse:
            return FileResponse(self._file(record_id, "webm"), media_type="video/webm")

        @router.get("/{record_id}/manifest")
        def manifest(record_id: str) -> Response:
            return Response(self._file(record_id, "json").read_bytes(), media_type="application/json")

        return router

    def _file(self, record_id: str, suffix: str) -> Path:
        path = self.directory / f"{record_id}.{suffix}"
        if not _RECORD_ID.match(record_id) or not path.is_file():
            raise HTTPException(404, f"no verified clip {record_id!r} at this command post")
        return path


def _summary(origin: str, manifest: ClipManifest) -> dict[str, Any]:
    return {
        "origin": origin,
        "node": manifest.node_id,
        "camera": manifest.camera,
        "start": manifest.start,
        "end": manifest.end,
        "frames": manifest.frames,
        "codec": manifest.codec,
        "sha256": manifest.sha256,
        "size": manifest.size,
    }


class ClipCollector(Collector):
    """``mesh112_evidence_clips_total{result}``: clips verified and refused, scraped with the node's."""

    def __init__(self, records: ClipRecords) -> None:
        self._records = records

    def collect(self) -> Iterator[Metric]:
        clips = CounterMetricFamily(
            "mesh112_evidence_clips",
            "Evidence clips verified and refused at this command post",
            labels=["result"],
        )
        for result, count in sorted(self._records.counts.items()):
            clips.add_metric([result], count)
        yield clips


def command_post_app(node: Node) -> ClipRecords:
    """Entry point ``mesh112.command_post``: clips kept in ``<data_dir>/clips/``, counted in metrics."""
    store_path = node.engine.store.path
    records = ClipRecords(node, store_path.parent / CLIPS_DIR)
    node.collectors.append(ClipCollector(records))
    return records
