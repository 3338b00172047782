"""Certificates on demand (relay/core/certs.py), on real engines with real SQLite stores: a node
enrolled after the others started is heard beyond its first hop, and made-up certificates and
floods of unknown origins are refused, counted and harm nothing stored."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import pytest
from engine_net import IP, LORA, Deployment, EnginePump
from hypothesis import given
from hypothesis import strategies as st

from crypto.certificate import Authority, Certificate
from crypto.identity import Identity
from relay.bundle import Bundle, Destination, Kind, Priority, to_epoch
from relay.core.certs import (
    MAX_PARKED_PER_PEER,
    MAX_REQUESTS,
    PARK_S,
    REQUEST_RETRY_S,
    RESENT_RETRY_S,
    CertificateExchange,
)
from relay.core.frames import (
    CERT_CHUNK,
    CertFrame,
    CertRequestFrame,
    DataFrame,
    FrameDecodeError,
    FrameType,
    data_origin,
    decode_frame,
    encode_frame,
)
from relay.engine import Delivery, NodeEngine
from relay.links.base import LinkProfile
from relay.trust import TrustStore

NOW = to_epoch(time.time())


async def _collect(engine: NodeEngine, timeout: float = 1.0) -> list[Delivery]:
    try:
        return await asyncio.wait_for(engine.receive(), timeout)
    except TimeoutError:
        return []


async def _field(tmp_path: Path) -> tuple[Deployment, NodeEngine, NodeEngine, NodeEngine]:
    """post, relay and app, all enrolled by one authority; the post started without the app's
    certificate (the app was enrolled after the post's roster was written)."""
    net = Deployment()
    for name in ("post", "relay", "app"):
        net.enrol(name, frozenset({"responder"}) if name == "app" else frozenset())
    app, relay = await net.open("app", tmp_path, NOW), await net.open("relay", tmp_path, NOW)
    identity, certificate = net.members["post"]
    roster = [c for name, (_, c) in net.members.items() if name != "app"]
    post = await NodeEngine.open(
        identity, certificate, TrustStore(net.authority.public, roster), tmp_path / "post.sqlite", now=NOW
    )
    return net, post, relay, app


async def _crosses(tmp_path: Path, second_hop: LinkProfile) -> None:
    net, post, relay, app = await _field(tmp_path)
    pump = EnginePump()
    await pump.connect(IP, app, relay, NOW)
    await pump.connect(second_hop, relay, post, NOW)
    sent = await app.send(
        Destination.to_node(post.node_id),
        b"SOS floor 2",
        kind=Kind.SOS,
        priority=Priority.FLASH,
        lifetime=600,
        now=NOW,
    )
    assert post.trust.certificate(app.node_id) is None
    now = await pump.run(NOW, 30)
    got = await _collect(post)
    assert [(d.bundle_id, d.payload) for d in got] == [(sent, b"SOS floor 2")]
    await pump.run(now, 30)
    assert await _collect(post, 0.2) == []  # once
    learned = post.trust.certificate(app.node_id)
    assert learned == net.members["app"][1]
    assert post.certificates.requests_sent >= 1 and relay.certificates.answers_sent >= 1
    assert post.certificates.parked() == 0 and post.refused_bundles == 0
    assert post.security.bad_certificates == 0
    for engine in (post, relay, app):
        await engine.close()


async def test_a_late_enrolled_node_is_heard_over_a_compact_lora_hop(tmp_path: Path) -> None:
    """The LoRa hop names the origin by its short id only; the post asks for it by that."""
    await _crosses(tmp_path, LORA)


async def test_a_late_enrolled_node_is_heard_over_a_second_ip_hop(tmp_path: Path) -> None:
    await _crosses(tmp_path, replace(IP, name="ip1"))


def _stranger_bundle(origin: bytes, dest: bytes, seq: int) -> bytes:
    bundle = Bundle(
        origin, Destination.to_node(dest), int(NOW), seq, 600, Priority.FLASH, Kind.TEXT, b"x" * 40
    )
    return encode_frame(DataFrame(bundle))


async def _post_with_neighbour(tmp_path: Path) -> tuple[Deployment, NodeEngine, bytes]:
    net = Deployment()
    for name in ("post", "relay", "b"):
        net.enrol(name)
    post = await net.open("post", tmp_path, NOW)
    relay_id = net.members["relay"][1].node_id
    await post.link_up(IP, relay_id, NOW)
    return net, post, relay_id


async def _late_unit_frame(
    net: Deployment, post: NodeEngine, tmp_path: Path, payload: bytes, *, lifetime: int
) -> tuple[Certificate, bytes]:
    """A FLASH DATA frame for the post from a unit enrolled after the post opened its trust store,
    sealed by the unit's own engine: the post has to ask for the unit's certificate."""
    late_identity, late = net.enrol("late")
    assert post.trust.certificate(late.node_id) is None
    bundle = Bundle(
        late.node_id, Destination.to_node(post.node_id), int(NOW), 1, lifetime, Priority.FLASH, Kind.TEXT, b""
    )
    sender = await NodeEngine.open(late_identity, late, net.trust(), tmp_path / "late.sqlite", now=NOW)
    sealed = sender._seal_payload(bundle, payload)
    await sender.close()
    return late, encode_frame(DataFrame(replace(bundle, payload=sealed)))


def _requests_sent(post: NodeEngine) -> int:
    """Certificate requests among the frames the post has queued since the last call."""
    return sum(1 for _, f in _drain(post) if f[0] >> 4 == FrameType.CERT_REQUEST)


def _drain(engine: NodeEngine, link: str = IP.name) -> list[tuple[bytes, bytes]]:
    out = []
    while (frame := engine.next_frame(link, NOW)) is not None:
        out.append(frame)
    return out


async def test_a_made_up_certificate_is_refused_counted_and_harms_nothing(tmp_path: Path) -> None:
    net, post, relay_id = await _post_with_neighbour(tmp_path)
    b_id = net.members["b"][1].node_id
    kept = await post.send(
        Destination.to_node(b_id),
        b"stored before",
        kind=Kind.TEXT,
        priority=Priority.FLASH,
        lifetime=600,
        now=NOW,
    )
    _drain(post)
    outsider = Identity.generate()
    forged = Authority.generate().issue(
        outsider.public, frozenset({"command"}), "outsider", int(time.time()) + 3600
    )
    await post.frame_received(IP.name, relay_id, _stranger_bundle(outsider.node_id, post.node_id, 1), NOW)
    asked = [decode_frame(frame) for peer, frame in _drain(post) if peer == relay_id]
    assert CertRequestFrame(outsider.node_id) in asked
    assert post.certificates.parked() == 1
    data = forged.encode()
    count = -(-len(data) // CERT_CHUNK)
    for index in range(count):
        chunk = data[index * CERT_CHUNK : (index + 1) * CERT_CHUNK]
        await post.frame_received(IP.name, relay_id, encode_frame(CertFrame(index, count, chunk)), NOW)
    assert post.security.bad_certificates == 1
    assert post.trust.certificate(outsider.node_id) is None
    assert post.certificates.parked() == 0  # the bundle waiting for it is gone, and nothing stored
    assert post.core.holds(kept)
    stats = await post.store.stats()
    assert stats.held_by_priority.get(Priority.FLASH, 0) == 1  # only the post's own bundle
    assert await _collect(post, 0.2) == []
    await post.close()


async def test_a_flood_of_unknown_origins_is_bounded_counted_and_harms_nothing(tmp_path: Path) -> None:
    net, post, relay_id = await _post_with_neighbour(tmp_path)
    b_id = net.members["b"][1].node_id
    kept = await post.send(
        Destination.to_node(b_id),
        b"stored before",
        kind=Kind.TEXT,
        priority=Priority.FLASH,
        lifetime=600,
        now=NOW,
    )
    _drain(post)
    flood = 500
    started = time.monotonic()
    for seq in range(flood):
        stranger = Identity.generate().node_id
        await post.frame_received(IP.name, relay_id, _stranger_bundle(stranger, b_id, seq), NOW)
    elapsed = time.monotonic() - started
    assert post.certificates.parked() == MAX_PARKED_PER_PEER
    assert post.security.unknown_origins_refused == flood - MAX_PARKED_PER_PEER
    requests = [f for peer, f in _drain(post) if f[0] >> 4 == FrameType.CERT_REQUEST]
    assert 1 <= len(requests) <= MAX_PARKED_PER_PEER  # rate-limited per neighbour
    assert post.refused_frames == 0 and elapsed < 20

    # A bundle of an enrolled origin through the same neighbour is still taken, at once.
    relay_engine = await net.open("relay", tmp_path, NOW)
    real = await relay_engine.send(
        Destination.to_node(post.node_id),
        b"real alarm",
        kind=Kind.SOS,
        priority=Priority.FLASH,
        lifetime=600,
        now=NOW,
    )
    await relay_engine.link_up(IP, post.node_id, NOW)
    for _ in range(20):
        out = relay_engine.next_frame(IP.name, NOW)
        if out is None:
            break
        await post.frame_received(IP.name, relay_id, out[1], NOW)
    got = await _collect(post)
    assert [d.bundle_id for d in got] == [real]
    assert post.core.holds(kept)

    # After PARK_S they are dropped and counted; the store never saw them.
    await post.frame_received(IP.name, relay_id, encode_frame(CertRequestFrame(b_id)), NOW + PARK_S + 1)
    assert post.certificates.parked() == 0
    assert post.security.unknown_origins_expired == MAX_PARKED_PER_PEER
    stats = await post.store.stats()
    assert stats.held_by_priority.get(Priority.FLASH, 0) == 2  # the post's own and the real alarm
    for engine in (post, relay_engine):
        await engine.close()


async def test_requests_are_answered_from_the_trust_store_within_the_lora_frame_and_rate_limited(
    tmp_path: Path,
) -> None:
    net, post, relay_id = await _post_with_neighbour(tmp_path)
    b_cert = net.members["b"][1]
    await post.frame_received(IP.name, relay_id, encode_frame(CertRequestFrame(b_cert.node_id[:3])), NOW)
    answer = _drain(post)
    assert all(peer == relay_id and len(frame) <= 219 - 12 for peer, frame in answer)
    pieces = [decode_frame(frame) for _, frame in answer]
    assert b"".join(p.chunk for p in pieces if isinstance(p, CertFrame)) == b_cert.encode()
    for _ in range(30):  # a neighbour asking again and again
        await post.frame_received(IP.name, relay_id, encode_frame(CertRequestFrame(b_cert.node_id)), NOW)
    assert post.certificates.answers_sent <= 9  # the burst of 8, then 0.2 per second
    assert post.security.certificate_requests_limited >= 21
    unknown = Identity.generate().node_id
    sent = post.certificates.answers_sent
    await post.frame_received(IP.name, relay_id, encode_frame(CertRequestFrame(unknown)), NOW + 100)
    assert post.certificates.answers_sent == sent  # nothing to say about a node it does not know
    await post.close()


def test_certificate_frames_round_trip_and_malformed_ones_are_refused() -> None:
    for frame in (CertRequestFrame(b"abc"), CertRequestFrame(bytes(16)), CertFrame(3, 4, b"x" * CERT_CHUNK)):
        assert decode_frame(encode_frame(frame)) == frame
    bad = {
        b"\x80" + b"ab": "CERT_REQUEST must name",
        b"\x80" + bytes(17): "CERT_REQUEST must name",
        b"\x81" + b"abc": "non-zero argument",
        b"\x90\x00\x00x": "CERT count 0",
        b"\x90\x04\x04x": "CERT index 4",
        b"\x90\x00\x09x": "CERT count 9",
        b"\x90\x00\x01" + bytes(CERT_CHUNK + 1): "exceeds",
        b"\x90\x00": "too short",
    }
    for data, why in bad.items():
        with pytest.raises(FrameDecodeError, match=why):
            decode_frame(data)


@given(st.binary(max_size=64))
def test_data_origin_never_raises(data: bytes) -> None:
    origin = data_origin(data)
    assert origin is None or len(origin) in (3, 16)


async def test_a_fragmented_bundle_of_an_unknown_origin_is_taken_once_its_certificate_arrived(
    tmp_path: Path,
) -> None:
    """Over LoRa a 600-byte bundle crosses in fragments: the first one names the origin, the post
    asks, and the relay's next poll after the answer gets the whole bundle taken."""
    _, post, relay, app = await _field(tmp_path)
    pump = EnginePump()
    await pump.connect(IP, app, relay, NOW)
    await pump.connect(LORA, relay, post, NOW)
    payload = bytes(range(200)) * 3
    sent = await app.send(
        Destination.to_node(post.node_id),
        payload,
        kind=Kind.TEXT,
        priority=Priority.FLASH,
        lifetime=3600,
        now=NOW,
    )
    now = NOW
    got: list[Delivery] = []
    while not got and now < NOW + 1800:
        now = await pump.run(now, 30)
        got = await _collect(post, 0.05)
    assert [(d.bundle_id, d.payload) for d in got] == [(sent, payload)], f"not delivered in {now - NOW:.0f} s"
    assert post.trust.certificate(app.node_id) is not None and post.certificates.parked() == 0
    assert post.certificates.requests_sent >= 1 and relay.certificates.answers_sent >= 1
    print(
        f"fragmented bundle of a stranger taken after {now - NOW:.0f} simulated s; "
        f"{post.refused_frames} reassembled frame(s) refused before the certificate came"
    )
    for engine in (post, relay, app):
        await engine.close()


async def test_a_request_lost_on_the_air_is_sent_again_a_bounded_number_of_times(tmp_path: Path) -> None:
    net, post, relay_id = await _post_with_neighbour(tmp_path)
    late, frame = await _late_unit_frame(net, post, tmp_path, b"hello from a late unit", lifetime=600)
    await post.frame_received(IP.name, relay_id, frame, NOW)
    sent = [_requests_sent(post)]  # each lost on the air: never answered
    await post.frame_received(IP.name, relay_id, frame, NOW + 1)  # the relay resends it at once
    sent.append(_requests_sent(post))
    await post.frame_received(IP.name, relay_id, frame, NOW + 1 + RESENT_RETRY_S)  # and again
    sent.append(_requests_sent(post))
    other = encode_frame(CertRequestFrame(net.members["b"][1].node_id))  # any frame from the relay
    for step in range(1, 8):
        await post.frame_received(IP.name, relay_id, other, NOW + 10 + step * (REQUEST_RETRY_S + 1))
        sent.append(_requests_sent(post))
    # Again when the bundle is resent (after RESENT_RETRY_S) or after REQUEST_RETRY_S; bounded.
    assert sent == [1, 0, 1] + [1] * (MAX_REQUESTS - 2) + [0] * (9 - MAX_REQUESTS), sent
    assert post.certificates.parked() == 1
    data = late.encode()
    await post.frame_received(IP.name, relay_id, encode_frame(CertFrame(0, 1, data)), NOW + 200)
    assert [d.payload for d in await _collect(post)] == [b"hello from a late unit"]
    await post.close()


async def test_requests_for_an_origin_are_counted_afresh_once_the_last_is_old(tmp_path: Path) -> None:
    """The bound on requests holds while frames wait: once the last request is PARK_S old, the
    origin's next frame is asked for at once, even when nothing was parked in between."""
    net, post, relay_id = await _post_with_neighbour(tmp_path)
    _, frame = await _late_unit_frame(net, post, tmp_path, b"hello again", lifetime=3600)
    other = encode_frame(CertRequestFrame(net.members["b"][1].node_id))  # any frame from the relay
    await post.frame_received(IP.name, relay_id, frame, NOW)
    for step in range(1, MAX_REQUESTS + 2):  # every request lost on the air, until no more go
        await post.frame_received(IP.name, relay_id, other, NOW + step * (REQUEST_RETRY_S + 1))
    assert _requests_sent(post) == MAX_REQUESTS
    await post.frame_received(IP.name, relay_id, other, NOW + PARK_S + 5)  # the parked frame expires
    assert post.certificates.parked() == 0
    await post.frame_received(IP.name, relay_id, frame, NOW + 3 * PARK_S)  # the relay tries again
    assert _requests_sent(post) == 1
    await post.close()


def test_a_frame_of_an_unknown_origin_is_parked_after_frames_of_a_known_one() -> None:
    """Frames of a known origin pass straight to the core (the last one's first bytes are kept:
    a batch's frames mostly share an origin); one of an origin not known is still parked, and
    one of the known origin after it passes again."""
    net = Deployment()
    _, known = net.enrol("known")
    exchange = CertificateExchange(
        TrustStore(net.authority.public, [known]), known, lambda _: 0, lambda _: ()
    )
    stranger = Identity.generate().node_id

    def frame(origin: bytes, seq: int) -> bytes:
        bundle = Bundle(origin, Destination.to_node(known.node_id), 1000, seq, 600, Priority.ROUTINE, 1, b"x")
        return encode_frame(DataFrame(bundle, 1))

    peer = bytes(16)
    assert exchange.frame_received(IP.name, peer, frame(known.node_id, 1), NOW) is None
    assert exchange.frame_received(IP.name, peer, frame(known.node_id, 2), NOW) is None
    assert exchange.frame_received(IP.name, peer, frame(stranger, 3), NOW) == []
    assert exchange.parked() == 1
    assert exchange.frame_received(IP.name, peer, frame(known.node_id, 4), NOW) is None
    assert exchange.frame_received(IP.name, peer, frame(stranger, 5), NOW) == [] and exchange.parked() == 2
