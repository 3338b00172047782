"""WebRTC signalling over LoRa alone: the field unit's offer and the command post's answer travel
as bundles over emulated Meshtastic radios through the real meshtastic library, each in one LoRa
frame; then a bundle too big for LoRa crosses the data channel they set up."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from engine_net import Deployment

from crypto.hop import HopAuth
from field.lora_emulator.device import DeviceServer
from field.lora_emulator.medium import LoRaMedium
from field.lora_emulator.radio import EmulatedRadio
from relay.bundle import Destination, Kind, Priority, to_epoch
from relay.core.frames import FrameType
from relay.links.lora import LoRaLink, LoRaLinkConfig
from relay.links.webrtc import WebRtcLink
from relay.links.webrtc_config import WebRtcLinkOptions
from relay.links.webrtc_mesh import MeshSignaller
from relay.node import Node

RADIOS = {"post": 0xA0000001, "field": 0xA0000003}


async def serve(node: Node, signaller: MeshSignaller, got: list[tuple[int, int, bytes]]) -> None:
    """The node's inbox: signals to the signaller, everything else recorded."""
    async for delivery in node.inbox():
        got.append((delivery.kind, delivery.priority, delivery.payload))
        records = await signaller.handle(delivery)
        assert all(r.body["state"] in ("answered", "connecting") for r in records), records
        await node.ack(delivery.bundle_id)


async def test_an_sos_video_offer_and_its_answer_cross_lora_in_one_frame_each(tmp_path: Path) -> None:
    net = Deployment()
    net.enrol("post", frozenset({"command"}))
    net.enrol("field")
    medium = LoRaMedium("LONG_FAST", seed=3, speedup=20)
    radios = {
        name: EmulatedRadio(medium, num, position=(i * 500.0, 0.0), seed=3)
        for i, (name, num) in enumerate(RADIOS.items())
    }
    servers = {name: DeviceServer(radio) for name, radio in radios.items()}
    for server in servers.values():
        server.start()
    nodes: dict[str, Node] = {}
    signallers: dict[str, MeshSignaller] = {}
    got: dict[str, list[tuple[int, int, bytes]]] = {"post": [], "field": []}
    tasks: list[asyncio.Task[None]] = []
    try:
        for name, other in (("post", "field"), ("field", "post")):
            engine = await net.open(name, tmp_path, to_epoch(time.time()))
            roster = {RADIOS[other]: net.members[other][1].node_id.hex()}
            lora = LoRaLink(
                LoRaLinkConfig(roster=roster, port=servers[name].port, ack_timeout_s=10.0),
                HopAuth(net.members[name][0]),
                engine.trust.check,
            )
            webrtc = WebRtcLink(
                WebRtcLinkOptions(connect_timeout=60.0), net.members[name][0], engine.trust.check
            )
            nodes[name] = Node(engine, [lora, webrtc])
            signallers[name] = MeshSignaller(nodes[name], webrtc)
        for name, node in nodes.items():
            await node.start()
            tasks.append(asyncio.create_task(serve(node, signallers[name], got[name])))
        post, field = nodes["post"], nodes["field"]
        field_link = field.links["webrtc0"]
        assert isinstance(field_link, WebRtcLink)
        field_link.connect(post.node_id, sos=True)  # the crew asks the command post to see its video
        async with asyncio.timeout(60):
            while post.node_id not in field_link.peers():
                await asyncio.sleep(0.05)
        frames = {
            name: [(p.decoded.payload[0] >> 4, len(p.decoded.payload)) for p in radio.sent_from_phone]
            for name, radio in radios.items()
        }
        for name, sent in frames.items():
            signal_frames = [size for kind, size in sent if kind == FrameType.DATA_COMPACT and size > 150]
            assert len(signal_frames) == 1 and signal_frames[0] <= 219, f"{name}: {sent}"
            assert all(kind != FrameType.FRAGMENT for kind, _ in sent), f"{name}: a signal was fragmented"
        signals = {name: [(k, p) for k, p, _ in got[name] if k == Kind.WEBRTC_SIGNAL] for name in got}
        assert signals == {  # an SOS video request travels as FLASH, and so does its answer
            "post": [(Kind.WEBRTC_SIGNAL, Priority.FLASH)],
            "field": [(Kind.WEBRTC_SIGNAL, Priority.FLASH)],
        }
        picture = bytes(range(256)) * 200  # 51 kB: far too big for LoRa's budget
        await field.send(Destination.to_node(post.node_id), picture, kind=Kind.TEXT, priority=Priority.BULK)
        async with asyncio.timeout(30):
            while len(got["post"]) < 2:
                await asyncio.sleep(0.05)
        assert got["post"][1] == (Kind.TEXT, Priority.BULK, picture)
        kinds = [p.decoded.payload[0] >> 4 for p in radios["field"].sent_from_phone]
        assert FrameType.FRAGMENT not in kinds, "the picture must have crossed the data channel, not LoRa"
        assert signallers["post"].refused == signallers["field"].refused == 0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for node in nodes.values():
            await node.stop()
        for server in servers.values():
            server.stop()
        medium.close()
