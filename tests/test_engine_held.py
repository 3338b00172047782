"""Held bundles left in the store and read back when a link takes them (relay/store_reader.py), on
real engines and real SQLite stores: across a restart, in priority order, and when the store
dropped one behind the core's back."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pytest
from engine_net import IP, Deployment, EnginePump

import relay.core.held as held_module
from crypto.group import GroupKey, GroupKeyring
from relay.bundle import BundleId, Destination, Kind, Priority, decode_full
from relay.core.frames import FrameType
from relay.core.receipts import State
from relay.engine import Delivery, NodeEngine
from relay.store_reader import StoreReader
from relay.trust import TrustStore

T0 = 1000.0
GROUP = "incident-7"


async def _collect(engine: NodeEngine) -> list[Delivery]:
    got: list[Delivery] = []
    while True:
        try:
            got += await asyncio.wait_for(engine.receive(), 0.2)
        except TimeoutError:
            return got


class _CountingReader(StoreReader):
    reads: ClassVar[list[BundleId]] = []
    calls: ClassVar[int] = 0

    def get_many(self, bundle_ids: Sequence[BundleId]) -> dict[BundleId, bytes]:
        _CountingReader.reads.extend(bundle_ids)
        _CountingReader.calls += 1
        return super().get_many(bundle_ids)


def _two_enrolled() -> tuple[Deployment, bytes]:
    """Nodes "a" and "b" enrolled; b's node id (what a sends to)."""
    net = Deployment()
    for name in ("a", "b"):
        net.enrol(name)
    return net, net.members["b"][0].node_id


async def _member(net: Deployment, key: GroupKey, name: str, directory: Path, now: float) -> NodeEngine:
    """``name``'s engine, a member of :data:`GROUP` (it delivers the group's bundles and keeps
    them to pass on)."""
    identity, cert = net.members[name]
    trust = TrustStore(net.authority.public, [c for _, c in net.members.values()], groups=[GROUP])
    return await NodeEngine.open(
        identity,
        cert,
        trust,
        directory / f"{name}.sqlite",
        now=now,
        keyring=GroupKeyring([key]),
        groups=frozenset({GROUP}),
    )


async def _group_of_two(
    tmp_path: Path, *others: str
) -> tuple[Deployment, GroupKey, NodeEngine, NodeEngine, BundleId]:
    """Members "a" and "b" of :data:`GROUP` (and ``others`` enrolled), and a's ROUTINE bundle to the
    group, sent but not yet passed on."""
    net = Deployment()
    for name in ("a", "b", *others):
        net.enrol(name)
    key = GroupKey.generate(GROUP)
    a, b = await _member(net, key, "a", tmp_path, T0), await _member(net, key, "b", tmp_path, T0)
    to_all = Destination.to_group(GROUP)
    sent = await a.send(to_all, b"to all", kind=Kind.TEXT, priority=Priority.ROUTINE, lifetime=3600, now=T0)
    return net, key, a, b, sent


def _assert_dropped_as_damaged(
    engine: NodeEngine, bundle_id: BundleId, caplog: pytest.LogCaptureFixture
) -> None:
    """``bundle_id`` no longer held by ``engine``: evicted with the damaged row's reason, counted, and
    one error line about it."""
    status = engine.status(bundle_id)
    assert status.state is State.EVICTED and status.reason is not None
    assert status.reason.startswith("damaged in the store: its stored copy does not decode")
    assert not engine.core.holds(bundle_id) and engine.core.damaged_total == 1
    assert [r.levelno for r in caplog.records if str(bundle_id) in r.getMessage()] == [logging.ERROR]


