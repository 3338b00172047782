"""Two real Nodes (SQLite stores, crypto, relay core) over WebRtcLinks in one process: bundles with
custody both ways, an ICE restart mid-stream losing and duplicating nothing, and the checks that bind
the data channel to an enrolled node."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from engine_net import Deployment

from crypto.identity import Identity
from relay.bundle import BundleId, Destination, Kind, Priority, to_epoch
from relay.core.receipts import State
from relay.links.base import LinkError
from relay.links.webrtc import WebRtcLink
from relay.links.webrtc_config import WebRtcLinkOptions
from relay.links.webrtc_signal import SignalError, SignalType, decode, encode
from relay.node import Node

TIMING = {"keepalive_interval": 0.2, "keepalive_misses": 4, "connect_timeout": 3.0}


class DirectSignaller:
    """Hands each signal straight to the addressed link and its answer back (a test's signalling)."""

    def __init__(self) -> None:
        self.links: dict[bytes, WebRtcLink] = {}
        self.signals: list[tuple[bytes, int, bool]] = []  # (to, size, sos)

    async def signal(self, peer: bytes, data: bytes, *, sos: bool) -> None:
        self.signals.append((peer, len(data), sos))
        sender = decode(data).sender
        answer = await self.links[peer].accept(data)
        if answer is not None:
            self.signals.append((sender, len(answer), sos))
            await self.links[sender].accept(answer)


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Node, Node, DirectSignaller, Deployment]]:
    net = Deployment()
    net.enrol("post", frozenset({"command"}))
    net.enrol("field")
    signaller = DirectSignaller()
    post_id = net.members["post"][0].node_id
    options = {
        "post": WebRtcLinkOptions(**TIMING),
        "field": WebRtcLinkOptions(peers=[post_id.hex()], **TIMING),  # the field unit offers
    }
    nodes = []
    for name in ("post", "field"):
        engine = await net.open(name, tmp_path, to_epoch(time.time()))
        link = WebRtcLink(options[name], net.members[name][0], engine.trust.check, signaller=signaller)
        signaller.links[link.node_id] = link
        nodes.append(Node(engine, [link]))
    for node in nodes:
        await node.start()
    yield nodes[0], nodes[1], signaller, net
    for node in nodes:
        await node.stop()


async def collect(node: Node, count: int, timeout: float) -> list[bytes]:
    payloads: list[bytes] = []

    async def drain() -> None:
        async for delivery in node.inbox():
            payloads.append(delivery.payload)
            await node.ack(delivery.bundle_id)
            if len(payloads) >= count:
                return

    await asyncio.wait_for(drain(), timeout)
    return payloads


