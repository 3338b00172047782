"""Bundles for another post's nodes: the plan (which held bundle goes to which post, once, after the
post's own mesh had its time), the engine's seam (a bundle handed over whole is taken into custody
as from a neighbour, verified against the trust store, delivered once), and the wire form."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from engine_net import IP, Deployment, EnginePump

from crypto.errors import CryptoError
from relay.backbone.handover import Handover, HandoverError, HandoverPlan, Sightings
from relay.bundle import Bundle, Destination, Kind, Priority
from relay.core.receipts import State
from relay.engine import Delivery, NodeEngine

T0 = 1000.0


async def _collect(engine: NodeEngine, timeout: float = 1.0) -> list[Delivery]:
    try:
        return await asyncio.wait_for(engine.receive(), timeout)
    except TimeoutError:
        return []


async def held_message(post: NodeEngine, unit: bytes, text: bytes) -> Bundle:
    await post.send(
        Destination.to_node(unit), text, kind=Kind.TEXT, priority=Priority.PRIORITY, lifetime=600, now=T0
    )
    (bundle,) = post.core.held_for({unit})
    return bundle


def test_sightings_keep_the_post_that_heard_a_node_last() -> None:
    sightings = Sightings()
    node = "ab" * 16
    sightings.heard(node, 100.0, "a")
    sightings.heard(node, 90.0, "b")  # older: changes nothing
    sightings.heard(node, 100.0, "b")  # a tie keeps the first
    assert sightings.last[bytes.fromhex(node)] == (100.0, "a")
    sightings.heard(node, 101.0, "b")
    assert sightings.elsewhere("a") == {bytes.fromhex(node)} and sightings.elsewhere("b") == set()
    sightings.heard("not hex", 200.0, "c")  # nothing can be addressed to it
    assert len(sightings.last) == 1
    sightings.home("cd" * 16, "c")  # a post's own node stays at its post
    sightings.heard("cd" * 16, 1e12, "a")
    assert sightings.last[bytes.fromhex("cd" * 16)][1] == "c"


async def test_plan_hands_a_held_bundle_over_once_after_the_hold(tmp_path: Path) -> None:
    net = Deployment()
    net.enrol("post-a")
    _, unit = net.enrol("unit")
    post = await net.open("post-a", tmp_path, T0)
    bundle = await held_message(post, unit.node_id, b"go to gate 4")
    sightings = Sightings()
    sightings.heard(unit.node_id.hex(), 50.0, "b")
    plan = HandoverPlan("a", post.node_id.hex(), hold_s=10.0)
    assert plan.due([bundle], sightings, 0.0) == []  # the post's own mesh gets its time first
    assert plan.due([bundle], sightings, 9.0) == []
    assert plan.due([bundle], sightings, 10.0) == [Handover("b", bundle, post.node_id.hex())]
    assert plan.due([bundle], sightings, 30.0) == []  # once
    assert plan.due([], sightings, 31.0) == [] and not plan.first_held and not plan.sent  # no longer held
    sightings.heard(unit.node_id.hex(), 60.0, "a")  # heard here again: our own mesh reaches it
    assert plan.due([bundle], sightings, 40.0) == [] and plan.due([bundle], sightings, 60.0) == []
    await post.close()


async def test_a_handed_over_bundle_is_taken_once_and_delivered(tmp_path: Path) -> None:
    net = Deployment()
    for name in ("post-a", "post-b", "unit"):
        net.enrol(name)
    post_a, post_b, unit = [await net.open(n, tmp_path, T0) for n in ("post-a", "post-b", "unit")]
    bundle = await held_message(post_a, unit.node_id, b"go to gate 4")
    handover = Handover("b", bundle, post_a.node_id.hex())
    wire = Handover.decode(handover.encode())  # as it crosses the backbone
    assert wire == handover and wire.event_id == f"bundle:{bundle.id.key().hex()}"
    assert await post_b.hand_over(wire.bundle, T0 + 1)
    assert not await post_b.hand_over(wire.bundle, T0 + 2)  # a replay of the stream: already held
    assert post_b.core.held_for({unit.node_id})[0].id == bundle.id
    pump = EnginePump()
    await pump.connect(IP, post_b, unit, T0 + 2)
    await pump.run(T0 + 2, 30, dt=0.5)
    got = await _collect(unit)
    assert [(d.bundle_id, d.origin, d.payload) for d in got] == [(bundle.id, post_a.node_id, b"go to gate 4")]
    assert not await post_b.hand_over(wire.bundle, T0 + 40)  # seen: not taken again
    await pump.run(T0 + 40, 10, dt=0.5)
    assert await _collect(unit, 0.3) == []  # nothing applied twice
    assert post_b.refused_bundles == 0
    (receipt,) = post_b.core.held_for({post_a.node_id})  # the unit's receipt, for the handing post
    assert post_a.status(bundle.id).state is State.QUEUED
    assert await post_a.hand_over(receipt, T0 + 51)  # handed back the same way
    assert post_a.status(bundle.id).state is State.DELIVERED
    for engine in (post_a, post_b, unit):
        await engine.close()


async def test_a_bundle_from_an_origin_not_trusted_here_is_refused(tmp_path: Path) -> None:
    ours, theirs = Deployment(), Deployment()
    ours.enrol("post-b")
    ours.enrol("unit")
    theirs.enrol("stranger")
    identity, unit = ours.members["unit"]  # the same unit, enrolled by their authority too
    theirs.members["unit"] = (
        identity,
        theirs.authority.issue(identity.public, frozenset(), "unit", unit.expires),
    )
    post_b = await ours.open("post-b", tmp_path, T0)
    stranger = await theirs.open("stranger", tmp_path, T0)
    bundle = await held_message(stranger, unit.node_id, b"forged order")
    with pytest.raises(CryptoError):
        await post_b.hand_over(bundle, T0 + 1)
    assert post_b.core.held_for({unit.node_id}) == []


def test_a_damaged_handover_is_an_error() -> None:
    for raw in (
        b"",
        b"{}",
        b'{"to": "b", "bundle": "zz", "by": ""}',
        b'{"to": "b", "bundle": "00", "by": ""}',
    ):
        with pytest.raises(HandoverError):
            Handover.decode(raw)
