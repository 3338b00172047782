"""The frame leaves while the sender commits, the application gets a bundle while the receiver commits
(docs/relay-core.md, "Sending while committing", "Delivering while committing").

A commit is held back for real: a second SQLite connection takes the store file's write lock
(``BEGIN IMMEDIATE``), so the store's own ``BEGIN IMMEDIATE`` waits (busy timeout) until the test
lets go, while everything else the engines do goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_net import IP, Deployment, EnginePump

from relay.bundle import BundleId, Destination, Kind, Priority
from relay.core.receipts import State
from relay.engine import Delivery, NodeEngine, Outgoing, StorageFullError

T0 = 1000.0
T1 = T0 + 11  # after the pair settled; the warm-up send reserved this second's ids


@contextlib.contextmanager
def commits_held(engine: NodeEngine) -> Iterator[None]:
    """No commit of ``engine``'s store lands until the block ends (well within the busy timeout)."""
    lock = sqlite3.connect(engine.store.path, isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")
        yield
        lock.execute("ROLLBACK")
    finally:
        lock.close()


async def _pair(tmp_path: Path, quota_a: int = 256 << 20) -> tuple[NodeEngine, NodeEngine, EnginePump]:
    """A and B on one IP link, settled (summaries and beacons exchanged), one bundle sent and acked
    (A's ids for second T1 are reserved: a send then needs no commit before its frame)."""
    net = Deployment()
    identity, cert = net.enrol("a")
    net.enrol("b")
    a = await NodeEngine.open(identity, cert, net.trust(), tmp_path / "a.sqlite", now=T0, quota_bytes=quota_a)
    b = await net.open("b", tmp_path, T0)
    pump = EnginePump()
    await pump.connect(IP, a, b, T0)
    await a.send(
        Destination.to_node(b.node_id),
        b"warm",
        kind=Kind.TEXT,
        priority=Priority.PRIORITY,
        lifetime=600,
        now=T1,
    )
    await pump.run(T0, 10, dt=0.5)
    warm = await asyncio.wait_for(b.receive(), 2)
    await b.ack(warm[0].bundle_id)
    return a, b, pump


async def _frame(engine: NodeEngine, timeout: float = 5.0) -> bytes:
    """The next frame ``engine`` hands its IP link, as soon as there is one."""
    async with asyncio.timeout(timeout):
        while True:
            out = engine.next_frame(IP.name, T1)
            if out is not None:
                return out[1]
            await asyncio.sleep(0.005)


async def _answers(src: NodeEngine, dst: NodeEngine) -> list[asyncio.Task[None]]:
    """Every frame ``src`` has now, handed to ``dst`` (each in a task: ``dst``'s store may be held)."""
    tasks = []
    while (out := src.next_frame(IP.name, T1)) is not None:
        tasks.append(asyncio.create_task(dst.frame_received(IP.name, src.node_id, out[1], T1)))
    return tasks


@pytest.mark.parametrize("priority", [Priority.PRIORITY, Priority.FLASH])
async def test_the_frame_leaves_before_the_commit_and_acks_before_it_apply_after_it(
    tmp_path: Path, priority: Priority
) -> None:
    """The custody ACK (and for FLASH, kept to the end, the receipt) comes back before A's commit
    lands: the store runs A's delete after its put, so A ends holding nothing, its status says so,
    and the application's answer came only after the commit."""
    a, b, _ = await _pair(tmp_path)
    dest = Destination.to_node(b.node_id)
    with commits_held(a):
        send = asyncio.create_task(
            a.send(dest, b"now", kind=Kind.TEXT, priority=priority, lifetime=600, now=T1)
        )
        frame = await _frame(a)
        assert not send.done(), "the send answered before its commit"
        await b.frame_received(IP.name, a.node_id, frame, T1)  # B stores it, acks, delivers, receipts
        [delivery] = await asyncio.wait_for(b.receive(), 2)
        back = await _answers(b, a)
        assert back, "B sent no custody ACK"
        await asyncio.sleep(0.2)
        assert not send.done()
    bundle_id = await asyncio.wait_for(send, 10)
    await asyncio.gather(*back)
    assert delivery.bundle_id == bundle_id and delivery.payload == b"now"
    assert not a.core.holds(bundle_id)
    assert await a.store.get(bundle_id) is None, "the delete ran before the put"
    expected = State.DELIVERED if priority is Priority.FLASH else State.FORWARDED
    assert a.status(bundle_id).state in (expected, State.DELIVERED)
    await a.close()
    await b.close()


async def test_a_put_refused_after_its_frame_left_is_reported_and_never_sent_again(tmp_path: Path) -> None:
    """A's quota cannot take the bundle: its frame left during the commit, the application is told
    "store full", A forgets it (not held, status unknown, no resend) and B may still deliver it."""
    a, b, pump = await _pair(tmp_path, quota_a=600)
    dest = Destination.to_node(b.node_id)
    with commits_held(a):
        send = asyncio.create_task(
            a.send(dest, b"x" * 800, kind=Kind.TEXT, priority=Priority.PRIORITY, lifetime=600, now=T1)
        )
        frame = await _frame(a)
    with pytest.raises(StorageFullError, match="store is full"):
        await asyncio.wait_for(send, 10)
    await b.frame_received(IP.name, a.node_id, frame, T1)
    [delivery] = await asyncio.wait_for(b.receive(), 2)
    assert delivery.payload == b"x" * 800  # the documented case: refused to the app, delivered anyway
    assert not a.core.holds(delivery.bundle_id)
    assert a.status(delivery.bundle_id).state is State.UNKNOWN
    await pump.run(T1, 120, dt=1.0)  # custody timeouts come and go: nothing is sent again
    again: list[Delivery] = []
    with contextlib.suppress(TimeoutError):
        again = await asyncio.wait_for(b.receive(), 0.5)
    assert again == []
    await a.close()
    await b.close()


async def _text_framed(a: NodeEngine, b: NodeEngine, text: bytes) -> tuple[BundleId, bytes]:
    """``text`` sent from a to b, and the frame that carries it."""
    bundle_id = await a.send(
        Destination.to_node(b.node_id), text, kind=Kind.TEXT, priority=Priority.PRIORITY, lifetime=600, now=T1
    )
    return bundle_id, await _frame(a)


async def test_an_idempotent_application_gets_the_bundle_before_the_commit_and_the_ack_after(
    tmp_path: Path,
) -> None:
    a, b, _ = await _pair(tmp_path)
    b.deliver_before_commit = True
    bundle_id, frame = await _text_framed(a, b, b"early")
    with commits_held(b):
        stored = asyncio.create_task(b.frame_received(IP.name, a.node_id, frame, T1))
        [delivery] = await asyncio.wait_for(b.receive(), 2)
        assert (delivery.bundle_id, delivery.payload) == (bundle_id, b"early")
        assert not stored.done()
        assert b.next_frame(IP.name, T1) is None, "custody was taken before the commit"
        assert a.status(bundle_id).state is State.QUEUED
    await asyncio.wait_for(stored, 10)
    # committed: the id only, no inbox copy (the application keeps the bundle), and no custody yet
    assert await b.store.pending_deliveries() == []
    assert b.next_frame(IP.name, T1) is None, "custody was taken before the application kept it"
    await b.ack_many([bundle_id], T1)  # the application's own commit is done
    await asyncio.gather(*await _answers(b, a))
    assert a.status(bundle_id).state in (State.FORWARDED, State.DELIVERED)  # custody, then the receipt
    await a.close()
    await b.close()


async def test_the_application_may_ack_before_the_commit_and_custody_follows_the_commit(
    tmp_path: Path,
) -> None:
    a, b, _ = await _pair(tmp_path)
    b.deliver_before_commit = True
    bundle_id, frame = await _text_framed(a, b, b"fast app")
    with commits_held(b):
        stored = asyncio.create_task(b.frame_received(IP.name, a.node_id, frame, T1))
        [delivery] = await asyncio.wait_for(b.receive(), 2)
        acked = asyncio.create_task(b.ack_many([delivery.bundle_id], T1))
        await asyncio.sleep(0.2)
        assert b.next_frame(IP.name, T1) is None, "custody was taken before the commit"
    await asyncio.wait_for(asyncio.gather(stored, acked), 10)
    await asyncio.gather(*await _answers(b, a))
    assert a.status(bundle_id).state in (State.FORWARDED, State.DELIVERED)
    await a.close()
    await b.close()


async def test_an_application_not_declared_idempotent_gets_the_bundle_after_the_commit(
    tmp_path: Path,
) -> None:
    a, b, _ = await _pair(tmp_path)
    bundle_id, frame = await _text_framed(a, b, b"late")
    with commits_held(b):
        stored = asyncio.create_task(b.frame_received(IP.name, a.node_id, frame, T1))
        receive = asyncio.create_task(b.receive())
        await asyncio.sleep(0.3)
        assert not receive.done() and not stored.done()
    [delivery] = await asyncio.wait_for(receive, 10)
    assert delivery.bundle_id == bundle_id
    await stored
    await a.close()
    await b.close()


async def test_an_early_delivery_kept_by_the_application_alone_takes_no_room_and_custody_waits_for_its_ack(
    tmp_path: Path,
) -> None:
    """B's store keeps only the id of a bundle its application keeps (no inbox copy), so a bundle
    larger than B's whole quota is taken; custody only once the application says it keeps it."""
    net = Deployment()
    for name in ("a", "b"):
        net.enrol(name)
    identity, cert = net.members["b"]
    a = await net.open("a", tmp_path, T0)
    b = await NodeEngine.open(identity, cert, net.trust(), tmp_path / "b.sqlite", now=T0, quota_bytes=600)
    b.deliver_before_commit = True
    pump = EnginePump()
    await pump.connect(IP, a, b, T0)
    bundle_id = await a.send(
        Destination.to_node(b.node_id),
        b"y" * 800,
        kind=Kind.TEXT,
        priority=Priority.PRIORITY,
        lifetime=600,
        now=T0,
    )
    seen: list[Delivery] = []
    for second in range(0, 30, 5):
        await pump.run(T0 + second, 5, dt=0.5)
        with contextlib.suppress(TimeoutError):
            seen += await asyncio.wait_for(b.receive(), 0.05)
    assert [d.bundle_id for d in seen] == [bundle_id], "delivered once: the resends wait with the first"
    assert a.status(bundle_id).state is State.QUEUED, "B took custody before its application kept it"
    assert await b.store.pending_deliveries() == [] and (await b.store.stats()).bytes_used == 0
    await b.ack_many([bundle_id], T0 + 30)
    await pump.run(T0 + 30, 5, dt=0.5)
    assert a.status(bundle_id).state in (State.FORWARDED, State.DELIVERED)
    await a.close()
    await b.close()


async def test_send_many_hands_frames_over_before_its_commit_and_reports_each_refusal(tmp_path: Path) -> None:
    a, b, _ = await _pair(tmp_path, quota_a=600)
    dest = Destination.to_node(b.node_id)
    batch = [Outgoing(dest, b"fits", Kind.TEXT), Outgoing(dest, b"z" * 800, Kind.TEXT)]
    with commits_held(a):
        send = asyncio.create_task(a.send_many(batch, T1))
        frames = [await _frame(a), await _frame(a)]
        assert not send.done(), "send_many answered before its commit"
    kept, refused = await asyncio.wait_for(send, 10)
    assert isinstance(kept, BundleId) and isinstance(refused, StorageFullError)
    for frame in frames:
        await b.frame_received(IP.name, a.node_id, frame, T1)
    deliveries = await asyncio.wait_for(b.receive(), 2)
    ids = {delivery.payload[:4]: delivery.bundle_id for delivery in deliveries}
    assert ids[b"fits"] == kept and a.core.holds(kept)
    assert not a.core.holds(ids[b"zzzz"]) and a.status(ids[b"zzzz"]).state is State.UNKNOWN
    await a.close()
    await b.close()
