"""A receiver that reads IP records faster than it handles their frames (a loaded command post) must
not make the sender time out and resend its backlog: two real Nodes over real IpLinks on 127.0.0.1.

The receiver's node reads records at socket speed and acknowledges them, so the sender's window
grows and seconds of frames wait in the receiver's queue, past the 2 s custody floor. The frames are
not lost (an IP session is ordered and loses frames only with the connection), and the receiver
keeps acknowledging older copies: the sender waits (relay/core/custody.py, ordered links)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from engine_net import ip_field

from relay.bundle import Destination, Kind, to_epoch
from relay.engine import Outgoing
from relay.node import Node

COUNT = 4000
HANDLE_S = 0.002  # per frame and batch at the receiver (two batches run at once): about 4 s for all
STALL_S = 3.5  # the receiver's one stall: past the 2 s custody floor, short of the 40 s test bound

Frames = Sequence[tuple[str, bytes, bytes]]
Handle = Callable[[Frames, float], Awaitable[None]]
Handler = Callable[[Handle, Frames, float], Awaitable[None]]


async def _backlog_to(tmp_path: Path, handle_slowly: Handler) -> tuple[int, float]:
    """Send COUNT bundles from a field unit to a command post whose frame handling is
    ``handle_slowly(handle, frames, now)``; the sender's resends and the seconds it took."""
    ip = ip_field()
    post, sender = [
        Node(await ip.net.open(name, tmp_path, to_epoch(time.time())), [ip.link(name)])
        for name in ("post", "field")
    ]
    handle = post.engine.frames_received
    handled = 0

    async def slowly(frames: Frames, now: float) -> None:
        nonlocal handled
        await handle_slowly(handle, frames, now)
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
        return custody.retries, time.monotonic() - started
    finally:
        await sender.stop()
        await post.stop()


async def test_a_slow_receiver_does_not_make_the_sender_resend_its_backlog(tmp_path: Path) -> None:
    async def slowly(handle: Handle, frames: Frames, now: float) -> None:
        await asyncio.sleep(len(frames) * HANDLE_S)  # the loop stays free: records keep being read
        await handle(frames, now)

    retries, took = await _backlog_to(tmp_path, slowly)
    assert took > 3.0, f"the receiver handled {COUNT} frames in {took:.1f} s: it was not slow"
    # Before the fix the copies queued at the receiver past 2 s all timed out: ~1,500 resends.
    print(f"{retries} resends in {took:.1f} s")
    assert retries <= COUNT // 100, f"{retries} resends of {COUNT} in {took:.1f} s"


async def test_a_receiver_that_stalls_gets_a_probe_not_its_backlog_again(tmp_path: Path) -> None:
    """The command post stops handling frames for 3.5 s (a stalled disk) while its session stays up
    (its loop answers keepalives): past the 2 s custody floor the sender sends one copy again as a
    probe, where it sent every copy in flight (relay/core/custody.py, a silent neighbour)."""
    resume_at: float | None = None

    async def stalls_once(handle: Handle, frames: Frames, now: float) -> None:
        nonlocal resume_at
        if resume_at is None:
            resume_at = time.monotonic() + STALL_S  # every batch waits: one store, one disk
        await asyncio.sleep(resume_at - time.monotonic())
        await handle(frames, now)

    retries, took = await _backlog_to(tmp_path, stalls_once)
    assert took >= STALL_S, f"{COUNT} frames in {took:.1f} s: the receiver did not stall"
    print(f"{retries} resends in {took:.1f} s")
    assert retries <= 4, f"{retries} resends of {COUNT} after a {STALL_S} s stall"
