"""A FLASH frame on LoRa does not wait for another frame's radio ACK (relay/node.py, ``flash_alongside``).

Over the real ``meshtastic`` library and the device emulator: the field unit has two neighbours in its
roster, the post next to it and a unit that went out of range. Its frames to that unit are never
ACKed: the radio tries three times, about 24 simulated seconds, then reports MAX_RETRANSMIT. An alarm
sent while such a frame awaits its ACK reaches the post within a few frame times all the same.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from engine_net import Deployment
from lora_air import stop_field

from crypto.hop import HopAuth
from field.lora_emulator.device import DeviceServer
from field.lora_emulator.medium import LoRaMedium
from field.lora_emulator.radio import EmulatedRadio
from relay.bundle import Destination, Kind, Priority, to_epoch
from relay.links.lora import LoRaLink, LoRaLinkConfig
from relay.links.lora_phy import MAX_DM_PAYLOAD, frame_airtime_s
from relay.node import Node

NUMS = {"post": 0xA0000001, "field": 0xA0000003, "gone": 0xA0000005}
SPEEDUP = 10


async def test_flash_goes_while_a_frame_to_a_silent_neighbour_awaits_its_ack(tmp_path: Path) -> None:
    net = Deployment()
    for name in NUMS:
        net.enrol(name, frozenset({"command"}) if name == "post" else frozenset())
    medium = LoRaMedium("LONG_FAST", seed=3, speedup=SPEEDUP)
    radios = {
        name: EmulatedRadio(medium, num, position=(900.0 * i, 0.0), rebroadcast=False, seed=3)
        for i, (name, num) in enumerate(NUMS.items())
    }
    medium.set_link(NUMS["field"], NUMS["gone"], loss=1.0)  # out of range: nothing it is sent is ACKed
    medium.set_link(NUMS["post"], NUMS["gone"], loss=1.0)
    servers = {name: DeviceServer(radios[name]) for name in ("post", "field")}
    nodes: dict[str, Node] = {}
    try:
        for server in servers.values():
            server.start()
        rosters = {"post": ("field",), "field": ("post", "gone")}
        for name, neighbours in rosters.items():
            engine = await net.open(name, tmp_path, to_epoch(time.time()))
            roster = {NUMS[n]: net.members[n][1].node_id.hex() for n in neighbours}
            config = LoRaLinkConfig(roster=roster, port=servers[name].port, ack_timeout_s=60.0)
            nodes[name] = Node(engine, [LoRaLink(config, HopAuth(net.members[name][0]), engine.trust.check)])
        for node in nodes.values():
            await node.start()
        post, field = nodes["post"], nodes["field"]
        link = field.links["lora0"]
        assert isinstance(link, LoRaLink)
        # The field unit's contact frames to the silent neighbour: wait until one is on the air.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30.0
        while not any(p.to == NUMS["gone"] for p in radios["field"].sent_from_phone):
            assert loop.time() < deadline, "no frame to the silent neighbour was sent"
            await asyncio.sleep(0.01)
        assert link.state().naks.get("MAX_RETRANSMIT", 0) == 0

        start = medium.now()
        alarm = await field.send(
            Destination.to_node(post.node_id), b"FIRE B2-Z14 floor 2", kind=Kind.SOS, priority=Priority.FLASH
        )

        async def arrival() -> float:
            async for delivery in post.inbox():
                await post.ack(delivery.bundle_id)
                if delivery.bundle_id == alarm:
                    return medium.now()
            raise AssertionError("the post's inbox ended")

        arrived = await asyncio.wait_for(arrival(), 60.0)
        waited = link.state().naks.get("MAX_RETRANSMIT", 0) > 0
        full_frame = frame_airtime_s("LONG_FAST", MAX_DM_PAYLOAD, True)
        # Before: the alarm waited for the silent neighbour's MAX_RETRANSMIT (about 24 s), then went.
        assert arrived - start < 4 * full_frame, (arrived - start, full_frame, waited)
        assert not waited, "the alarm arrived only after the silent neighbour's frame gave up"
    finally:
        await stop_field(nodes.values(), servers.values(), medium)
