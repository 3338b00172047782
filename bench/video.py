"""Responder video and the WebRTC data channel, on this host through the tests' UDP shaper.

Video: a field unit's :class:`analytics_edge.live.LiveVideoTrack` (synthetic scene, faces blurred,
frame number and capture time stamped into the pixels) goes over a :class:`relay.links.webrtc.WebRtcLink`
to a command post's :class:`relay.links.webrtc_video.VideoHub`; a viewer subscribed to the hub reads
the stamps back from the decoded frames. Every packet crosses the shaper (its address is put into
the candidates), at 64, 256 and 1,000 kbit/s with 0 % and 5 % loss and 20 ms each way. No STUN server
is configured. Figures: time from the offer to the first decoded frame, fps and glass-to-glass
latency p50/p95 read from the stamps, freezes (gaps over 500 ms), the longest gap, the blur's cost
per frame, the ladder rung used most, and the compressed offer and answer sizes.

Bundles: 1,000 bundles of 1 KiB (sent 50 at a time) between two real nodes (SQLite stores) over the
data channel and, in the same run, over the IP link, timed from the first send to the last delivery.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aioice.ice import get_host_addresses

from analytics_edge.live import LiveVideoTrack, allow_low_bitrates, encoder_bitrate, latency_ms, read_stamp
from analytics_edge.privacy import Anonymiser
from analytics_edge.synthetic import render, walking_past
from crypto.certificate import Authority
from crypto.identity import Identity, PublicIdentity
from relay.bundle import Destination, Kind, to_epoch
from relay.engine import NodeEngine
from relay.links.ip import IpLink, IpLinkConfig
from relay.links.ip_handshake import Credentials, Trust
from relay.links.webrtc import WebRtcLink
from relay.links.webrtc_config import WebRtcLinkOptions
from relay.links.webrtc_signal import Candidate, SignalType, decode, encode
from relay.links.webrtc_video import VideoHub
from relay.node import Node
from relay.trust import TrustStore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from udp_shaper import Shaping, UdpShaper  # the tests' shaper, shared on purpose

RATES_KBPS = (64, 256, 1000)
LOSSES = (0.0, 0.05)
DELAY_S = 0.02
SECONDS = 8.0  # of video per case
FREEZE_S = 0.5
BUNDLES, BUNDLE_BYTES, BATCH = 1000, 1024, 50


class _Quiet:
    """Link events for a link that carries only video here."""

    def __init__(self) -> None:
        self.up = asyncio.Event()

    def link_up(self, link: str, peer: bytes) -> None:
        self.up.set()

    def link_down(self, link: str, peer: bytes) -> None: ...

    def frame_received(self, link: str, peer: bytes, frame: bytes) -> None: ...


@dataclasses.dataclass
class _Path:
    """The test's signalling: the shaper's address goes into the candidates of each signal."""

    shaper: UdpShaper
    sizes: dict[str, int] = dataclasses.field(default_factory=dict)

    def rewrite(self, wire: bytes) -> bytes:
        signal = decode(wire)
        self.sizes[signal.type.name.lower()] = len(wire)
        real = next((c.address, c.port) for c in signal.candidates if c.address == self.shaper.host)
        if signal.type is SignalType.OFFER:
            self.shaper.a_real, via = real, self.shaper.port_a
        else:
            self.shaper.b_real, via = real, self.shaper.port_b
        return encode(dataclasses.replace(signal, candidates=(Candidate(self.shaper.host, via),)))


async def connect(sender: WebRtcLink, receiver: WebRtcLink, path: _Path) -> None:
    offer = await sender.offer(receiver.node_id)
    answer = await receiver.accept(path.rewrite(offer))
    assert answer is not None
    await sender.accept(path.rewrite(answer))


def _keys(*identities: Identity) -> Any:
    table = {identity.node_id: identity.public for identity in identities}

    def lookup(node: bytes, now: float) -> PublicIdentity:
        return table[node]

    return lookup


async def video_case(
    rate_kbps: float, loss: float, seconds: float = SECONDS, seed: int = 1, record_to: Path | None = None
) -> dict[str, Any]:
    """One stream through the shaper; figures measured from the stamps the viewer reads back. With
    ``record_to``, the command post's hub records the stream there as well."""
    host = get_host_addresses(use_ipv4=True, use_ipv6=False)[0]
    shaper = UdpShaper(host, Shaping(rate=rate_kbps * 125, delay=DELAY_S, loss=loss), seed=seed)
    await shaper.start()
    path = _Path(shaper)
    unit_id, post_id = Identity.generate(), Identity.generate()
    keys = _keys(unit_id, post_id)
    options = WebRtcLinkOptions(keepalive_interval=1.0, keepalive_misses=30)
    unit, post = WebRtcLink(options, unit_id, keys), WebRtcLink(options, post_id, keys)
    allow_low_bitrates(
        floor_bps=30_000, start_bps=int(rate_kbps * 1000 * 0.7), cap_bps=int(rate_kbps * 1000 * 0.85)
    )
    scene = walking_past(duration_s=3600)
    track = LiveVideoTrack(
        lambda t: render(scene, t % 8.0),
        Anonymiser(),
        bitrate=lambda: encoder_bitrate(unit.video_sender(post_id.node_id)) or int(rate_kbps * 700),
    )
    unit.video_source = lambda peer: track
    hub = VideoHub(record_to)
    hub.attach(post)
    events = _Quiet()
    await unit.start(events)
    await post.start(_Quiet())
    seen: list[tuple[int, int, float]] = []  # (frame number, latency ms, arrival)
    try:
        began = time.monotonic()
        await connect(unit, post, path)
        async with asyncio.timeout(20):
            while unit_id.node_id not in hub.streams:
                await asyncio.sleep(0.01)
        viewer = hub.subscribe(unit_id.node_id)
        first: float | None = None
        unreadable = 0
        async with asyncio.timeout(seconds + 20):
            while first is None or time.monotonic() - first < seconds:
                frame = await viewer.recv()
                now = time.monotonic()
                stamp = read_stamp(frame.to_ndarray(format="rgb24"))
                if stamp is None:
                    unreadable += 1
                    continue
                if first is None:
                    first = now
                    to_first = now - began
                seen.append((stamp[0], latency_ms(stamp[1], int(time.time() * 1000)), now))
    finally:
        await unit.stop()
        await post.stop()
        await hub.close()
        shaper.stop()
    numbers = [n for n, _, _ in seen]
    latencies = sorted(lat for _, lat, _ in seen)
    gaps = [b[2] - a[2] for a, b in itertools.pairwise(seen)]
    span = seen[-1][2] - seen[0][2]
    rungs = Counter(f"{s.width}x{s.height}@{s.fps:g}" for s in track.steps)
    return {
        "rate_kbps": rate_kbps,
        "loss": loss,
        "time_to_first_frame_s": round(to_first, 3),
        "fps": round((len(set(numbers)) - 1) / span, 2) if span > 0 else 0.0,
        "latency_ms_p50": latencies[len(latencies) // 2],
        "latency_ms_p95": latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))],
        "freezes_over_500ms": sum(1 for gap in gaps if gap > FREEZE_S),
        "longest_gap_s": round(max(gaps, default=0.0), 3),
        "frames_decoded": len(seen),
        "frames_unreadable": unreadable,
        "frames_sent": track.frames,
        "ladder_rung": rungs.most_common(1)[0][0],
        "blur_ms_per_frame_p50": round(statistics.median(track.blur_ms), 2),
        "offer_bytes": path.sizes.get("offer"),
        "answer_bytes": path.sizes.get("answer"),
        "shaper_dropped": sum(d.dropped for d in shaper.directions.values()),
    }


