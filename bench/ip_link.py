"""IP link benchmark: one-way throughput with batching, keepalive RTT, tcp vs tls+tcp, on 127.0.0.1.

Side by side with the peer figure that motivated batching: raw pynng asyncio, one message per
frame, same frame sizes, same loop. Figures are medians of ``ROUNDS`` runs. The links are given a
``bitrate`` far above loopback speed (``FULL_SPEED``) because the sender paces to its bitrate.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pynng

from crypto.certificate import Authority
from crypto.identity import Identity
from relay.links.ip import IpLink, IpLinkConfig
from relay.links.ip_handshake import Credentials, Trust
from relay.links.ip_tls import ensure_self_signed

ROUNDS = 3
FRAMES = {100: 100_000, 1024: 40_000}  # frame size -> frames per round
RTT_SAMPLES = 200
FULL_SPEED = 1e9  # bytes/s: no pacing on loopback


class _Counter:
    def __init__(self) -> None:
        self.frames = 0
        self.up = asyncio.Event()
        self.done = asyncio.Event()
        self.target = 0

    def link_up(self, link: str, peer: bytes) -> None:
        self.up.set()

    def link_down(self, link: str, peer: bytes) -> None:
        pass

    def frame_received(self, link: str, peer: bytes, frame: bytes) -> None:
        self.frames += 1
        if self.frames >= self.target:
            self.done.set()


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _enrol(authority: Authority, name: str, now: int) -> Credentials:
    identity = Identity.generate()
    return Credentials(
        identity, authority.issue(identity.public, frozenset({"relay"}), name, now + 3600, now=now)
    )


async def _pair(scheme: str, workdir: Path, **options: Any) -> tuple[IpLink, IpLink, _Counter, _Counter]:
    now = int(time.time())
    authority = Authority.generate(now=now - 10)
    trust = Trust(authority.public, authority.revocations)
    port = _port()
    tls = ensure_self_signed(workdir / f"tls-{port}") if scheme == "tls+tcp" else None
    listener = IpLink(
        IpLinkConfig(listen=f"{scheme}://127.0.0.1:{port}", tls=tls, **options),
        _enrol(authority, "cp", now),
        trust,
    )
    dialler = IpLink(
        IpLinkConfig(peers=(f"{scheme}://127.0.0.1:{port}",), tls=tls, **options),
        _enrol(authority, "f", now),
        trust,
    )
    at_listener, at_dialler = _Counter(), _Counter()
    await listener.start(at_listener)
    await dialler.start(at_dialler)
    async with asyncio.timeout(10):
        await at_listener.up.wait()
        await at_dialler.up.wait()
    return listener, dialler, at_listener, at_dialler


async def _throughput(scheme: str, size: int, count: int, workdir: Path) -> float:
    listener, dialler, at_listener, _ = await _pair(scheme, workdir, bitrate=FULL_SPEED)
    try:
        at_listener.target = count
        frame = b"x" * size
        started = time.perf_counter()
        for _ in range(count):
            await dialler.send(listener.node_id, frame)
        async with asyncio.timeout(120):
            await at_listener.done.wait()
        return count / (time.perf_counter() - started)
    finally:
        await dialler.stop()
        await listener.stop()


async def _rtt(scheme: str, workdir: Path) -> list[float]:
    listener, dialler, _, _ = await _pair(scheme, workdir, keepalive_interval=0.01, keepalive_misses=50)
    try:
        async with asyncio.timeout(60):
            while len(dialler.metrics().peers[0].rtt_samples) < RTT_SAMPLES:
                await asyncio.sleep(0.1)
        return list(dialler.metrics().peers[0].rtt_samples)
    finally:
        await dialler.stop()
        await listener.stop()


async def _raw_pynng_per_message(size: int, count: int) -> float:
    """The peer figure: pynng's asyncio API, one socket message per frame, no batching."""
    address = f"tcp://127.0.0.1:{_port()}"
    with pynng.Pair1(listen=address) as receiver, pynng.Pair1(dial=address) as sender:
        frame = b"x" * size

        async def receive() -> None:
            for _ in range(count):
                await receiver.arecv()

        started = time.perf_counter()
        receiving = asyncio.create_task(receive())
        for _ in range(count):
            await sender.asend(frame)
        async with asyncio.timeout(120):
            await receiving
        return count / (time.perf_counter() - started)


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _run() -> dict[str, Any]:
    results: dict[str, Any] = {"rounds": ROUNDS}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for scheme in ("tcp", "tls+tcp"):
            for size, count in FRAMES.items():
                rates = [await _throughput(scheme, size, count, workdir) for _ in range(ROUNDS)]
                rate = statistics.median(rates)
                results[f"{scheme}_{size}B_frames_per_s"] = round(rate)
                results[f"{scheme}_{size}B_MB_per_s"] = round(rate * size / 1e6, 2)
            samples = await _rtt(scheme, workdir)
            results[f"{scheme}_keepalive_rtt_p50_ms"] = round(_percentile(samples, 0.5) * 1000, 3)
            results[f"{scheme}_keepalive_rtt_p99_ms"] = round(_percentile(samples, 0.99) * 1000, 3)
    for size in FRAMES:
        count = 3_000
        rates = [await _raw_pynng_per_message(size, count) for _ in range(ROUNDS)]
        results[f"peer_raw_pynng_asyncio_{size}B_msgs_per_s"] = round(statistics.median(rates))
    return results


def run() -> dict[str, Any]:
    return asyncio.run(_run())
