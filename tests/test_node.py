"""Node on the in-process link: real stores, real crypto, real asyncio tasks; no sockets."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from engine_net import IP, LORA, Deployment

import relay.core.held as held_module
from relay.bundle import BundleId, CompactContext, Destination, Kind, Priority, to_epoch
from relay.core.frames import DataFrame, data_priority, decode_frame
from relay.core.receipts import State
from relay.engine import Delivery, NodeEngine, Outgoing
from relay.links.inproc import InprocHub, InprocLink
from relay.node import MAX_BATCH_FRAMES, Node


async def test_send_both_ways_and_status_becomes_delivered(tmp_path: Path) -> None:
    net = Deployment()
    net.enrol("post", frozenset({"command"}))
    net.enrol("field")
    hub = InprocHub()
    nodes = []
    for name in ("post", "field"):
        engine = await net.open(name, tmp_path, to_epoch(time.time()))
        nodes.append(Node(engine, [InprocLink(hub, engine.node_id, IP)]))
    post, field = nodes
    for node in nodes:
        await node.start()
    try:
        to_field = await post.send(Destination.to_node(field.node_id), b"evacuate", kind=Kind.TEXT)
        to_post = await field.send(
            Destination.to_node(post.node_id), b"SOS", kind=Kind.SOS, priority=Priority.FLASH
        )

        async def first(node: Node) -> Delivery:
            async for delivery in node.inbox():
                await node.ack(delivery.bundle_id)
                return delivery
            raise AssertionError("inbox ended")

        got_field = await asyncio.wait_for(first(field), 10)
        got_post = await asyncio.wait_for(first(post), 10)
        assert got_field.payload == b"evacuate" and got_field.bundle_id == to_field
        assert got_post.payload == b"SOS" and got_post.priority is Priority.FLASH
        for _ in range(100):
            if (
                post.status(to_field).state is State.DELIVERED
                and field.status(to_post).state is State.DELIVERED
            ):
                break
            await asyncio.sleep(0.05)
        assert post.status(to_field).state is State.DELIVERED
        assert field.status(to_post).state is State.DELIVERED
    finally:
        for node in nodes:
            await node.stop()


async def test_big_bundle_crosses_a_small_mtu_link_in_fragments(tmp_path: Path) -> None:
    net = Deployment()
    net.enrol("camera")
    net.enrol("post")
    hub = InprocHub()
    nodes = []
    for name in ("camera", "post"):
        engine = await net.open(name, tmp_path, to_epoch(time.time()))
        nodes.append(Node(engine, [InprocLink(hub, engine.node_id, LORA)]))
    camera, post = nodes
    for node in nodes:
        await node.start()
    try:
        snapshot = bytes(range(256)) * 4
        bundle_id = await camera.send(
            Destination.to_node(post.node_id), snapshot, kind=Kind.TEXT, priority=Priority.FLASH
        )
        async with asyncio.timeout(20):
            async for delivery in post.inbox():
                assert (delivery.bundle_id, delivery.payload) == (bundle_id, snapshot)
                await post.ack(delivery.bundle_id)
                break
    finally:
        for node in nodes:
            await node.stop()


class _BrokenRadioLink(InprocLink):
    """An in-process link that sends alongside (as LoRa does) and whose first DATA frame's send
    fails with an error no link should raise."""

    flash_alongside = 2

    def __init__(self, hub: InprocHub, node_id: bytes, context: CompactContext | None) -> None:
        super().__init__(hub, node_id, LORA)
        self.context = context
        self.failed = False

    async def send(self, peer: bytes, frame: bytes) -> None:
        if not self.failed and isinstance(decode_frame(frame, self.context), DataFrame):
            self.failed = True
            raise RuntimeError("radio driver bug")
        await super().send(peer, frame)


async def test_an_unexpected_error_in_a_send_alongside_is_logged_and_the_link_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    net = Deployment()
    net.enrol("post", frozenset({"command"}))
    net.enrol("field")
    hub = InprocHub()
    post_engine = await net.open("post", tmp_path, to_epoch(time.time()))
    field_engine = await net.open("field", tmp_path, to_epoch(time.time()))
    post = Node(post_engine, [InprocLink(hub, post_engine.node_id, LORA)])
    link = _BrokenRadioLink(hub, field_engine.node_id, field_engine.core.context)
    field = Node(field_engine, [link])
    for node in (post, field):
        await node.start()
    try:
        to_post = Destination.to_node(post.node_id)
        await field.send(to_post, b"first alarm", kind=Kind.SOS, priority=Priority.FLASH)
        await field.send(to_post, b"second alarm", kind=Kind.SOS, priority=Priority.FLASH)

        async def second() -> bytes:
            async for delivery in post.inbox():
                await post.ack(delivery.bundle_id)
                if delivery.payload == b"second alarm":
                    return delivery.payload
            raise AssertionError("inbox ended")

        assert await asyncio.wait_for(second(), 30) == b"second alarm"
        assert link.failed
        assert any("failed sending" in record.getMessage() for record in caplog.records)
    finally:
        for node in (post, field):
            await node.stop()


class _Deaf:
    """The events of a neighbour that takes frames and never answers."""

    def link_up(self, link: str, peer: bytes) -> None: ...
    def link_down(self, link: str, peer: bytes) -> None: ...
    def frame_received(self, link: str, peer: bytes, frame: bytes) -> None: ...
    def frame_overheard(self, link: str, peer: bytes, frame: bytes) -> None: ...


@dataclass
class _Asked:
    node: Node
    bundle_id: BundleId
    frames: int = 0  # the link's asks for a frame (engine.next_frame calls)


@asynccontextmanager
async def _sending_to_a_deaf_neighbour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, damaged: bool
) -> AsyncIterator[_Asked]:
    """A node holding one BULK bundle for a neighbour that takes frames and never answers (no ACK,
    no summary: nothing wakes the node's timers), its row in the store overwritten if ``damaged``."""
    monkeypatch.setattr(held_module, "RESIDENT_BYTES", 0)  # BULK is read back from the store's bytes
    net = Deployment()
    net.enrol("post", frozenset({"command"}))
    net.enrol("field")
    field_id = net.members["field"][0].node_id
    engine = await net.open("post", tmp_path, to_epoch(time.time()))
    bundle_id = await engine.send(
        Destination.to_node(field_id),
        b"bulk",
        kind=Kind.TEXT,
        priority=Priority.BULK,
        lifetime=3600,
        now=to_epoch(time.time()),
    )
    if damaged:
        with sqlite3.connect(engine.store.path) as db:  # bit rot: the row no longer decodes
            db.execute("UPDATE seen SET data = ? WHERE id = ?", (b"\xc1" * 64, bundle_id.key()))
    hub = InprocHub()
    deaf = InprocLink(hub, field_id, IP)
    await deaf.start(_Deaf())
    asked = _Asked(Node(engine, [InprocLink(hub, engine.node_id, IP)]), bundle_id)
    next_frame = engine.next_frame

    def counted(*args: Any) -> tuple[bytes, bytes] | None:
        asked.frames += 1
        return next_frame(*args)

    monkeypatch.setattr(engine, "next_frame", counted)
    await asked.node.start()
    try:
        yield asked
    finally:
        await asked.node.stop()
        await deaf.stop()


async def test_a_damaged_stored_bundle_does_not_spin_the_link_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The core's deadline is now while a bundle found damaged in the store waits to be dropped; the
    link, with nothing else to send, slept on that deadline and asked for a frame again and again
    (43,000 times in 0.5 s) until another event or deadline woke the timers. The timers drop it."""
    async with _sending_to_a_deaf_neighbour(tmp_path, monkeypatch, damaged=True) as asked:
        core = asked.node.engine.core
        async with asyncio.timeout(5):
            while core.damaged_total == 0:
                await asyncio.sleep(0.01)
        before = asked.frames
        await asyncio.sleep(0.5)
        assert asked.frames - before < 20, f"the link asked for a frame {asked.frames - before} times"
        assert asked.node.status(asked.bundle_id).state is State.EVICTED


async def test_a_copy_whose_timeout_passes_is_sent_again_then_without_spinning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy's custody timeout (2 s on IP at first) is set when its frame is taken, after the timers
    last read their deadline; the link slept on it, and from then on asked for a frame in a loop
    (about 35,000 times in 0.5 s) until the timers woke for a later deadline of their own (3 s
    later here), which is also when the copy went again."""
    async with _sending_to_a_deaf_neighbour(tmp_path, monkeypatch, damaged=False) as asked:
        custody = asked.node.engine.core.custody
        async with asyncio.timeout(5):
            while not len(custody):  # its frame was taken: its timeout runs
                await asyncio.sleep(0.01)
        await asyncio.sleep(2.3)  # past the timeout
        before = asked.frames
        await asyncio.sleep(0.5)
        assert asked.frames - before < 20, f"the link asked for a frame {asked.frames - before} times"
        assert custody.retries >= 1  # sent again at its timeout


@asynccontextmanager
async def _post_beside_a_field_engine(tmp_path: Path) -> AsyncIterator[tuple[Node, NodeEngine, float]]:
    """A command post's node on an in-process link, not started, and a field unit's bare engine
    whose frames the test hands to the post itself; the field's side of the link is up."""
    net = Deployment()
    net.enrol("post", frozenset({"command"}))
    net.enrol("field")
    now = to_epoch(time.time())
    post_engine = await net.open("post", tmp_path, now)
    field = await net.open("field", tmp_path, now)
    post = Node(post_engine, [InprocLink(InprocHub(), post_engine.node_id, IP)])
    try:
        await field.link_up(IP, post_engine.node_id, now)
        yield post, field, now
    finally:
        await post.stop()
        await field.close()


async def _admitted_in_order(post: Node, field: NodeEngine, frames: list[bytes], count: int) -> list[bytes]:
    """Start the post with the field as its neighbour, hand it every frame in one turn of the loop
    (none handled before the last came), and return the payloads as its application got them."""
    await post.start()
    post.link_up(IP.name, field.node_id)
    for _ in range(100):  # the neighbour is known before its frames come
        if post.engine.core.neighbours(IP.name):
            break
        await asyncio.sleep(0.01)
    for frame in frames:
        post.frame_received(IP.name, field.node_id, frame)
    order: list[bytes] = []
    async with asyncio.timeout(30):
        async for batch in post.inbox_batches():
            order += [delivery.payload for delivery in batch]
            await post.ack_many(batch)
            if len(order) == count:
                break
    return order


async def test_a_flash_frame_goes_ahead_of_frames_waiting_for_admission(tmp_path: Path) -> None:
    """A backlog read faster than it is stored waits in the node's queue (thousands of frames over
    IP); a FLASH frame that arrives behind it is admitted in the next batch, alone, not after them."""
    async with _post_beside_a_field_engine(tmp_path) as (post, field, now):
        to_post = Destination.to_node(post.node_id)
        routine = [Outgoing(to_post, b"report %d" % i, Kind.TEXT, Priority.ROUTINE) for i in range(600)]
        await field.send_many(routine, now)
        backlog = [out[1] for out in iter(lambda: field.next_frame(IP.name, now), None)]
        assert len(backlog) >= 600
        await field.send(to_post, b"gas leak", kind=Kind.SOS, priority=Priority.FLASH, lifetime=600, now=now)
        out = field.next_frame(IP.name, now)
        assert out is not None and data_priority(out[1]) == Priority.FLASH
        order = await _admitted_in_order(post, field, [*backlog, out[1]], 601)
        assert order[0] == b"gas leak", order[:3]
        assert sorted(order[1:]) == sorted(message.payload for message in routine)


async def test_a_flash_frame_is_taken_in_while_two_batches_wait_for_the_store(tmp_path: Path) -> None:
    """Two batches of a backlog are in flight, their commits held up (an operator's ``sqlite3``
    shell holds the file's write lock): a FLASH frame arriving now starts a batch of its own at
    once, and reaches a journal that takes bundles while they commit, instead of waiting for a
    batch to finish (up to 95 ms a hop behind a backlog)."""
    async with _post_beside_a_field_engine(tmp_path) as (post, field, now):
        to_post = Destination.to_node(post.node_id)
        routine = [Outgoing(to_post, b"report %d" % i, Kind.TEXT, Priority.ROUTINE) for i in range(600)]
        await field.send_many(routine, now)
        backlog = [out[1] for out in iter(lambda: field.next_frame(IP.name, now), None)]
        await field.send(to_post, b"gas leak", kind=Kind.SOS, priority=Priority.FLASH, lifetime=600, now=now)
        alarm = field.next_frame(IP.name, now)
        assert alarm is not None and data_priority(alarm[1]) == Priority.FLASH
        await post.start()
        post.link_up(IP.name, field.node_id)
        async with asyncio.timeout(5):
            while not post.engine.core.neighbours(IP.name):
                await asyncio.sleep(0.01)
        got: list[bytes] = []

        async def journal() -> None:  # acks nothing: an ack is a write, which would wait for the lock
            async for batch in post.inbox_batches(idempotent=True):
                got.extend(delivery.payload for delivery in batch)

        reader = asyncio.create_task(journal())
        shell = sqlite3.connect(post.engine.store.path, isolation_level=None)
        try:
            shell.execute("BEGIN IMMEDIATE")  # the store's commits wait for this lock
            for frame in backlog:
                post.frame_received(IP.name, field.node_id, frame)
            previous = -1
            for _ in range(60):  # until two batches are taken in and the third waits for room
                if len(got) == previous > 0:
                    break
                previous = len(got)
                await asyncio.sleep(0.05)
            taken = len(got)
            assert MAX_BATCH_FRAMES < taken < 600, taken
            post.frame_received(IP.name, field.node_id, alarm[1])
            async with asyncio.timeout(1):
                while b"gas leak" not in got:
                    await asyncio.sleep(0.01)
            assert got[taken:] == [b"gas leak"]  # alone: the backlog's third batch still waits
        finally:
            shell.execute("ROLLBACK")
            shell.close()
        async with asyncio.timeout(10):
            while len(set(got)) < 601:
                await asyncio.sleep(0.01)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


class _DeafLink(InprocLink):
    """A neighbour that stopped reading (its process paused): frames to it fill its queue."""

    async def _read(self) -> None:
        await asyncio.Event().wait()


@contextlib.asynccontextmanager
async def _post_with_a_paused_peer(tmp_path: Path) -> AsyncIterator[tuple[Node, _DeafLink, Node]]:
    """A post, a paused peer and a field unit on one in-process link, the post's backlog to the
    paused peer more than its queue holds (full when this yields); every node stopped after."""
    net = Deployment()
    net.enrol("post", frozenset({"command"}))
    net.enrol("paused")
    net.enrol("field")
    now = to_epoch(time.time())
    hub = InprocHub()
    engines = {name: await net.open(name, tmp_path, now) for name in ("post", "paused", "field")}
    paused = _DeafLink(hub, engines["paused"].node_id, IP)
    post = Node(engines["post"], [InprocLink(hub, engines["post"].node_id, IP)])
    field = Node(engines["field"], [InprocLink(hub, engines["field"].node_id, IP)])
    nodes = (post, Node(engines["paused"], [paused]), field)
    for node in nodes:
        await node.start()
    try:
        for _ in range(100):
            if len(engines["post"].core.neighbours(IP.name)) == 2:
                break
            await asyncio.sleep(0.01)
        to_paused = Destination.to_node(engines["paused"].node_id)
        backlog = [Outgoing(to_paused, b"order %d" % i, Kind.TEXT, Priority.ROUTINE) for i in range(1100)]
        await post.send_many(backlog)  # more than the paused peer's queue holds
        async with asyncio.timeout(10):
            while not paused._queue.full():
                await asyncio.sleep(0.01)
        yield post, paused, field
    finally:
        for node in nodes:
            await node.stop()


async def test_a_peer_with_no_room_holds_no_alarm_back(tmp_path: Path) -> None:
    """The link task waits for a full peer's room for the frame it holds; FLASH frames, to any
    peer, go meanwhile (before, every frame of the link waited for that peer)."""
    async with _post_with_a_paused_peer(tmp_path) as (post, paused, field):
        to_paused = Destination.to_node(paused.node_id)
        await post.send(
            Destination.to_node(field.node_id), b"evacuate", kind=Kind.SOS, priority=Priority.FLASH
        )
        async with asyncio.timeout(10):
            async for delivery in field.inbox():
                assert delivery.payload == b"evacuate"
                await field.ack(delivery.bundle_id)
                break
        assert paused._queue.full()  # still waiting for room: nothing was pushed past it
        # An alarm to the paused peer itself finds no room either: it waits on its own, and the
        # next alarm to the field unit still goes.
        await post.send(to_paused, b"sos to paused", kind=Kind.SOS, priority=Priority.FLASH)
        await asyncio.sleep(0.1)
        await post.send(Destination.to_node(field.node_id), b"stay", kind=Kind.SOS, priority=Priority.FLASH)
        async with asyncio.timeout(10):
            async for delivery in field.inbox():
                assert delivery.payload == b"stay"
                await field.ack(delivery.bundle_id)
                break
    assert not post._waiting  # the frames still waiting were cancelled with the node, not leaked


async def test_a_peer_with_no_room_holds_no_other_peers_messages_back(tmp_path: Path) -> None:
    """One paused peer with a full queue: the frame that found no room waits on its own, the core
    holds that peer's next frames back, and ordinary messages to the other peers go (before, the
    link task waited for that room and every peer's routine traffic with it)."""
    async with _post_with_a_paused_peer(tmp_path) as (post, paused, field):
        to_field = Destination.to_node(field.node_id)
        sent = [
            await post.send(to_field, b"report %d" % i, kind=Kind.TEXT, priority=Priority.ROUTINE)
            for i in range(20)
        ]
        received = []
        async with asyncio.timeout(10):
            async for delivery in field.inbox():
                received.append(delivery.payload)
                await field.ack(delivery.bundle_id)
                if len(received) == len(sent):
                    break
        assert sorted(received) == sorted(b"report %d" % i for i in range(20))
        assert paused._queue.full() and post._busy[IP.name] == {paused.node_id}
        queued = paused._queue.qsize()
        paused._queue.get_nowait()  # the paused peer takes one frame: the one waiting for room goes
        async with asyncio.timeout(10):
            while post._busy[IP.name] and paused._queue.qsize() < queued:
                await asyncio.sleep(0.01)
        assert paused._queue.full()
    assert not post._waiting and not post._busy[IP.name]


async def test_a_peer_that_left_while_a_frame_waited_for_its_room_gets_frames_when_it_is_back(
    tmp_path: Path,
) -> None:
    """A frame waiting for a paused peer's room keeps that peer busy until its send returns; the
    in-process link's send to a peer that left never returns. The peer going down drops what waits
    for it, so once it is back it gets its frames (found by the review of 8e47368: it stayed busy
    for ever and got nothing but FLASH)."""
    net = Deployment()
    for name in ("post", "paused"):
        net.enrol(name)
    now = to_epoch(time.time())
    hub = InprocHub()
    post_engine = await net.open("post", tmp_path, now)
    (tmp_path / "first").mkdir()
    paused_engine = await net.open("paused", tmp_path / "first", now)
    paused_id = paused_engine.node_id
    post = Node(post_engine, [InprocLink(hub, post_engine.node_id, IP)])
    paused_node = Node(paused_engine, [_DeafLink(hub, paused_id, IP)])
    back: Node | None = None
    for node in (post, paused_node):
        await node.start()
    try:
        async with asyncio.timeout(10):
            while not post_engine.core.neighbours(IP.name):
                await asyncio.sleep(0.01)
        to_paused = Destination.to_node(paused_id)
        backlog = [Outgoing(to_paused, b"order %d" % i, Kind.TEXT, Priority.ROUTINE) for i in range(1100)]
        await post.send_many(backlog)
        async with asyncio.timeout(10):
            while post._busy[IP.name] != {paused_id}:
                await asyncio.sleep(0.01)
        await paused_node.stop()  # the paused unit goes (it left the hub: the post sees it down)
        (tmp_path / "again").mkdir()
        back_engine = await net.open("paused", tmp_path / "again", to_epoch(time.time()))
        back = Node(back_engine, [InprocLink(hub, paused_id, IP)])
        await back.start()  # and comes back
        await post.send(to_paused, b"report in", kind=Kind.TEXT, priority=Priority.IMMEDIATE)
        received: list[bytes] = []

        async def first() -> None:
            async for delivery in back.inbox():
                received.append(delivery.payload)
                return

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(first(), 10)
        assert received, f"nothing reached the unit back on the hub; busy: {post._busy[IP.name]}"
    finally:
        for node in (post, back):
            if node is not None:
                await node.stop()


async def test_alarms_from_one_unit_keep_their_order_when_they_go_ahead(tmp_path: Path) -> None:
    """The first alarm arrives with nothing waiting, the second behind a report: both go ahead of
    what waits, in the order they came ("evacuate north", then its correction)."""
    async with _post_beside_a_field_engine(tmp_path) as (post, field, now):
        to_post = Destination.to_node(post.node_id)
        frames: list[bytes] = []
        for payload, priority in (
            (b"evacuate north", Priority.FLASH),
            (b"report", Priority.ROUTINE),
            (b"cancel: south", Priority.FLASH),
        ):
            await field.send(to_post, payload, kind=Kind.SOS, priority=priority, lifetime=600, now=now)
            frames += [out[1] for out in iter(lambda: field.next_frame(IP.name, now), None)]
        order = await _admitted_in_order(post, field, frames, 3)
        assert order == [b"evacuate north", b"cancel: south", b"report"]
