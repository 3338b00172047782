"""The node admits queued frames in bounded batches (issue 15): one engine call and one store commit
per batch, never more than MAX_BATCH_FRAMES, and a neighbour going away keeps its place among them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

from engine_net import IP, Deployment

from relay.bundle import Destination, Kind, Priority, to_epoch
from relay.links.inproc import InprocHub, InprocLink
from relay.node import MAX_BATCH_FRAMES, Node

BUNDLES = MAX_BATCH_FRAMES + 44


async def test_queued_frames_are_admitted_in_bounded_batches_in_arrival_order(tmp_path: Path) -> None:
    net = Deployment()
    net.enrol("a")
    net.enrol("b")
    now = to_epoch(time.time())
    a = await net.open("a", tmp_path, now)
    engine = await net.open("b", tmp_path, now)
    node = Node(engine, [InprocLink(InprocHub(), engine.node_id, IP)])
    calls: list[tuple[str, int]] = []
    admit, down = engine.frames_received, engine.link_down

    async def frames_spy(frames: Sequence[tuple[str, bytes, bytes]], at: float) -> None:
        calls.append(("frames", len(frames)))
        await admit(frames, at)

    async def down_spy(link: str, peer: bytes, at: float) -> None:
        calls.append(("down", 0))
        await down(link, peer, at)

    engine.frames_received = frames_spy  # type: ignore[method-assign]
    engine.link_down = down_spy  # type: ignore[method-assign]
    try:
        await a.link_up(IP, engine.node_id, now)
        sent = await asyncio.gather(
            *(
                a.send(
                    Destination.to_node(engine.node_id),
                    b"%d" % n,
                    kind=Kind.TEXT,
                    priority=Priority.ROUTINE,
                    lifetime=600,
                    now=now,
                )
                for n in range(BUNDLES)
            )
        )
        frames = []
        while (out := a.next_frame("ip0", now)) is not None:
            frames.append(out[1])
        assert len(frames) >= BUNDLES
        # Everything is queued before the node's tasks run: the worst case for batch size.
        node.link_up("ip0", a.node_id)
        for frame in frames:
            node.frame_received("ip0", a.node_id, frame)
        node.link_down("ip0", a.node_id)
        for frame in frames[:5]:  # heard again after the neighbour left: a batch of their own
            node.frame_received("ip0", a.node_id, frame)
        await node.start()
        delivered = []
        async with asyncio.timeout(30):
            async for batch in node.inbox_batches():
                delivered += [delivery.bundle_id for delivery in batch]
                await node.ack_many(batch)
                if len(delivered) >= BUNDLES:
                    break
        for _ in range(100):  # the five frames after the neighbour left are handled last
            if calls and calls[-1] == ("frames", 5):
                break
            await asyncio.sleep(0.02)
        assert sorted(delivered) == sorted(sent), "each bundle delivered once"
        sizes = [size for what, size in calls if what == "frames"]
        assert max(sizes) <= MAX_BATCH_FRAMES
        assert len(sizes) <= 4, f"{len(frames)} queued frames took {len(sizes)} batches: {calls}"
        gone = calls.index(("down", 0))
        assert sum(size for what, size in calls[:gone] if what == "frames") == len(frames)
        assert calls[gone + 1 :] == [("frames", 5)]
        assert await engine.store.pending_deliveries() == []
    finally:
        await node.stop()
        await a.close()
