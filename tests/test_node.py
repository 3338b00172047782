"""Node on the in-process link: real stores, real crypto, real asyncio tasks; no sockets."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from engine_net import IP, LORA, Deployment

from relay.bundle import CompactContext, Destination, Kind, Priority, to_epoch
from relay.core.frames import DataFrame, decode_frame
from relay.core.receipts import State
from relay.engine import Delivery
from relay.links.inproc import InprocHub, InprocLink
from relay.node import Node


async def test_send_both_ways_and_status_becomes_delivered(tmp_path: Path) -> None:
    net = Deployment()
    net.enrol("post", frozenset({"command"}))
    net.enrol("field")
    hub = InprocHub()
    nodes = []
    for name in ("post", "field"):
        engine = await net.open(name, tmp_path, to_epoch(time.time()))
        nodes.append(Node(engine, [InprocLink(hub, engine.node_id, IP)]))
    post, field = nodes
    for node in nodes:
        await node.start()
    try:
        to_field = await post.send(Destination.to_node(field.node_id), b"evacuate", kind=Kind.TEXT)
        to_post = await field.send(
            Destination.to_node(post.node_id), b"SOS", kind=Kind.SOS, priority=Priority.FLASH
        )

        async def first(node: Node) -> Delivery:
            async for delivery in node.inbox():
                await node.ack(delivery.bundle_id)
                return delivery
            raise AssertionError("inbox ended")

        got_field = await asyncio.wait_for(first(field), 10)
        got_post = await asyncio.wait_for(first(post), 10)
        assert got_field.payload == b"evacuate" and got_field.bundle_id == to_field
        assert got_post.payload == b"SOS" and got_post.priority is Priority.FLASH
        for _ in range(100):
            if (
                post.status(to_field).state is State.DELIVERED
                and field.status(to_post).state is State.DELIVERED
            ):
                break
            await asyncio.sleep(0.05)
        assert post.status(to_field).state is State.DELIVERED
        assert field.status(to_post).state is State.DELIVERED
    finally:
        for node in nodes:
            await node.stop()


async def test_big_bundle_crosses_a_small_mtu_link_in_fragments(tmp_path: Path) -> None:
    net = Deployment()
    net.enrol("camera")
    net.enrol("post")
    hub = InprocHub()
    nodes = []
    for name in ("camera", "post"):
        engine = await net.open(name, tmp_path, to_epoch(time.time()))
        nodes.append(Node(engine, [InprocLink(hub, engine.node_id, LORA)]))
    camera, post = nodes
    for node in nodes:
        await node.start()
    try:
        snapshot = bytes(range(256)) * 4
        bundle_id = await camera.send(
            Destination.to_node(post.node_id), snapshot, kind=Kind.TEXT, priority=Priority.FLASH
        )
        async with asyncio.timeout(20):
            async for delivery in post.inbox():
                assert (delivery.bundle_id, delivery.payload) == (bundle_id, snapshot)
                await post.ack(delivery.bundle_id)
                break
    finally:
        for node in nodes:
            await node.stop()


class _BrokenRadioLink(InprocLink):
    """An in-process link that sends alongside (as LoRa does) and whose first DATA frame's send
    fails with an error no link should raise."""

    flash_alongside = 2

    def __init__(self, hub: InprocHub, node_id: bytes, context: CompactContext | None) -> None:
        super().__init__(hub, node_id, LORA)
        self.context = context
        self.failed = False

    async def send(self, peer: bytes, frame: bytes) -> None:
        if not self.failed and isinstance(decode_frame(frame, self.context), DataFrame):
            self.failed = True
            raise RuntimeError("radio driver bug")
        await super().send(peer, frame)


async def test_an_unexpected_error_in_a_send_alongside_is_logged_and_the_link_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    net = Deployment()
    net.enrol("post", frozenset({"command"}))
    net.enrol("field")
    hub = InprocHub()
    post_engine = await net.open("post", tmp_path, to_epoch(time.time()))
    field_engine = await net.open("field", tmp_path, to_epoch(time.time()))
    post = Node(post_engine, [InprocLink(hub, post_engine.node_id, LORA)])
    link = _BrokenRadioLink(hub, field_engine.node_id, field_engine.core.context)
    field = Node(field_engine, [link])
    for node in (post, field):
        await node.start()
    try:
        to_post = Destination.to_node(post.node_id)
        await field.send(to_post, b"first alarm", kind=Kind.SOS, priority=Priority.FLASH)
        await field.send(to_post, b"second alarm", kind=Kind.SOS, priority=Priority.FLASH)

        async def second() -> bytes:
            async for delivery in post.inbox():
                await post.ack(delivery.bundle_id)
                if delivery.payload == b"second alarm":
                    return delivery.payload
            raise AssertionError("inbox ended")

        assert await asyncio.wait_for(second(), 30) == b"second alarm"
        assert link.failed
        assert any("failed sending" in record.getMessage() for record in caplog.records)
    finally:
        for node in (post, field):
            await node.stop()