async def _pump_and_check_the_others(
    a: NodeEngine,
    b: NodeEngine,
    others: tuple[BundleId, BundleId],
    seconds: float,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Run a and b over IP for ``seconds``, errors logged: the first and last bundles of
    :func:`_three_sent_one_damaged` reach b's application and read as delivered at a."""
    pump = EnginePump()
    await pump.connect(IP, a, b, T0)
    with caplog.at_level(logging.ERROR, logger="relay.engine"):
        await pump.run(T0, seconds)
    assert sorted(d.payload for d in await _collect(b)) == [b"first", b"last"]
    assert all(a.status(bundle_id).state is State.DELIVERED for bundle_id in others)


async def _send(engine: NodeEngine, to: bytes, payload: bytes, priority: Priority) -> BundleId:
    return await engine.send(
        Destination.to_node(to), payload, kind=Kind.TEXT, priority=priority, lifetime=3600, now=T0
    )


async def _three_sent_one_damaged(
    tmp_path: Path, damage: str, *parameters: object
) -> tuple[NodeEngine, NodeEngine, BundleId, BundleId, BundleId]:
    """a holds three BULK bundles for b (read back from the store's bytes), the middle one's row
    damaged by the SQL ``damage`` (its last parameter the row's id); a, b and the three ids."""
    net, b_id = _two_enrolled()
    a, b = await net.open("a", tmp_path, T0), await net.open("b", tmp_path, T0)
    first = await _send(a, b_id, b"first", Priority.BULK)
    damaged = await _send(a, b_id, b"damaged", Priority.BULK)
    last = await _send(a, b_id, b"last", Priority.BULK)
    with sqlite3.connect(a.store.path) as db:  # the node's writer is up: another connection, WAL
        db.execute(damage, (*parameters, damaged.key()))
    return a, b, first, damaged, last


async def test_bundles_in_the_store_are_read_back_in_priority_order_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(held_module, "RESIDENT_BYTES", 0)  # nothing but FLASH/IMMEDIATE stays in memory
    monkeypatch.setattr("relay.engine.StoreReader", _CountingReader)
    _CountingReader.reads = []
    net, b_id = _two_enrolled()
    a = await net.open("a", tmp_path, T0)
    bulk = [await _send(a, b_id, b"bulk %d" % i, Priority.BULK) for i in range(20)]
    flash = await _send(a, b_id, b"SOS", Priority.FLASH)
    routine = [await _send(a, b_id, b"routine %d" % i, Priority.ROUTINE) for i in range(20)]
    await a.close()

    a = await net.open("a", tmp_path, T0 + 10)  # restored from the store, a chunk at a time
    b = await net.open("b", tmp_path, T0 + 10)
    pump = EnginePump()
    await pump.connect(IP, a, b, T0 + 10)
    await pump.run(T0 + 10, 60)
    got = await _collect(b)
    assert [d.bundle_id for d in got] == [flash, *routine, *bulk]  # one link, strict class order
    assert {d.payload for d in got} == {b"SOS"} | {b"bulk %d" % i for i in range(20)} | {
        b"routine %d" % i for i in range(20)
    }
    assert {*routine, *bulk} <= set(_CountingReader.reads)  # (b reads back its receipts too)
    assert flash not in _CountingReader.reads  # FLASH never waits for a read
    assert all(a.status(i).state is State.DELIVERED for i in [flash, *routine, *bulk])
    await a.close()
    await b.close()


async def test_a_bundle_the_store_dropped_is_skipped_not_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(held_module, "RESIDENT_BYTES", 0)
    net, b_id = _two_enrolled()
    a, b = await net.open("a", tmp_path, T0), await net.open("b", tmp_path, T0)
    gone = await _send(a, b_id, b"evicted", Priority.BULK)
    kept = await _send(a, b_id, b"kept", Priority.BULK)
    await a.store.delete(gone, "the store made room")  # the core has not heard of it yet
    pump = EnginePump()
    await pump.connect(IP, a, b, T0)
    await pump.run(T0, 10)
    assert [d.payload for d in await _collect(b)] == [b"kept"]
    assert a.status(kept).state is State.DELIVERED
    await a.close()
    await b.close()


async def test_a_damaged_stored_bundle_is_dropped_and_the_link_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A held bundle whose row in the store's file was overwritten (bit rot, a disk error) makes no
    frame: it is dropped as an eviction is, with a reason and an error naming the file, and the
    bundles queued with it still go out on that link (the error used to end the link's loop)."""
    monkeypatch.setattr(held_module, "RESIDENT_BYTES", 0)  # read back from the store's bytes
    a, b, first, damaged, last = await _three_sent_one_damaged(
        tmp_path, "UPDATE seen SET data = ? WHERE id = ?", b"\xc1 not a bundle" * 4
    )
    await _pump_and_check_the_others(a, b, (first, last), 10, caplog)
    _assert_dropped_as_damaged(a, damaged, caplog)
    assert str(a.store.path) in caplog.text and "restore it from a backup" in caplog.text
    with sqlite3.connect(a.store.path) as db:  # dropped from the store too, as an eviction is
        assert db.execute("SELECT data FROM seen WHERE id = ?", (damaged.key(),)).fetchall() in (
            [],
            [(None,)],
        )
    await a.close()
    await b.close()


async def test_a_damaged_stored_bundle_whose_header_scans_is_dropped_at_its_custody_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A row damaged past its header (here a byte appended) still makes a frame: the frame is built
    by scanning the header only. The neighbour refuses it (its full decode does) and takes the
    bundles around it; the sender used to send it again at every custody timeout, for its whole
    lifetime. Now the timeout decodes the stored copy before it goes again, and drops it as a
    damaged row: sent once, refused once."""
    monkeypatch.setattr(held_module, "RESIDENT_BYTES", 0)  # read back from the store's bytes
    a, b, first, damaged, last = await _three_sent_one_damaged(
        tmp_path, "UPDATE seen SET data = CAST(data || x'00' AS BLOB) WHERE id = ?"
    )
    await _pump_and_check_the_others(a, b, (first, last), 120, caplog)
    assert b.refused_frames == 1  # the one copy sent; the link and b's store took the others
    _assert_dropped_as_damaged(a, damaged, caplog)
    with sqlite3.connect(b.store.path) as db:  # the neighbour stored nothing of it
        assert db.execute("SELECT COUNT(*) FROM seen WHERE id = ?", (damaged.key(),)).fetchone() == (0,)
    await a.close()
    await b.close()


async def test_copies_due_together_are_checked_with_one_read_per_read_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stalled neighbour's copies fall due together: their stored copies are decoded before they
    go again (the test above), read READ_AHEAD to a SELECT, not one each, and their frames then
    take what was read."""
    monkeypatch.setattr(held_module, "RESIDENT_BYTES", 0)
    monkeypatch.setattr("relay.engine.StoreReader", _CountingReader)
    net, b_id = _two_enrolled()
    a = await net.open("a", tmp_path, T0)
    await a.link_up(IP, b_id, T0)
    count = held_module.READ_AHEAD + 8  # a full read and a short one
    for i in range(count):
        await _send(a, b_id, b"bulk %d" % i, Priority.BULK)
    while a.next_frame(IP.name, T0) is not None:  # taken by a neighbour that never answers
        pass
    _CountingReader.reads, _CountingReader.calls = [], 0
    await a.on_timer(T0 + 30)
    assert len(_CountingReader.reads) == count  # each copy read once ...
    calls = _CountingReader.calls
    assert calls == 2  # ... in two SELECTs (one per copy before)
    resent = 0
    while a.next_frame(IP.name, T0 + 30) is not None:
        resent += 1
    assert resent >= count and _CountingReader.calls == calls  # the frames read nothing more
    await a.close()


async def test_a_neighbours_copy_takes_the_place_of_a_damaged_stored_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """b holds a bundle for its group (delivered to its application, and kept to pass on) whose row
    is then damaged; a, which missed b's custody ACK, sends it again in one batch with new bundles.
    Reading its copy back to compare used to raise DamagedStoreError and leave the whole batch
    unacknowledged, to come again and again. Now the good copy replaces the damaged row, the batch
    is taken and acknowledged, b passes the bundle on, and b's application does not get it twice."""
    monkeypatch.setattr(held_module, "RESIDENT_BYTES", 0)  # b reads its held copy back from the store
    net, key, a, b, everyone = await _group_of_two(tmp_path, "c")
    await a.link_up(IP, b.node_id, T0)
    await b.link_up(IP, a.node_id, T0)
    now = T0
    while not b.core.holds(everyone):  # b's custody ACKs never reach a
        for engine in (a, b):
            await engine.on_timer(now)
        for src, dst in ((a, b), (b, a)):
            while (out := src.next_frame(IP.name, now)) is not None:
                if src is a or out[1][0] >> 4 != FrameType.ACK:
                    await dst.frame_received(IP.name, src.node_id, out[1], now)
        now += 0.5
        assert now < T0 + 30
    assert [d.payload for d in await _collect(b)] == [b"to all"]
    assert b.core.holds(everyone)
    with sqlite3.connect(b.store.path) as db:
        db.execute("UPDATE seen SET data = ? WHERE id = ?", (b"\xc1" * 40, everyone.key()))
    c_id = net.members["c"][0].node_id
    new = [await _send(a, c_id, b"new %d" % i, Priority.ROUTINE) for i in range(3)]
    later = T0 + 60
    await a.on_timer(later)  # past a's custody timeout: the copy for everyone goes again
    frames = []
    while (out := a.next_frame(IP.name, later)) is not None:
        frames.append((IP.name, a.node_id, out[1]))
    assert sum(frame[0] >> 4 == FrameType.DATA_FULL for _, _, frame in frames) == 4
    with caplog.at_level(logging.WARNING, logger="relay.engine"):
        await b.frames_received(frames, later)  # one batch: the resent copy and the new bundles
    assert [r.levelno for r in caplog.records if str(everyone) in r.getMessage()] == [logging.WARNING]
    assert "a neighbour's copy took its place" in caplog.text and str(b.store.path) in caplog.text

    pump = EnginePump()  # b's ACKs reach a now
    pump.links.append((IP, a, b))
    await pump.run(later, 10)
    assert all(a.status(i).state is State.FORWARDED for i in new)
    assert a.status(everyone).state is State.FORWARDED  # b took custody of it again
    c = await _member(net, key, "c", tmp_path, later + 10)
    await pump.connect(IP, b, c, later + 10)
    await pump.run(later + 10, 20)
    got = await _collect(c)
    assert sorted(d.payload for d in got) == [b"new 0", b"new 1", b"new 2", b"to all"]
    assert await _collect(b) == []  # delivered to b's application once, before the damage
    with sqlite3.connect(b.store.path) as db:  # the held row replaced; the inbox as it was
        [(data,)] = db.execute("SELECT data FROM seen WHERE id = ?", (everyone.key(),)).fetchall()
        assert decode_full(data).id == everyone
        assert db.execute("SELECT COUNT(*) FROM inbox WHERE id = ?", (everyone.key(),)).fetchone() == (1,)
    for engine in (a, b, c):
        await engine.close()


async def test_a_damaged_stored_bundle_does_not_keep_the_node_from_starting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A row overwritten while the node was stopped: the node opens with the others (before, the
    start-up read raised StoreError and the node did not start), sends them, and drops the damaged
    one from the store at its first timer, with an error naming the file."""
    net, b_id = _two_enrolled()
    a = await net.open("a", tmp_path, T0)
    ids = [await _send(a, b_id, b"routine %d" % i, Priority.ROUTINE) for i in range(3)]
    path = a.store.path
    await a.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE seen SET data = ? WHERE id = ?", (b"\xc1" * 40, ids[1].key()))
    with caplog.at_level(logging.ERROR, logger="relay.engine"):
        a = await net.open("a", tmp_path, T0 + 10)
        b = await net.open("b", tmp_path, T0 + 10)
        pump = EnginePump()
        await pump.connect(IP, a, b, T0 + 10)
        await pump.run(T0 + 10, 10)
    assert sorted(d.payload for d in await _collect(b)) == [b"routine 0", b"routine 2"]
    assert not a.core.holds(ids[1]) and a.core.damaged_total == 1
    assert [r.levelno for r in caplog.records if str(ids[1]) in r.getMessage()] == [logging.ERROR]
    assert str(path) in caplog.text
    with sqlite3.connect(path) as db:  # dropped from the store, as an eviction is
        assert db.execute("SELECT data FROM seen WHERE id = ?", (ids[1].key(),)).fetchall() in ([], [(None,)])
    await a.close()
    await b.close()


async def test_a_damaged_inbox_copy_does_not_keep_the_node_from_starting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An inbox copy (delivered here, not yet taken by the application) overwritten while the node
    was stopped: the node opens and delivers the others (before, the start-up read raised
    StoreError and the node did not start); the damaged one is dropped from the inbox, with an
    error naming the bundle and the file, and counted."""
    net, b_id = _two_enrolled()
    a, b = await net.open("a", tmp_path, T0), await net.open("b", tmp_path, T0)
    ids = [await _send(a, b_id, b"routine %d" % i, Priority.ROUTINE) for i in range(3)]
    pump = EnginePump()
    await pump.connect(IP, a, b, T0)
    await pump.run(T0, 10)
    path = b.store.path
    await b.close()  # before its application took them: they wait in its inbox
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM inbox").fetchone() == (3,)
        db.execute("UPDATE inbox SET data = ? WHERE id = ?", (b"\xc1" * 40, ids[1].key()))
    with caplog.at_level(logging.ERROR, logger="relay.engine"):
        b = await net.open("b", tmp_path, T0 + 10)
    assert sorted(d.payload for d in await _collect(b)) == [b"routine 0", b"routine 2"]
    assert b.damaged_inbox == 1
    assert [r.levelno for r in caplog.records if str(ids[1]) in r.getMessage()] == [logging.ERROR]
    assert str(path) in caplog.text and "restore it from a backup" in caplog.text
    await b.close()
    with sqlite3.connect(path) as db:  # dropped: the next start does not stop at it again
        assert db.execute("SELECT COUNT(*) FROM inbox WHERE id = ?", (ids[1].key(),)).fetchone() == (0,)
    await a.close()


async def test_a_damaged_inbox_copy_of_a_held_bundle_is_written_again_from_the_held_copy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A group's bundle is delivered here and kept to pass on: two copies in the store. With its
    inbox copy damaged while the node was stopped, start-up writes that copy again from the held
    one and delivers it, with a warning; nothing is dropped or counted."""
    net, key, a, b, sent = await _group_of_two(tmp_path)
    pump = EnginePump()
    await pump.connect(IP, a, b, T0)
    await pump.run(T0, 10)
    assert b.core.holds(sent)
    path = b.store.path
    await b.close()  # before its application took it: it waits in the inbox
    with sqlite3.connect(path) as db:
        db.execute("UPDATE inbox SET data = ? WHERE id = ?", (b"\xc1" * 40, sent.key()))
    with caplog.at_level(logging.WARNING, logger="relay.engine"):
        b = await _member(net, key, "b", tmp_path, T0 + 10)
    assert [d.payload for d in await _collect(b)] == [b"to all"]
    assert b.damaged_inbox == 0 and b.core.holds(sent)
    assert [r.levelno for r in caplog.records if str(sent) in r.getMessage()] == [logging.WARNING]
    assert "written again from its held copy" in caplog.text and str(path) in caplog.text
    await b.close()
    with sqlite3.connect(path) as db:
        [(data,)] = db.execute("SELECT data FROM inbox WHERE id = ?", (sent.key(),)).fetchall()
        assert decode_full(data).id == sent
    await a.close()
