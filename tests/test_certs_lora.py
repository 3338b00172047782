"""Certificates on demand over LoRa, through the real meshtastic library on emulated radios: a field
unit enrolled after the command post wrote its roster reaches the post through a relay. Only the
relay (its first hop) holds its certificate; the post asks the relay for it over the air."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from engine_net import Deployment
from lora_air import NEIGHBOURS, RADIOS, Air, lora_line

from crypto.certificate import Authority
from crypto.hop import HopAuth
from crypto.identity import Identity
from field.adversary import OUTSIDER_NUM, OutsiderRadio
from field.lora_emulator.medium import LoRaMedium
from relay.bundle import Destination, Kind, Priority, to_epoch
from relay.core.frames import CertFrame, FrameType, encode_frame
from relay.engine import NodeEngine
from relay.links.lora import LoRaLink, LoRaLinkConfig
from relay.links.lora_hello import HELLO_EVERY_S, LoRaHello
from relay.node import Node
from relay.trust import TrustStore


async def test_sos_of_a_late_enrolled_unit_crosses_a_relay_to_a_post_that_never_had_its_certificate(
    tmp_path: Path,
) -> None:
    with lora_line(5, frozenset({"responder"})) as air:
        await _late_unit_crosses_the_relay(tmp_path, air)


async def _late_unit_crosses_the_relay(tmp_path: Path, air: Air) -> None:
    net, radios = air.net, air.radios
    nodes: dict[str, Node] = {}
    now = to_epoch(time.time())
    try:
        for name in RADIOS:
            identity, certificate = net.members[name]
            roster = [c for other, (_, c) in net.members.items() if name != "post" or other != "field"]
            trust = TrustStore(net.authority.public, roster)
            engine = await NodeEngine.open(identity, certificate, trust, tmp_path / f"{name}.sqlite", now=now)
            port = air.servers[name].port
            config = LoRaLinkConfig(roster=air.radio_roster(name), port=port, ack_timeout_s=10.0)
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


async def _inject_until_counted(
    medium: LoRaMedium, outsider: OutsiderRadio, relay: LoRaLink, payload: bytes
) -> None:
    """Put ``payload`` on the air to the relay from the outsider's radio until the relay counts one
    more refused hello (a frame may collide on the shared air; a resend is the same attack)."""
    expected = relay.state().refused.get("bad_hello", 0) + 1
    for _ in range(6):
        while medium.is_busy(OUTSIDER_NUM):  # channel activity detection, as any radio does
            await asyncio.sleep(0.01)
        outsider.inject(OUTSIDER_NUM, RADIOS["relay"][0], payload)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if relay.state().refused.get("bad_hello", 0) >= expected:
                return
            await asyncio.sleep(0.1)
    raise AssertionError(f"the relay never counted refused hello number {expected}")


async def _pending(node: Node) -> int:
    """Deliveries waiting in the inbox (a second copy of the SOS would be one)."""
    try:
        got = await asyncio.wait_for(node.engine.receive(), 0.5)
    except TimeoutError:
        return 0
    return len(got)


async def test_a_unit_missing_from_the_relays_radio_roster_introduces_itself_and_outsiders_cannot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The field unit is in no roster but its own: the relay's radio roster lacks its radio and neither
    the relay nor the post holds its certificate. Its hello (relay/links/lora_hello.py) introduces it
    to the relay; the post then asks the relay for the certificate. An outsider radio's hello with
    another authority's certificate, and a replay of the unit's own hello, are refused and counted."""
    with lora_line(6, frozenset({"responder"})) as air:
        await _unit_introduces_itself(tmp_path, caplog, air)


