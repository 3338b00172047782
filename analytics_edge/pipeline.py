"""Camera → detector → tracker → rules → compact events (+ anonymised snapshots) → the relay node.

:class:`CameraPipeline` is the sans-I/O core: it takes one frame and returns the bundles to send
(:class:`Outgoing`), with no sockets and no clocks of its own, so tests run it on synthetic clips
frame by frame. :func:`run_camera` is the thin asyncio adapter: it reads the blocking PyAV source
and runs inference in a worker thread, and hands each payload to the node's ``send``.

Events travel at their rule's priority; a snapshot follows only the first event of an incident
(``START``) whose priority is at least ``snapshot_min_priority``, at most one per
``snapshot_interval_s``, as a separate ``BULK`` bundle that waits for IP or WebRTC.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from analytics_edge import kinds
from analytics_edge.detectors.base import Detector
from analytics_edge.events import (
    SNAPSHOT_HEADER,
    DetectionRecord,
    SnapshotRecord,
    encode_event,
    encode_snapshot_record,
)
from analytics_edge.privacy import Anonymiser, SnapshotError, encode_snapshot
from analytics_edge.rules import Observation, Rule, RuleEvent
from analytics_edge.sources import Frame, VideoSource
from analytics_edge.tracking import Box, Phase, Tracker, TrackerConfig
from relay.apps import Sender
from relay.bundle import BundleId, Destination, Priority


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    camera: int = 0  # camera number on this node (a box may serve several)
    snapshots: bool = True
    snapshot_min_priority: Priority = Priority.IMMEDIATE
    snapshot_interval_s: float = 10.0
    snapshot_max_bytes: int = 24_000
    event_lifetime_s: int = 3600
    snapshot_lifetime_s: int = 1800


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One bundle to send: its payload and how it travels, with the record it carries."""

    payload: bytes
    kind: int
    priority: Priority
    lifetime: int
    record: DetectionRecord | SnapshotRecord


@dataclass
class PipelineStats:
    frames: int = 0
    detections: int = 0
    events: int = 0
    snapshots: int = 0
    event_bytes: int = 0
    snapshot_bytes: int = 0
    inference_s: float = 0.0
    events_by_type: dict[str, int] = field(default_factory=dict)