async def wait_delivered(node: Node, ids: list[BundleId], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not all(node.status(i).state is State.DELIVERED for i in ids):
            await asyncio.sleep(0.05)


def link(node: Node) -> WebRtcLink:
    found = node.links["webrtc0"]
    assert isinstance(found, WebRtcLink)
    return found


async def test_bundles_cross_the_data_channel_both_ways_with_receipts(
    pair: tuple[Node, Node, DirectSignaller, Deployment],
) -> None:
    post, field, signaller, _ = pair
    order = await post.send(Destination.to_node(field.node_id), b"evacuate block C", kind=Kind.TEXT)
    sos = await field.send(Destination.to_node(post.node_id), b"SOS", kind=Kind.SOS, priority=Priority.FLASH)
    assert await collect(field, 1, 10) == [b"evacuate block C"]
    assert await collect(post, 1, 10) == [b"SOS"]
    await wait_delivered(post, [order], 10)
    await wait_delivered(field, [sos], 10)
    assert [size <= 200 for _, size, _ in signaller.signals] == [True, True]
    assert link(field).metrics().offers_made == 1 and link(post).metrics().offers_answered == 1


async def test_an_ice_restart_mid_stream_loses_nothing_and_duplicates_nothing(
    pair: tuple[Node, Node, DirectSignaller, Deployment],
) -> None:
    post, field, _, _ = pair
    ids = []
    for i in range(60):
        ids.append(await field.send(Destination.to_node(post.node_id), b"report %d" % i, kind=Kind.TEXT))
        if i in (20, 40):
            link(field if i == 20 else post).restart_ice(post.node_id if i == 20 else field.node_id)
    payloads = await collect(post, 60, 30)
    assert sorted(payloads) == sorted(b"report %d" % i for i in range(60))
    await wait_delivered(field, ids, 30)
    with pytest.raises(TimeoutError):
        await collect(post, 1, 1.0)  # nothing delivered twice
    assert link(field).metrics().ice_restarts >= 1 and link(post).metrics().ice_restarts >= 1


async def test_a_silent_path_is_noticed_and_ice_restarts_by_itself(
    pair: tuple[Node, Node, DirectSignaller, Deployment],
) -> None:
    post, field, _, _ = pair
    await asyncio.wait_for(_until(lambda: post.node_id in link(field).peers()), 10)
    first = link(field)._sessions[post.node_id]
    first.pc.sctp.transport.transport._connection.send_stun = lambda *a, **k: None  # type: ignore[union-attr]
    first.channel.send = lambda data: None  # type: ignore[method-assign]  # the old path drops everything
    sent = [
        await field.send(Destination.to_node(post.node_id), b"late %d" % i, kind=Kind.TEXT) for i in range(5)
    ]
    assert sorted(await collect(post, 5, 20)) == [b"late %d" % i for i in range(5)]
    await wait_delivered(field, sent, 10)
    assert link(field)._sessions[post.node_id] is not first


async def test_signals_from_strangers_for_others_or_replayed_are_refused(
    pair: tuple[Node, Node, DirectSignaller, Deployment],
) -> None:
    post, field, _, net = pair
    await asyncio.wait_for(_until(lambda: post.node_id in link(field).peers()), 10)
    stranger = Identity.generate()
    outsider = WebRtcLink(WebRtcLinkOptions(), stranger, lambda node, now: stranger.public)
    forged = await outsider.offer(post.node_id)
    with pytest.raises(SignalError, match="no certificate known"):
        await link(post).accept(forged)
    offer = await link(field).offer(post.node_id)
    await link(post).accept(offer)
    with pytest.raises(SignalError, match="answered already"):
        await link(post).accept(offer)
    for_field = await link(post).offer(field.node_id)  # post's offer to field, shown to post itself
    with pytest.raises(SignalError, match="from this node itself"):
        await link(post).accept(for_field)
    third_id, _ = net.enrol("third")
    misaddressed = await link(field).offer(third_id.node_id)  # field's offer to another node
    with pytest.raises(SignalError, match="bad signature"):
        await link(post).accept(misaddressed)
    stale = decode(offer)
    old = stale.__class__(**{**{f: getattr(stale, f) for f in stale.__dataclass_fields__}, "created": 1})
    with pytest.raises(SignalError, match="old"):
        await link(post).accept(encode(old.sign(net.members["field"][0], post.node_id)))
    assert decode(offer).type is SignalType.OFFER
    assert link(post).metrics().signals_refused == 5
    await outsider.stop()


async def _until(predicate: object) -> None:
    assert callable(predicate)
    while not predicate():
        await asyncio.sleep(0.02)


async def test_when_both_offer_the_lower_id_wins_until_its_offer_is_evidently_lost(
    pair: tuple[Node, Node, DirectSignaller, Deployment],
) -> None:
    post, field, _, _ = pair
    await asyncio.wait_for(_until(lambda: post.node_id in link(field).peers()), 10)
    low, high = sorted((link(post), link(field)), key=lambda item: item.node_id)
    await low.offer(high.node_id)  # made, never delivered (a signalling path that lost it)
    theirs = await high.offer(low.node_id)
    assert await low.accept(theirs) is None  # glare: our fresh offer wins
    await asyncio.sleep(TIMING["connect_timeout"] / 2)
    again = await high.offer(low.node_id)
    answer = await low.accept(again)  # ours is stale: theirs is answered
    assert answer is not None
    await high.accept(answer)
    await asyncio.wait_for(_until(lambda: high.node_id in low.peers()), 10)


async def test_a_stopped_link_opens_no_peer_connection() -> None:
    """An offer that reaches a link after its stop() (a signal in flight, the peer's offering loop
    being cancelled) made a peer connection nobody would close: its ICE sockets and tasks outlived
    the link."""
    a, b = Identity.generate(), Identity.generate()
    keys = {a.node_id: a.public, b.node_id: b.public}
    offerer = WebRtcLink(WebRtcLinkOptions(), a, lambda node, now: keys[node])
    stopped = WebRtcLink(WebRtcLinkOptions(), b, lambda node, now: keys[node])
    offer = await offerer.offer(b.node_id)
    await stopped.stop()
    with pytest.raises(LinkError, match="stopped"):
        await stopped.accept(offer)
    with pytest.raises(LinkError, match="stopped"):
        await stopped.offer(a.node_id)
    assert stopped._sessions == {}
    await offerer.stop()


async def test_stop_right_after_an_ice_restart_closes_the_replaced_connection(
    pair: tuple[Node, Node, DirectSignaller, Deployment],
) -> None:
    """The replaced connection's close was a task of the link that stop() cancelled before it ran:
    the connection stayed up, its sockets and tasks outliving the link."""
    post, field, _, _ = pair
    await asyncio.wait_for(_until(lambda: post.node_id in link(field).peers()), 10)
    replaced = link(field)._sessions[post.node_id].pc
    link(field).restart_ice(post.node_id)
    await link(field).stop()
    assert replaced.connectionState == "closed"


async def test_a_late_copy_of_an_older_offer_does_not_replace_the_live_connection() -> None:
    """The demo's second run: the unit offered again while its path was not up yet, both offers
    crossed once it was, and the older one, answered last, replaced the live connection (which the
    unit then restarted: three sessions in 15 s). The older offer is now refused."""
    net = Deployment()
    (post_identity, _), (field_identity, _) = net.enrol("post", frozenset({"command"})), net.enrol("field")
    trust = net.trust()
    now = [time.time()]
    post = WebRtcLink(WebRtcLinkOptions(**TIMING), post_identity, trust.check)
    options = WebRtcLinkOptions(peers=[post.node_id.hex()], **TIMING)
    field = WebRtcLink(options, field_identity, trust.check, clock=lambda: now[0])
    try:
        older = await field.offer(post.node_id)  # unanswered: the path is not up yet
        now[0] += 13  # connect_timeout later the unit offers again
        answer = await post.accept(await field.offer(post.node_id))
        assert answer is not None
        await field.accept(answer)
        await asyncio.wait_for(
            _until(lambda: post.node_id in field.peers() and field.node_id in post.peers()), 10
        )
        live = post._sessions[field.node_id]
        with pytest.raises(SignalError, match="older than the connection"):
            await post.accept(older)
        await asyncio.sleep(0.5)
        assert post._sessions[field.node_id] is live and field.node_id in post.peers()
        assert post.node_id in field.peers() and post.metrics().signals_refused == 1
    finally:
        await field.stop()
        await post.stop()


async def test_an_ice_restart_of_an_sos_video_request_is_an_sos_request_too() -> None:
    """An SOS request's restarts travel as FLASH, and the command post's records of them say SOS."""
    net = Deployment()
    (post_identity, _), (field_identity, _) = net.enrol("post", frozenset({"command"})), net.enrol("field")
    trust, signaller = net.trust(), DirectSignaller()
    post = WebRtcLink(WebRtcLinkOptions(**TIMING), post_identity, trust.check, signaller=signaller)
    options = WebRtcLinkOptions(peers=[post.node_id.hex()], **TIMING)
    field = WebRtcLink(options, field_identity, trust.check, signaller=signaller)
    signaller.links = {post.node_id: post, field.node_id: field}
    try:
        field.connect(post.node_id, sos=True)
        await asyncio.wait_for(_until(lambda: post.node_id in field.peers()), 10)
        field.restart_ice(post.node_id)
        await asyncio.wait_for(
            _until(lambda: len(signaller.signals) == 4 and post.node_id in field.peers()), 10
        )
        post.restart_ice(field.node_id)  # the command post restarts: its offer and the answer as well
        await asyncio.wait_for(
            _until(lambda: len(signaller.signals) == 6 and field.node_id in post.peers()), 10
        )
        assert [sos for _, _, sos in signaller.signals] == [True] * 6
    finally:
        await field.stop()
        await post.stop()
