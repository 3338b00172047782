"""Edge analytics benchmark: what a camera box can detect, and how few bytes it sends for it.

- detector latency and fps (person model, 640x360 frame) at 1 and 2 onnxruntime threads, and the
  face model used for anonymisation; medians of ``RUNS`` runs after warm-up;
- a synthetic scenario per scene (clip from the skimage photos, real detector, rules, snapshots):
  bytes per event, per snapshot, and the ratio of bytes sent to the bytes of the raw video (RGB
  frames at the clip's rate) and of the encoded clip (H.264, the video a camera would stream);
- end-to-end event latency from the pipeline's send to the command post's inbox between two real
  relay nodes (real stores, real crypto): over IP (pynng tcp on 127.0.0.1) and over emulated LoRa
  (the in-process link, each frame delayed by LongFast airtime: 0.3 s preamble + 125 B/s).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import skimage.data

from analytics_edge import kinds, synthetic
from analytics_edge.detectors.ssdlite import SsdlitePersonConfig, SsdlitePersonDetector
from analytics_edge.pipeline import CameraPipeline, Outgoing, PipelineConfig
from analytics_edge.privacy import FaceDetector
from analytics_edge.rules import AbandonedObjectRule, CrowdRule, IntrusionRule, LoiteringRule, Zone
from analytics_edge.sources import SourceConfig, VideoSource
from crypto.certificate import Authority
from crypto.identity import Identity
from relay.bundle import Destination, to_epoch
from relay.engine import NodeEngine
from relay.links.base import LinkProfile
from relay.links.inproc import InprocHub, InprocLink
from relay.links.ip import IpLink, IpLinkConfig
from relay.links.ip_handshake import Credentials, Trust
from relay.node import Node
from relay.trust import TrustStore

RUNS = 30
LATENCY_SAMPLES = {"ip": 20, "lora": 5}
LORA = LinkProfile(
    "lora0", "lora", mtu=219, bitrate=125.0, cost=10.0, duty_cycle=0.1, compact=True, per_frame_overhead_s=0.3
)
W, H = synthetic.WIDTH, synthetic.HEIGHT


def _median_ms(call: Any, frame: np.ndarray) -> float:
    for _ in range(3):
        call(frame)
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        call(frame)
        times.append(time.perf_counter() - started)
    return round(1000 * statistics.median(times), 2)


def detector_speed() -> dict[str, Any]:
    frame = synthetic.render(synthetic.SCENES["crowd_gathering"], 8.0)
    out: dict[str, Any] = {"frame": f"{W}x{H}"}
    for threads in (1, 2):
        detector = SsdlitePersonDetector(SsdlitePersonConfig(threads=threads))
        ms = _median_ms(detector.detect, frame)
        out[f"person_{threads}_thread"] = {"median_ms": ms, "fps": round(1000 / ms, 1)}
    faces = FaceDetector()
    portrait: np.ndarray = skimage.data.astronaut()  # type: ignore[no-untyped-call]
    out["face_1_thread_median_ms"] = _median_ms(faces.detect, portrait)
    return out


def _rules() -> list[Any]:
    restricted = Zone("restricted", ((400, 0), (W, 0), (W, H), (400, H)))
    plaza = Zone("plaza", ((0, 0), (W, 0), (W, H), (0, H)), area_m2=60.0)
    return [
        IntrusionRule(0, restricted),
        LoiteringRule(1, plaza, dwell_s=5.0),
        CrowdRule(2, plaza, min_count=3),
        AbandonedObjectRule(3),
    ]


def scenario(name: str, workdir: Path) -> tuple[dict[str, Any], list[Outgoing]]:
    scene = synthetic.SCENES[name]
    clip = synthetic.write_clip(scene, workdir / f"{name}.mp4")
    detector = SsdlitePersonDetector(SsdlitePersonConfig())
    pipeline = CameraPipeline(detector, _rules(), PipelineConfig(), start_time=time.time())
    sent: list[Outgoing] = []
    frames = 0
    for frame in VideoSource(SourceConfig(str(clip), target_fps=scene.fps)).frames():
        frames += 1
        sent += pipeline.process(frame)
    stats = pipeline.stats
    raw = frames * W * H * 3
    encoded = clip.stat().st_size
    event_bytes, all_bytes = stats.event_bytes, stats.event_bytes + stats.snapshot_bytes
    figures = {
        "seconds": scene.duration_s,
        "frames": frames,
        "events": stats.events,
        "events_by_type": stats.events_by_type,
        "bytes_per_event": event_bytes // max(stats.events, 1),
        "snapshots": stats.snapshots,
        "snapshot_bytes": stats.snapshot_bytes,
        "raw_video_bytes": raw,
        "encoded_clip_bytes": encoded,
        "events_to_raw_ratio": event_bytes / raw,
        "events_and_snapshots_to_raw_ratio": all_bytes / raw,
        "events_to_encoded_ratio": event_bytes / encoded,
        "events_and_snapshots_to_encoded_ratio": all_bytes / encoded,
    }
    return figures, sent


class _AirtimeLink(InprocLink):
    """The in-process link, but every frame first spends its LoRa airtime (emulation)."""

    async def send(self, peer: bytes, frame: bytes) -> None:
        await asyncio.sleep(self.profile.per_frame_overhead_s + len(frame) / self.profile.bitrate)
        await super().send(peer, frame)


async def _latency(link_kind: str, payload: bytes, workdir: Path) -> dict[str, Any]:
    now = int(time.time())
    authority = Authority.generate(now=now - 10)
    members = {}
    for name in ("post", "camera"):
        identity = Identity.generate()
        members[name] = (identity, authority.issue(identity.public, frozenset(), name, now + 3600, now=now))
    hub = InprocHub()
    port = _free_port()
    nodes: dict[str, Node] = {}
    for name, (identity, cert) in members.items():
        roster = TrustStore(authority.public, [c for _, c in members.values()])
        store = workdir / f"{link_kind}-{name}.sqlite"
        engine = await NodeEngine.open(identity, cert, roster, store, now=to_epoch(time.time()))
        kinds.register_kinds(engine.kinds)
        if link_kind == "ip":
            address = f"tcp://127.0.0.1:{port}"
            config = IpLinkConfig(listen=address) if name == "post" else IpLinkConfig(peers=(address,))
            link: Any = IpLink(
                config, Credentials(identity, cert), Trust(authority.public, authority.revocations)
            )
        else:
            link = _AirtimeLink(hub, engine.node_id, LORA)
        nodes[name] = Node(engine, [link])
    post, camera = nodes["post"], nodes["camera"]
    for node in nodes.values():
        await node.start()
    try:
        await asyncio.sleep(1.0)  # links up (IP handshake)
        samples = []
        for _ in range(LATENCY_SAMPLES[link_kind]):
            started = time.perf_counter()
            await camera.send(
                Destination.to_node(post.node_id), payload, kind=kinds.DETECTION_EVENT, lifetime=600
            )
            async with asyncio.timeout(30):
                async for delivery in post.inbox():
                    await post.ack(delivery.bundle_id)
                    break
            samples.append(time.perf_counter() - started)
        return {"median_ms": round(1000 * statistics.median(samples), 1), "samples": len(samples)}
    finally:
        for node in (camera, post):  # the dialler first: it stops redialling a listener that is gone
            await node.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run() -> dict[str, Any]:
    results: dict[str, Any] = {"detector": detector_speed(), "scenarios": {}}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        event_payload = b""
        for name in ("bag_left_behind", "crowd_gathering"):
            figures, sent = scenario(name, workdir)
            results["scenarios"][name] = figures
            event_payload = event_payload or next(o.payload for o in sent if o.kind == kinds.DETECTION_EVENT)
        results["end_to_end_event_latency"] = {
            "ip_loopback": asyncio.run(_latency("ip", event_payload, workdir)),
            "lora_emulated_airtime": asyncio.run(_latency("lora", event_payload, workdir)),
        }
    return results