async def bundles_per_second(kind: str) -> float:
    """``BUNDLES`` bundles a -> b over one link of ``kind`` ("webrtc" or "ip"), both nodes with
    their SQLite stores; bundles/s from the first send to the last delivery."""
    authority = Authority.generate()
    members = []
    for name in ("a", "b"):
        identity = Identity.generate()
        members.append(
            (identity, authority.issue(identity.public, frozenset(), name, int(time.time()) + 3600))
        )
    trust = TrustStore(authority.public, [certificate for _, certificate in members])
    port = _free_port()
    links: list[WebRtcLink | IpLink] = []
    for index, (identity, certificate) in enumerate(members):
        if kind == "ip":
            address = f"tcp://127.0.0.1:{port}"
            config = (
                IpLinkConfig(listen=address, bitrate=1e9)
                if index
                else IpLinkConfig(peers=(address,), bitrate=1e9)
            )
            links.append(IpLink(config, Credentials(identity, certificate), Trust(authority.public)))
        else:
            links.append(WebRtcLink(WebRtcLinkOptions(bitrate=1e8), identity, trust.check))
    shaper = UdpShaper(get_host_addresses(use_ipv4=True, use_ipv6=False)[0], Shaping())
    await shaper.start()
    with tempfile.TemporaryDirectory() as tmp:
        nodes = []
        for index, (identity, certificate) in enumerate(members):
            engine = await NodeEngine.open(
                identity, certificate, trust, Path(tmp) / f"{index}.sqlite", now=to_epoch(time.time())
            )
            nodes.append(Node(engine, [links[index]]))
        a, b = nodes
        try:
            for node in (b, a):
                await node.start()
            first, second = links
            if isinstance(first, WebRtcLink) and isinstance(second, WebRtcLink):
                await connect(first, second, _Path(shaper))
            async with asyncio.timeout(20):
                while b.node_id not in first.peers():
                    await asyncio.sleep(0.01)
            started = time.perf_counter()
            for _ in range(BUNDLES // BATCH):  # concurrent sends share the store's group commits
                await asyncio.gather(
                    *(
                        a.send(Destination.to_node(b.node_id), bytes(BUNDLE_BYTES), kind=Kind.TEXT)
                        for _ in range(BATCH)
                    )
                )
            received = 0
            async with asyncio.timeout(120):
                async for delivery in b.inbox():
                    await b.ack(delivery.bundle_id)
                    received += 1
                    if received == BUNDLES:
                        break
            return round(BUNDLES / (time.perf_counter() - started), 1)
        finally:
            await a.stop()
            await b.stop()
            shaper.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run() -> dict[str, Any]:
    cases = [asyncio.run(video_case(rate, loss)) for rate in RATES_KBPS for loss in LOSSES]
    firsts = sorted(
        asyncio.run(video_case(256, 0.0, seconds=1.0, seed=i))["time_to_first_frame_s"] for i in range(5)
    )
    return {
        "video": cases,
        "time_to_first_frame_s": {"runs": firsts, "p95": firsts[-1], "stun": "none configured"},
        "signal_bytes": {"offer": cases[0]["offer_bytes"], "answer": cases[0]["answer_bytes"]},
        "bundles_per_s": {
            "webrtc": asyncio.run(bundles_per_second("webrtc")),
            "ip": asyncio.run(bundles_per_second("ip")),
        },
    }
