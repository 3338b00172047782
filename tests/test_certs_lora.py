"""Certificates on demand over LoRa, through the real meshtastic library on emulated radios: a field
unit enrolled after the command post wrote its roster reaches the post through a relay. Only the
relay (its first hop) holds its certificate; the post asks the relay for it over the air."""

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
from relay.engine import NodeEngine
from relay.links.lora import LoRaLink, LoRaLinkConfig
from relay.node import Node
from relay.trust import TrustStore

RADIOS = {"post": (0xA0000001, 0.0), "relay": (0xA0000002, 900.0), "field": (0xA0000003, 1800.0)}
NEIGHBOURS = {"post": ("relay",), "relay": ("post", "field"), "field": ("relay",)}


async def test_sos_of_a_late_enrolled_unit_crosses_a_relay_to_a_post_that_never_had_its_certificate(
    tmp_path: Path,
) -> None:
    net = Deployment()
    for name in RADIOS:
        net.enrol(name, frozenset({"command"}) if name == "post" else frozenset({"responder"}))
    medium = LoRaMedium("LONG_FAST", seed=5, speedup=20)
    servers: dict[str, DeviceServer] = {}
    radios: dict[str, EmulatedRadio] = {}
    for name, (num, x) in RADIOS.items():
        radios[name] = EmulatedRadio(medium, num, position=(x, 0.0), seed=5)
        servers[name] = DeviceServer(radios[name])
        servers[name].start()
    assert medium.quality(RADIOS["field"][0], RADIOS["post"][0]).loss == 1.0
    nodes: dict[str, Node] = {}
    now = to_epoch(time.time())
    try:
        for name in RADIOS:
            identity, certificate = net.members[name]
            roster = [c for other, (_, c) in net.members.items() if name != "post" or other != "field"]
            trust = TrustStore(net.authority.public, roster)
            engine = await NodeEngine.open(identity, certificate, trust, tmp_path / f"{name}.sqlite", now=now)
            radio_roster = {RADIOS[n][0]: net.members[n][1].node_id.hex() for n in NEIGHBOURS[name]}
            config = LoRaLinkConfig(roster=radio_roster, port=servers[name].port, ack_timeout_s=10.0)
            nodes[name] = Node(engine, [LoRaLink(config, HopAuth(identity), engine.trust.check)])
        post, field = nodes["post"], nodes["field"]
        field_id = field.node_id
        assert post.engine.trust.certificate(field_id) is None
        for node in nodes.values():
            await node.start()
        sos = await field.send(
            Destination.to_node(post.node_id),
            b"SOS man down, floor 2",
            kind=Kind.SOS,
            priority=Priority.FLASH,
        )

        async def first() -> list[bytes]:
            async for delivery in post.inbox():
                await post.ack(delivery.bundle_id)
                return [delivery.bundle_id.key(), delivery.payload]
            raise AssertionError("inbox ended")

        started = time.monotonic()
        assert await asyncio.wait_for(first(), 90) == [sos.key(), b"SOS man down, floor 2"]
        elapsed = time.monotonic() - started
        assert post.engine.trust.certificate(field_id) == net.members["field"][1]
        assert post.engine.certificates.requests_sent >= 1
        assert nodes["relay"].engine.certificates.answers_sent >= 1
        # The certificate crossed the air from the relay to the post, each slice one LoRa frame.
        cert_frames = [
            p
            for p in radios["relay"].sent_from_phone
            if p.to == RADIOS["post"][0]
            and p.decoded.payload[:1]
            and p.decoded.payload[0] >> 4 == FrameType.CERT
        ]
        assert cert_frames and all(len(p.decoded.payload) <= 219 for p in cert_frames)
        await asyncio.sleep(2.0)  # a resend arriving now is a duplicate, not a second delivery
        assert await _pending(post) == 0
        print(f"SOS of a late-enrolled unit delivered over 2 LoRa hops in {elapsed:.1f} s (speedup 20)")
        assert post.security.bad_certificates == 0 and post.engine.refused_bundles == 0
    finally:
        for node in nodes.values():
            await node.stop()
        for server in servers.values():
            server.stop()
        medium.close()


async def _pending(node: Node) -> int:
    """Deliveries waiting in the inbox (a second copy of the SOS would be one)."""
    try:
        got = await asyncio.wait_for(node.engine.receive(), 0.5)
    except TimeoutError:
        return 0
    return len(got)