async def _unit_introduces_itself(tmp_path: Path, caplog: pytest.LogCaptureFixture, air: Air) -> None:
    net, medium, radios = air.net, air.medium, air.radios
    outsider = OutsiderRadio(medium)  # modified firmware: any payload on the Mesh112 port, PKI flag set
    nodes: dict[str, Node] = {}
    links: dict[str, LoRaLink] = {}
    now = to_epoch(time.time())
    try:
        for name in RADIOS:
            identity, certificate = net.members[name]
            roster = [c for other, (_, c) in net.members.items() if name == "field" or other != "field"]
            trust = TrustStore(net.authority.public, roster)
            engine = await NodeEngine.open(identity, certificate, trust, tmp_path / f"{name}.sqlite", now=now)
            radio_roster = {
                RADIOS[n][0]: net.members[n][1].node_id.hex() for n in NEIGHBOURS[name] if n != "field"
            }
            config = LoRaLinkConfig(roster=radio_roster, port=air.servers[name].port, ack_timeout_s=10.0)
            hop = HopAuth(identity)
            hello = LoRaHello(hop, certificate, lambda c, trust=trust: trust.learn(c, to_epoch(time.time())))
            links[name] = LoRaLink(config, hop, engine.trust.check, hello=hello)
            nodes[name] = Node(engine, [links[name]])
        post, relay, field = nodes["post"], nodes["relay"], nodes["field"]
        for node in nodes.values():
            await node.start()

        sos = await field.send(
            Destination.to_node(post.node_id), b"SOS trapped, floor 3", kind=Kind.SOS, priority=Priority.FLASH
        )

        async def first() -> list[bytes]:
            async for delivery in post.inbox():
                await post.ack(delivery.bundle_id)
                return [delivery.bundle_id.key(), delivery.payload]
            raise AssertionError("inbox ended")

        started = time.monotonic()
        assert await asyncio.wait_for(first(), 90) == [sos.key(), b"SOS trapped, floor 3"]
        elapsed = time.monotonic() - started
        field_cert = net.members["field"][1]
        assert relay.engine.trust.certificate(field.node_id) == field_cert  # from the hello
        assert post.engine.trust.certificate(field.node_id) == field_cert  # asked of the relay
        assert post.engine.certificates.requests_sent >= 1

        # An outsider: its own identity, a certificate from an authority of its own, a valid tag.
        stranger = Identity.generate()
        forged = Authority.generate().issue(
            stranger.public, frozenset({"command"}), "post", int(time.time()) + 3600
        )
        hello_frame = encode_frame(CertFrame(0, 1, forged.encode()))
        tagged = HopAuth(stranger).tag(net.members["relay"][1].public, hello_frame, to_epoch(time.time()))
        # The unit's own hello, recorded off the air, played back from the outsider's radio.
        hellos = [
            p.decoded.payload
            for p in radios["field"].sent_from_phone
            if p.to == RADIOS["relay"][0] and LoRaHello.is_hello(p.decoded.payload)
        ]
        assert hellos
        with caplog.at_level(logging.INFO, logger="relay.links.lora"):
            for attack in (tagged, hellos[0]):
                await _inject_until_counted(medium, outsider, links["relay"], attack)
        refusals = [
            r.getMessage() for r in caplog.records if "hello from !0bad0001 refused" in r.getMessage()
        ]
        assert any("'post' refused" in m for m in refusals), refusals  # not the authority's
        assert any("already accepted" in m for m in refusals), refusals  # the replayed stamp
        assert relay.engine.trust.certificate(stranger.node_id) is None
        assert stranger.node_id not in relay.engine.core.neighbours(links["relay"].profile.name)
        assert OUTSIDER_NUM not in links["relay"]._peer_by_num  # the outsider's radio maps to nobody
        assert await _pending(post) == 0
        print(f"SOS of a unit in no roster delivered over 2 LoRa hops in {elapsed:.1f} s (speedup 20)")
    finally:
        for node in nodes.values():
            await node.stop()


def test_a_hello_goes_before_the_first_frame_and_again_only_after_silence() -> None:
    net = Deployment()
    identity, certificate = net.enrol("unit", frozenset({"responder"}))
    peer = net.enrol("relay")[1].node_id
    hello = LoRaHello(HopAuth(identity), certificate, lambda c: None)
    assert hello.due(peer, 0.0) == encode_frame(CertFrame(0, 1, certificate.encode()))
    hello.said(peer, 0.0)
    assert hello.due(peer, 1.0) is None  # said; not again for a while
    hello.heard(peer, 100.0)  # the relay's frames pass their hop tags: it knows us
    assert hello.due(peer, HELLO_EVERY_S + 50.0) is None
    assert hello.due(peer, HELLO_EVERY_S + 100.0) is not None  # silent for HELLO_EVERY_S
    big = net.authority.issue(
        identity.public, frozenset(f"role-{i:02d}" for i in range(12)), "unit", int(time.time()) + 3600
    )
    assert LoRaHello(HopAuth(identity), big, lambda c: None).due(peer, 0.0) is None  # roster only
