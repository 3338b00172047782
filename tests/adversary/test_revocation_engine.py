"""A revoked node and a rogue group member against real engines on real SQLite stores.

The revocation travels as a FLASH bundle over an IP hop and a LoRa hop (compact encoding) and every
node applies it; afterwards the revoked node's frames are dropped before the core (counted), and a
receipt forged by a group member is refused (counted) instead of marking a bundle delivered. The
authority rotates every group for the members still valid, and a node takes a rotated key only
when the authority sealed it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from pathlib import Path

import pytest
from engine_net import IP, LORA, Deployment, EnginePump

from crypto.certificate import Authority
from crypto.group import GroupKey, GroupKeyring, seal_group, unwrap_group_key, wrap_group_key
from crypto.identity import Identity
from crypto.keystore import load_identity
from field.deployment import create_demo_deployment
from relay.bundle import Bundle, Destination, DestKind, Kind, Priority
from relay.core.frames import DataFrame, encode_frame
from relay.core.receipts import Receipt, State
from relay.engine import Delivery, NodeEngine, RevocationError
from relay.enrolment import held_groups, rotate_group_keys

T0 = 1000.0


async def _collect(engine: NodeEngine, timeout: float = 1.0) -> list[Delivery]:
    try:
        return await asyncio.wait_for(engine.receive(), timeout)
    except TimeoutError:
        return []


async def test_a_revocation_floods_over_ip_and_lora_and_cuts_the_node_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    net = Deployment()
    for name in ("post", "relay", "thief", "absent"):
        net.enrol(name)
    post, relay, thief = [await net.open(name, tmp_path, T0) for name in ("post", "relay", "thief")]
    try:
        await _revoke_thief(net, post, relay, thief, caplog)
    finally:
        for engine in (post, relay, thief):
            await engine.close()


async def _revoke_thief(
    net: Deployment, post: NodeEngine, relay: NodeEngine, thief: NodeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    applied: dict[str, list[int]] = {"post": [], "relay": [], "thief": []}
    for name, engine in (("post", post), ("relay", relay), ("thief", thief)):
        engine.on_revocations(lambda revocations, name=name: applied[name].append(revocations.serial))
    pump = EnginePump()
    await pump.connect(IP, post, relay, T0)
    await pump.connect(LORA, relay, thief, T0)
    to_post = Destination.to_node(post.node_id)
    await thief.send(to_post, b"before", kind=Kind.TEXT, priority=Priority.FLASH, lifetime=600, now=T0)
    to_absent = Destination.to_node(net.members["absent"][1].node_id)  # never connected: the relay holds it
    await thief.send(to_absent, b"flood", kind=Kind.TEXT, priority=Priority.FLASH, lifetime=600, now=T0)
    now = await pump.run(T0, 60)
    assert [d.payload for d in await _collect(post)] == [b"before"]
    assert thief.node_id in [s.bundle.origin for s in await relay.store.load_all()]

    older = net.authority.revocations
    revocations = net.authority.revoke(thief.node_id, "radio stolen")
    caplog.set_level(logging.WARNING, logger="relay.engine")
    await post.publish_revocations(revocations, now)
    assert applied["post"] == [revocations.serial]  # at once on the node that publishes
    now = await pump.run(now, 120)
    assert applied["relay"] == [revocations.serial]
    assert relay.trust.revocations == revocations
    assert thief.node_id not in [s.bundle.origin for s in await relay.store.load_all()]  # not carried on

    for text in (b"after 1", b"after 2"):
        await thief.send(to_post, text, kind=Kind.TEXT, priority=Priority.FLASH, lifetime=600, now=now)
    now = await pump.run(now, 120)
    assert await _collect(post, 0.2) == []
    assert relay.security.revoked_frames > 0
    assert "revocation list serial 1 applied: 1 node(s) revoked: thief" in caplog.text
    assert "frame from revoked node thief" in caplog.text and "so far" in caplog.text

    # Publishing an older list is refused; the same list again is carried but changes nothing.
    with pytest.raises(RevocationError, match="older"):
        await post.publish_revocations(older, now)
    await post.publish_revocations(revocations, now)
    assert applied["post"] == [revocations.serial]


async def test_a_revocation_list_not_signed_by_the_authority_is_refused_and_counted(tmp_path: Path) -> None:
    net = Deployment()
    for name in ("post", "relay", "victim"):
        net.enrol(name)
    post, relay = [await net.open(name, tmp_path, T0) for name in ("post", "relay")]
    try:
        await _forged_list(net, post, relay)
    finally:
        for engine in (post, relay):
            await engine.close()


async def _forged_list(net: Deployment, post: NodeEngine, relay: NodeEngine) -> None:
    pump = EnginePump()
    await pump.connect(IP, post, relay, T0)
    forged = Authority.generate().revoke(net.members["victim"][1].node_id, "forged")
    with pytest.raises(RevocationError, match="another deployment authority"):
        post.apply_revocations(forged)
    # A rogue enrolled node floods it anyway (it cannot use publish_revocations: sealing is the same).
    header = Bundle(
        post.node_id, Destination.everyone(), int(T0), 7, 600, Priority.FLASH, Kind.REVOCATION, b""
    )
    await relay.frame_received(
        "ip0", post.node_id, encode_frame(DataFrame(replace(header, payload=forged.encode()))), T0
    )
    assert relay.trust.revocations is None
    assert relay.security.bad_revocations == 1
    assert await relay.store.load_all() == []  # refused before it was stored: no relay carries it on


async def test_a_group_sealed_receipt_does_not_pass_for_the_destinations(tmp_path: Path) -> None:
    """Member m seals a receipt with the group key and names b as its origin: before the fix, a
    took it for b's and stopped resending a bundle b never got."""
    net = Deployment()
    for name in ("a", "b", "m"):
        net.enrol(name)
    key = GroupKey.generate("incident-3")
    engines = {}
    for name in ("a", "b", "m"):
        identity, certificate = net.members[name]
        engines[name] = await NodeEngine.open(
            identity,
            certificate,
            net.trust(),
            tmp_path / f"{name}.sqlite",
            now=T0,
            keyring=GroupKeyring([key], now=T0),
            groups=frozenset({"incident-3"}),
        )
    try:
        await _forge_receipt(key, engines["a"], engines["b"], engines["m"])
    finally:
        for engine in engines.values():
            await engine.close()


