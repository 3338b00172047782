"""Camera pipeline end to end: a synthetic clip through the real detector into a real relay node,
whose events and anonymised snapshot arrive in the command post's inbox over the in-process link."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import numpy as np
import pytest
from engine_net import IP, Deployment
from PIL import Image

from analytics_edge import kinds, synthetic
from analytics_edge.detectors.ssdlite import SsdlitePersonConfig, SsdlitePersonDetector
from analytics_edge.events import (
    DetectionRecord,
    SnapshotRecord,
    decode_event,
    decode_snapshot_record,
)
from analytics_edge.pipeline import CameraPipeline, PipelineConfig, run_camera
from analytics_edge.privacy import FaceDetector
from analytics_edge.rules import EventType, IntrusionRule, Zone
from analytics_edge.sources import SourceConfig, VideoSource
from analytics_edge.tracking import Phase
from relay.bundle import Destination, Priority, to_epoch
from relay.kinds import KindError
from relay.links.inproc import InprocHub, InprocLink
from relay.node import Node

RESTRICTED = Zone("restricted", ((400, 0), (640, 0), (640, 360), (400, 360)))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scene = synthetic.entering_zone(duration_s=5.0)
    return synthetic.write_clip(scene, tmp_path_factory.mktemp("clips") / "entering.mp4")


def _pipeline() -> CameraPipeline:
    return CameraPipeline(
        SsdlitePersonDetector(SsdlitePersonConfig()),
        [IntrusionRule(0, RESTRICTED)],
        PipelineConfig(camera=3, snapshot_max_bytes=20_000),
        start_time=time.time(),
    )


def test_a_restarted_camera_gives_its_objects_new_ids(clip: Path) -> None:
    """The command post shows one card per camera and tracked object: a camera restarted an hour
    later must not give the person it sees now the id of the person it saw before."""
    subjects = []
    for start in (time.time(), time.time() + 3600):
        pipeline = CameraPipeline(
            SsdlitePersonDetector(SsdlitePersonConfig()),
            [IntrusionRule(0, RESTRICTED)],
            PipelineConfig(camera=3, snapshots=False),
            start_time=start,
        )
        frames = VideoSource(SourceConfig(str(clip), target_fps=5)).frames()
        events = [decode_event(o.payload) for f in frames for o in pipeline.process(f)]
        assert events, "the clip's person enters the zone"
        subjects.append({event.subject for event in events})
    assert subjects[0] and subjects[1] and subjects[0].isdisjoint(subjects[1])


def test_event_then_anonymised_snapshot(clip: Path) -> None:
    pipeline = _pipeline()
    frames = VideoSource(SourceConfig(str(clip), target_fps=5)).frames()
    out = [item for frame in frames for item in pipeline.process(frame)]
    assert [o.kind for o in out] == [kinds.DETECTION_EVENT, kinds.SNAPSHOT]
    event, snapshot = out
    record = decode_event(event.payload)
    assert record.type is EventType.INTRUSION and record.phase is Phase.START and record.camera == 3
    assert record.snapshot_follows and event.priority is Priority.IMMEDIATE
    snap = decode_snapshot_record(snapshot.payload)
    assert snapshot.priority is Priority.BULK and len(snapshot.payload) <= 20_000
    assert snap.event_seq == record.seq and (snap.width, snap.height) == (640, 360)
    picture = np.asarray(Image.open(io.BytesIO(snap.jpeg)).convert("RGB"))
    assert FaceDetector().detect(picture) == []
    assert pipeline.stats.frames == 25 and pipeline.stats.event_bytes == 32


async def test_events_reach_the_command_post(clip: Path, tmp_path: Path) -> None:
    net = Deployment()
    net.enrol("post", frozenset({"command"}))
    net.enrol("camera")
    hub = InprocHub()
    nodes = []
    for name in ("post", "camera"):
        engine = await net.open(name, tmp_path, to_epoch(time.time()))
        kinds.register_kinds(engine.kinds)
        nodes.append(Node(engine, [InprocLink(hub, engine.node_id, IP)]))
    post, camera = nodes
    for node in nodes:
        await node.start()
    try:
        with pytest.raises(KindError, match="detection_event payload refused"):
            await camera.send(Destination.to_node(post.node_id), b"\x00" * 31, kind=kinds.DETECTION_EVENT)
        source = VideoSource(SourceConfig(str(clip), target_fps=5))
        stats = await run_camera(source, _pipeline(), camera, Destination.to_node(post.node_id))
        assert stats.events == 1 and stats.snapshots == 1
        received: list[DetectionRecord | SnapshotRecord] = []

        async def collect() -> None:
            async for delivery in post.inbox():
                await post.ack(delivery.bundle_id)
                if delivery.kind == kinds.DETECTION_EVENT:
                    received.append(decode_event(delivery.payload))
                elif delivery.kind == kinds.SNAPSHOT:
                    received.append(decode_snapshot_record(delivery.payload))
                if len(received) == 2:
                    return

        await asyncio.wait_for(collect(), 15)
        event = next(r for r in received if isinstance(r, DetectionRecord))
        snap = next(r for r in received if isinstance(r, SnapshotRecord))
        assert event.type is EventType.INTRUSION and snap.event_seq == event.seq
    finally:
        for node in nodes:
            await node.stop()
