"""A FLASH alarm whose first next hop is down reaches the command post through its second, in the one
broadcast the field unit sends to both (issue 15): four Mesh112 nodes, each on its own emulated
Meshtastic radio through the real meshtastic library. The field unit hears two relays, each of
which hears the post; the field unit cannot hear the post."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from engine_net import Deployment

from crypto.hop import HOP_OVERHEAD, HopAuth
from field.lora_emulator.device import DeviceServer
from field.lora_emulator.medium import LoRaMedium
from field.lora_emulator.radio import EmulatedRadio
from relay.bundle import Bundle, BundleId, Destination, Kind, Priority, to_epoch
from relay.links.lora import LoRaLink, LoRaLinkConfig
from relay.node import Node

RADIOS = {
    "post": (0xA0000001, (0.0, 0.0)),
    "r1": (0xA0000002, (900.0, 200.0)),
    "r2": (0xA0000004, (900.0, -200.0)),
    "field": (0xA0000003, (1800.0, 0.0)),
}
NEIGHBOURS = {"post": ("r1", "r2"), "r1": ("post", "field"), "r2": ("post", "field"), "field": ("r1", "r2")}
PORT = 300  # the LoRa link's default application port


async def until(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return False


async def _delivered(post: Node, bundle_id: BundleId) -> None:
    async for delivery in post.inbox():
        await post.ack(delivery.bundle_id)
        if delivery.bundle_id == bundle_id:
            return


async def test_an_alarm_reaches_the_post_through_the_second_next_hop_of_one_broadcast(tmp_path: Path) -> None:
    net = Deployment()
    for name in RADIOS:
        net.enrol(name, frozenset({"command"}) if name == "post" else frozenset())
    medium = LoRaMedium("LONG_FAST", seed=5, speedup=20)
    radios = {name: EmulatedRadio(medium, num, position=at, seed=5) for name, (num, at) in RADIOS.items()}
    servers = {name: DeviceServer(radio) for name, radio in radios.items()}
    nodes: dict[str, Node] = {}
    try:
        for server in servers.values():
            server.start()
        assert medium.quality(RADIOS["field"][0], RADIOS["post"][0]).loss == 1.0
        for name in RADIOS:
            engine = await net.open(name, tmp_path, to_epoch(time.time()))
            roster = {RADIOS[n][0]: net.members[n][1].node_id.hex() for n in NEIGHBOURS[name]}
            config = LoRaLinkConfig(roster=roster, port=servers[name].port, ack_timeout_s=3.0)
            nodes[name] = Node(engine, [LoRaLink(config, HopAuth(net.members[name][0]), engine.trust.check)])
        for node in nodes.values():
            await node.start()
        post, field = nodes["post"], nodes["field"]
        to_post = Destination.to_node(post.node_id)
        router = field.engine.core.router
        probe = Bundle(field.node_id, to_post, 0, 1, 3600, Priority.FLASH, 1, b"FIRE B2-Z14 floor 2")
        sizes = {False: 120, True: 120}
        hops = lambda: router.next_hops(probe, sizes)  # noqa: E731
        assert await until(lambda: len(hops()) == 2 and all(h.directed for h in hops()), 60), (
            "routes via r1, r2"
        )
        first, second = (hop.peer for hop in hops())
        hello = await field.send(to_post, b"on scene", kind=Kind.TEXT, priority=Priority.PRIORITY)
        await asyncio.wait_for(_delivered(post, hello), 60)  # the field's first exchanges are over
        names = {nodes[n].node_id: n for n in ("r1", "r2")}
        down = names[first]
        await nodes.pop(down).stop()  # the first next hop's node is down; the field unit does not know
        servers.pop(down).stop()
        before = len(radios["field"].sent_from_phone)
        alarm = await field.send(to_post, b"FIRE B2-Z14 floor 2", kind=Kind.SOS, priority=Priority.FLASH)
        await asyncio.wait_for(_delivered(post, alarm), 60)
        sent = [p for p in radios["field"].sent_from_phone[before:] if p.decoded.portnum == PORT]
        two = [p for p in sent if p.to == 0xFFFFFFFF and p.decoded.payload[-1] >> 5 == 1]
        assert two, "the alarm left the field unit tagged for both next hops"
        payload = two[0].decoded.payload
        frame = payload[: -(1 + HOP_OVERHEAD * (payload[-1] & 31))]
        alone = [
            p for p in sent if p.to == RADIOS[names[second]][0] and p.decoded.payload[:-HOP_OVERHEAD] == frame
        ]
        assert not alone, "no copy of its own to the second next hop"
        carried = [p for p in radios[names[second]].sent_from_phone if p.decoded.portnum == PORT]
        assert carried, f"{names[second]}, the second next hop, carried the alarm to the post"
    finally:
        for node in nodes.values():
            await node.stop()
        for server in servers.values():
            server.stop()
        medium.close()