async def _forge_receipt(key: GroupKey, a: NodeEngine, b: NodeEngine, m: NodeEngine) -> None:
    subject = await a.send(
        Destination.to_node(b.node_id),
        b"order",
        kind=Kind.TEXT,
        priority=Priority.PRIORITY,
        lifetime=600,
        now=T0,
    )
    header = Bundle(
        b.node_id,
        Destination(DestKind.GROUP, name="incident-3"),
        int(T0),
        9,
        600,
        Priority.ROUTINE,
        Kind.RECEIPT,
        b"",
    )
    payload = seal_group(key, header.id.key(), header.seal_inputs()[1], Receipt(subject, int(T0)).encode())
    await a.link_up(IP, m.node_id, T0)
    await a.frame_received("ip0", m.node_id, encode_frame(DataFrame(replace(header, payload=payload))), T0)
    assert a.status(subject).state is not State.DELIVERED
    assert a.security.forged_receipts == 1


async def test_a_rotated_group_key_is_taken_only_from_the_authority(tmp_path: Path) -> None:
    net = Deployment()
    for name in ("post", "member"):
        net.enrol(name)
    post, member = [await net.open(name, tmp_path, T0) for name in ("post", "member")]
    try:
        kept: list[tuple[GroupKey, bytes]] = []
        member.on_group_key(lambda key, wrapped: kept.append((key, wrapped)))
        pump = EnginePump()
        await pump.connect(IP, post, member, T0)
        new = GroupKey.generate("incident-3", 1)
        wrapped = wrap_group_key(net.authority.identity, net.members["member"][0].public, new)
        forged = wrap_group_key(
            Identity.generate(), net.members["member"][0].public, GroupKey.generate("incident-3", 2)
        )
        for payload in (wrapped, forged):
            await post.send(
                Destination.to_node(member.node_id),
                payload,
                kind=Kind.GROUP_KEY,
                priority=Priority.IMMEDIATE,
                lifetime=600,
                now=T0,
            )
        await pump.run(T0, 30)
        assert member.keyring.latest("incident-3") == new
        assert kept == [(new, wrapped)]
        assert member.security.bad_group_keys == 1
    finally:
        for engine in (post, member):
            await engine.close()


def test_the_authority_rotates_every_group_for_the_members_still_valid(tmp_path: Path) -> None:
    deployment = create_demo_deployment(tmp_path)
    lost = deployment.node("Responder 1")
    deployment.authority.revoke(lost.node_id, "lost")
    rotated = rotate_group_keys(deployment.authority, deployment.authority_dir, int(time.time()))
    assert lost.node_id not in rotated
    relay = deployment.node("Field Relay 1")
    identity = load_identity(relay.directory)
    groups = sorted(
        unwrap_group_key(identity, deployment.authority.public, wrapped).group
        for wrapped in rotated[relay.node_id]
    )
    assert groups == sorted(held_groups(relay.directory))
    assert all(
        unwrap_group_key(identity, deployment.authority.public, wrapped).epoch == 1
        for wrapped in rotated[relay.node_id]
    )


async def test_a_removed_member_sealing_with_the_old_epoch_is_refused_after_the_grace(tmp_path: Path) -> None:
    """The thief kept epoch 0 of the group; members moved to epoch 1 two hours ago."""
    net = Deployment()
    for name in ("member", "thief"):
        net.enrol(name)
    old, new = GroupKey.generate("incident-3", 0), GroupKey.generate("incident-3", 1)
    ring = GroupKeyring([old], now=T0 - 3 * 3600)
    ring.add(new, T0 - 2 * 3600)
    identity, certificate = net.members["member"]
    member = await NodeEngine.open(
        identity,
        certificate,
        net.trust(),
        tmp_path / "member.sqlite",
        now=T0,
        keyring=ring,
        groups=frozenset({"incident-3"}),
    )
    try:
        thief = net.members["thief"][1].node_id
        header = Bundle(
            thief,
            Destination(DestKind.GROUP, name="incident-3"),
            int(T0),
            3,
            600,
            Priority.FLASH,
            Kind.TEXT,
            b"",
        )
        payload = seal_group(old, header.id.key(), header.seal_inputs()[1], b"all units: stand down")
        await member.link_up(IP, thief, T0)
        await member.frame_received(
            "ip0", thief, encode_frame(DataFrame(replace(header, payload=payload))), T0
        )
        assert await _collect(member, 0.2) == []
        assert member.security.stale_epochs == 1
    finally:
        await member.close()
