"""End to end over LoRa: three Mesh112 nodes, each on its own emulated Meshtastic radio through the
real meshtastic library. The field unit cannot hear the command post; the relay in between can."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from engine_net import Deployment
from lora_air import RADIOS, Air, lora_line, stop_field

from crypto.hop import HopAuth
from field.lora_emulator.device import DeviceServer
from field.lora_emulator.medium import LoRaMedium
from field.lora_emulator.radio import EmulatedRadio
from relay.bundle import Destination, Kind, Priority, to_epoch
from relay.links.lora import LoRaLink, LoRaLinkConfig
from relay.node import Node


async def test_flash_alarm_crosses_two_lora_hops_ahead_of_queued_bulk(tmp_path: Path) -> None:
    with lora_line(4) as air:
        await _flash_ahead_of_bulk(tmp_path, air)


async def _flash_ahead_of_bulk(tmp_path: Path, air: Air) -> None:
    net, radios = air.net, air.radios
    nodes: dict[str, Node] = {}
    try:
        for name in RADIOS:
            engine = await net.open(name, tmp_path, to_epoch(time.time()))
            config = LoRaLinkConfig(
                roster=air.radio_roster(name), port=air.servers[name].port, ack_timeout_s=10.0
            )
            hop = HopAuth(net.members[name][0])
            nodes[name] = Node(engine, [LoRaLink(config, hop, engine.trust.check)])
        for node in nodes.values():
            await node.start()
        post, field = nodes["post"], nodes["field"]
        to_post = Destination.to_node(post.node_id)
        for i in range(3):
            await field.send(to_post, bytes([i]) * 600, kind=Kind.TEXT, priority=Priority.BULK)
        await asyncio.sleep(0.3)  # the BULK bundles are queued and their first fragments on the air
        alarm = await field.send(to_post, b"FIRE B2-Z14 floor 2", kind=Kind.SOS, priority=Priority.FLASH)
        order: list[object] = []

        async def collect() -> None:
            async for delivery in post.inbox():
                order.append(delivery.bundle_id)
                await post.ack(delivery.bundle_id)
                if alarm in order:
                    return

        await asyncio.wait_for(collect(), 60)
        assert order.index(alarm) <= 1, order  # at most one BULK bundle finished before the alarm
        relayed = [p for p in radios["relay"].sent_from_phone if p.to == RADIOS["post"][0]]
        assert relayed, "the alarm must have been carried by the relay node"
        assert len(radios["field"].sent_from_phone) >= 2  # BULK fragments went on air before the alarm
    finally:
        for node in nodes.values():
            await node.stop()


async def test_4k_message_crosses_in_fragments_with_20_percent_frame_loss(tmp_path: Path) -> None:
    net = Deployment()
    for name in ("post", "field"):
        net.enrol(name)
    medium = LoRaMedium("LONG_FAST", seed=9, speedup=100, extra_loss=0.2)
    servers = {}
    for name, num, x in (("post", 0xA0000001, 0.0), ("field", 0xA0000003, 500.0)):
        servers[name] = DeviceServer(EmulatedRadio(medium, num, position=(x, 0.0), seed=9))
        servers[name].start()
    nodes: dict[str, Node] = {}
    try:
        nums = {"post": 0xA0000001, "field": 0xA0000003}
        for name, other in (("post", "field"), ("field", "post")):
            engine = await net.open(name, tmp_path, to_epoch(time.time()))
            roster = {nums[other]: net.members[other][1].node_id.hex()}
            config = LoRaLinkConfig(roster=roster, port=servers[name].port, ack_timeout_s=5.0)
            hop = HopAuth(net.members[name][0])
            nodes[name] = Node(engine, [LoRaLink(config, hop, engine.trust.check)])
        for node in nodes.values():
            await node.start()
        post, field = nodes["post"], nodes["field"]
        message = bytes(range(256)) * 16
        sent = await field.send(
            Destination.to_node(post.node_id), message, kind=Kind.TEXT, priority=Priority.FLASH
        )

        async def first() -> bytes:
            async for delivery in post.inbox():
                await post.ack(delivery.bundle_id)
                assert delivery.bundle_id == sent
                return delivery.payload
            raise AssertionError("inbox ended")

        assert await asyncio.wait_for(first(), 90) == message
        assert medium.stats.lost > 0  # frames really were lost on the way
    finally:
        await stop_field(nodes.values(), servers.values(), medium)
