"""The engine's deliveries to its applications (a deque and an event, not an asyncio.Queue): a
receive waits for the first, returns everything waiting in arrival order, and one cancelled while
waiting loses nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from engine_net import IP, Deployment

from relay.bundle import Destination, Kind, Priority

T0 = 1000.0


async def test_receive_waits_then_takes_everything_in_order(tmp_path: Path) -> None:
    net = Deployment()
    net.enrol("a")
    net.enrol("b")
    a, b = await net.open("a", tmp_path, T0), await net.open("b", tmp_path, T0)
    await a.link_up(IP, b.node_id, T0)
    await b.link_up(IP, a.node_id, T0)

    async def deliver(texts: list[bytes]) -> None:
        for text in texts:
            await a.send(
                Destination.to_node(b.node_id),
                text,
                kind=Kind.TEXT,
                priority=Priority.ROUTINE,
                lifetime=3600,
                now=T0,
            )
        frames = []
        while (out := a.next_frame("ip0", T0)) is not None:
            frames.append(("ip0", a.node_id, out[1]))
        await b.frames_received(frames, T0)

    cancelled = asyncio.create_task(b.receive())
    await asyncio.sleep(0.01)
    assert not cancelled.done()  # nothing arrived: it waits
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)

    waiting = asyncio.create_task(b.receive())
    await asyncio.sleep(0.01)
    assert not waiting.done() and not b.deliveries_waiting()
    await deliver([b"one", b"two", b"three"])
    got = await asyncio.wait_for(waiting, 5)
    assert [d.payload for d in got] == [b"one", b"two", b"three"]
    assert not b.deliveries_waiting()

    await deliver([b"four", b"five"])
    assert b.deliveries_waiting()
    got = await asyncio.wait_for(b.receive(), 5)  # already waiting: no wait
    assert [d.payload for d in got] == [b"four", b"five"]
    await a.close()
    await b.close()