class CameraPipeline:
    def __init__(
        self,
        detector: Detector,
        rules: Sequence[Rule],
        config: PipelineConfig | None = None,
        *,
        tracker: TrackerConfig | None = None,
        anonymiser: Anonymiser | None = None,
        start_time: float = 0.0,  # unix time of stream time 0
    ) -> None:
        self.config = config or PipelineConfig()
        self.detector = detector
        self.rules = list(rules)
        # object ids from the start's whole second (a 32-bit subject on the wire): a restarted
        # camera's objects get ids its earlier objects did not have, unless it tracked more than
        # one new object a second on average before the restart
        self.tracker = Tracker(tracker, first_id=max(1, int(start_time) & 0xFFFF_FFFF))
        self.anonymiser = anonymiser if anonymiser is not None or not self.config.snapshots else Anonymiser()
        self.start_time = start_time
        self.stats = PipelineStats()
        self._seq = 0
        self._last_snapshot = -float("inf")

    def process(self, frame: Frame) -> list[Outgoing]:
        now = frame.timestamp
        started = time.perf_counter()
        detections = self.detector.detect(frame.image)
        self.stats.inference_s += time.perf_counter() - started
        self.stats.frames += 1
        self.stats.detections += len(detections)
        self.tracker.update(detections, now)
        objects = tuple(self.tracker.objects)
        observation = Observation(now, objects, frame.image, tuple(detections))
        events = [event for rule in self.rules for event in rule.evaluate(observation)]
        out: list[Outgoing] = []
        height, width = frame.image.shape[:2]
        for event in events:
            wants_snapshot = self._wants_snapshot(event)
            record = self._record(event, width, height, wants_snapshot)
            out.append(self._event_bundle(record))
            if wants_snapshot:
                snapshot = self._snapshot(frame, record, [o.box for o in objects])
                if snapshot is not None:
                    out.append(snapshot)
        return out

    def _wants_snapshot(self, event: RuleEvent) -> bool:
        cfg = self.config
        return (
            cfg.snapshots
            and event.phase is Phase.START
            and event.priority <= cfg.snapshot_min_priority
            and event.time - self._last_snapshot >= cfg.snapshot_interval_s
        )

    def _record(self, event: RuleEvent, width: int, height: int, snapshot: bool) -> DetectionRecord:
        self._seq = (self._seq + 1) & 0xFFFF
        x1, y1, x2, y2 = event.box
        box = (_frac(x1, width), _frac(y1, height), _frac(x2, width), _frac(y2, height))
        return DetectionRecord(
            type=event.type,
            phase=event.phase,
            priority=event.priority,
            camera=self.config.camera,
            rule=event.rule_index,
            time=self.start_time + event.time,
            seq=self._seq,
            subject=event.subject_id & 0xFFFF_FFFF,
            box=box,
            label_id=min(event.label_id, 255),
            score=event.score,
            count=event.count,
            dwell_s=round(event.dwell_s),
            density=event.density,
            trend=event.trend,
            snapshot_follows=snapshot,
        )

    def _event_bundle(self, record: DetectionRecord) -> Outgoing:
        payload = encode_event(record)
        self.stats.events += 1
        self.stats.event_bytes += len(payload)
        self.stats.events_by_type[record.type.name] = self.stats.events_by_type.get(record.type.name, 0) + 1
        lifetime = self.config.event_lifetime_s
        return Outgoing(payload, kinds.DETECTION_EVENT, record.priority, lifetime, record)

    def _snapshot(self, frame: Frame, record: DetectionRecord, persons: list[Box]) -> Outgoing | None:
        assert self.anonymiser is not None
        image = self.anonymiser.anonymise(frame.image, persons)
        try:
            jpeg = encode_snapshot(image, self.config.snapshot_max_bytes - SNAPSHOT_HEADER)
        except SnapshotError:
            return None
        self._last_snapshot = frame.timestamp
        height, width = image.shape[:2]
        snap = SnapshotRecord(self.config.camera, record.seq, int(record.time), width, height, jpeg)
        payload = encode_snapshot_record(snap)
        self.stats.snapshots += 1
        self.stats.snapshot_bytes += len(payload)
        return Outgoing(payload, kinds.SNAPSHOT, Priority.BULK, self.config.snapshot_lifetime_s, snap)


def _frac(value: float, size: int) -> float:
    return min(1.0, max(0.0, value / size))


async def run_camera(
    source: VideoSource,
    pipeline: CameraPipeline,
    sink: Sender,
    destination: Destination,
    *,
    realtime: bool = False,
    max_frames: int | None = None,
    on_sent: Callable[[Outgoing, BundleId], None] | None = None,
) -> PipelineStats:
    """Run one camera until its source ends (or ``max_frames``), sending every event to ``sink``.

    ``realtime`` paces a file source at its own speed (the demo camera); live sources pace
    themselves.
    """
    frames: Iterator[Frame] = source.frames(max_frames=max_frames)
    wall_start = time.monotonic()
    while True:
        frame = await asyncio.to_thread(next, frames, None)
        if frame is None:
            break
        if realtime:
            ahead = frame.timestamp - (time.monotonic() - wall_start)
            if ahead > 0:
                await asyncio.sleep(ahead)
        outgoing = await asyncio.to_thread(pipeline.process, frame)
        for item in outgoing:
            bundle_id = await sink.send(
                destination, item.payload, kind=item.kind, priority=item.priority, lifetime=item.lifetime
            )
            if on_sent is not None:
                on_sent(item, bundle_id)
    return pipeline.stats
