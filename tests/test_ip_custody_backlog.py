"""A receiver that reads IP records faster than it handles their frames (a loaded command post) must
not make the sender time out and resend its backlog: two real Nodes over real IpLinks on 127.0.0.1.

The receiver's node reads records at socket speed and acknowledges them, so the sender's window
grows and seconds of frames wait in the receiver's queue, past the 2 s custody floor. The frames are
not lost (an IP session is ordered and loses frames only with the connection), and the receiver
keeps acknowledging older copies: the sender waits (relay/core/custody.py, ordered links)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Sequence
from pathlib import Path

from engine_net import Deployment

from relay.bundle import Destination, Kind, to_epoch
from relay.engine import Outgoing
from relay.links.ip import IpLink, IpLinkConfig
from relay.links.ip_handshake import Credentials, Trust
from relay.node import Node

TIMING = {"keepalive_interval": 0.25, "keepalive_misses": 3, "reconnect_min": 0.05, "reconnect_max": 0.5}
COUNT = 4000
HANDLE_S = 0.002  # per frame and batch at the receiver (two batches run at once): about 4 s for all


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_a_slow_receiver_does_not_make_the_sender_resend_its_backlog(tmp_path: Path) -> None:
    net = Deployment()
    net.enrol("post", frozenset({"command"}))
    net.enrol("field")
    trust = Trust(net.authority.public, net.authority.revocations)
    port = free_port()
    configs = {
        "post": IpLinkConfig(listen=f"tcp://127.0.0.1:{port}", **TIMING),
        "field": IpLinkConfig(peers=(f"tcp://127.0.0.1:{port}",), **TIMING),
    }
    post, sender = [
        Node(
            await net.open(name, tmp_path, to_epoch(time.time())),
            [IpLink(configs[name], Credentials(*net.members[name]), trust)],
        )
        for name in ("post", "field")
    ]
    handle = post.engine.frames_received
    handled = 0

    async def slowly(frames: Sequence[tuple[str, bytes, bytes]], now: float) -> None:
        nonlocal handled
        await asyncio.sleep(len(frames) * HANDLE_S)  # the loop stays free: records keep being read
        await handle(frames, now)
        handled += len(frames)

    post.engine.frames_received = slowly  # type: ignore[method-assign]
    await post.start()
    try:
        to_post = Destination.to_node(post.node_id)
        for start in range(0, COUNT, 500):
            results = await sender.send_many(
                [Outgoing(to_post, b"%05d" % i + bytes(95), Kind.TEXT) for i in range(start, start + 500)]
            )
            assert all(not isinstance(result, Exception) for result in results)
        started = time.monotonic()
        await sender.start()
        custody = sender.engine.core.custody
        async with asyncio.timeout(40):
            while len(custody) or handled < COUNT:
                await asyncio.sleep(0.05)
        took = time.monotonic() - started
        assert took > 3.0, f"the receiver handled {COUNT} frames in {took:.1f} s: it was not slow"
        # Before the fix the copies queued at the receiver past 2 s all timed out: ~1,500 resends.
        print(f"{custody.retries} resends in {took:.1f} s")
        assert custody.retries <= COUNT // 100, f"{custody.retries} resends of {COUNT} in {took:.1f} s"
    finally:
        await sender.stop()
        await post.stop()
