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
from relay.bundle import BundleId, Destination, Kind, Priority
from relay.core.receipts import State
from relay.engine import Delivery, NodeEngine
from relay.store_reader import StoreReader

T0 = 1000.0


async def _collect(engine: NodeEngine) -> list[Delivery]:
    got: list[Delivery] = []
    while True:
        try:
            got += await asyncio.wait_for(engine.receive(), 0.2)
        except TimeoutError:
            return got


class _CountingReader(StoreReader):
    reads: ClassVar[list[BundleId]] = []

    def get_many(self, bundle_ids: Sequence[BundleId]) -> dict[BundleId, bytes]:
        _CountingReader.reads.extend(bundle_ids)
        return super().get_many(bundle_ids)


def _two_enrolled() -> tuple[Deployment, bytes]:
    """Nodes "a" and "b" enrolled; b's node id (what a sends to)."""
    net = Deployment()
    for name in ("a", "b"):
        net.enrol(name)
    return net, net.members["b"][0].node_id


async def _send(engine: NodeEngine, to: bytes, payload: bytes, priority: Priority) -> BundleId:
    return await engine.send(
        Destination.to_node(to), payload, kind=Kind.TEXT, priority=priority, lifetime=3600, now=T0
    )


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
    net, b_id = _two_enrolled()
    a, b = await net.open("a", tmp_path, T0), await net.open("b", tmp_path, T0)
    first = await _send(a, b_id, b"first", Priority.BULK)
    damaged = await _send(a, b_id, b"damaged", Priority.BULK)
    last = await _send(a, b_id, b"last", Priority.BULK)
    with sqlite3.connect(a.store.path) as db:  # the node's writer is up: another connection, WAL
        db.execute("UPDATE seen SET data = ? WHERE id = ?", (b"\xc1 not a bundle" * 4, damaged.key()))
    pump = EnginePump()
    await pump.connect(IP, a, b, T0)
    with caplog.at_level(logging.ERROR, logger="relay.engine"):
        await pump.run(T0, 10)
    assert sorted(d.payload for d in await _collect(b)) == [b"first", b"last"]
    assert a.status(first).state is State.DELIVERED and a.status(last).state is State.DELIVERED
    status = a.status(damaged)
    assert status.state is State.EVICTED and status.reason is not None
    assert status.reason.startswith("damaged in the store: its stored copy does not decode")
    assert not a.core.holds(damaged) and a.core.damaged_total == 1
    assert [r.levelno for r in caplog.records if str(damaged) in r.getMessage()] == [logging.ERROR]
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
    net, b_id = _two_enrolled()
    a, b = await net.open("a", tmp_path, T0), await net.open("b", tmp_path, T0)
    first = await _send(a, b_id, b"first", Priority.BULK)
    damaged = await _send(a, b_id, b"damaged", Priority.BULK)
    last = await _send(a, b_id, b"last", Priority.BULK)
    with sqlite3.connect(a.store.path) as db:  # the node's writer is up: another connection, WAL
        db.execute("UPDATE seen SET data = CAST(data || x'00' AS BLOB) WHERE id = ?", (damaged.key(),))
    pump = EnginePump()
    await pump.connect(IP, a, b, T0)
    with caplog.at_level(logging.ERROR, logger="relay.engine"):
        await pump.run(T0, 120)
    assert sorted(d.payload for d in await _collect(b)) == [b"first", b"last"]
    assert a.status(first).state is State.DELIVERED and a.status(last).state is State.DELIVERED
    assert b.refused_frames == 1  # the one copy sent; the link and b's store took the others
    status = a.status(damaged)
    assert status.state is State.EVICTED and status.reason is not None
    assert status.reason.startswith("damaged in the store: its stored copy does not decode")
    assert not a.core.holds(damaged) and a.core.damaged_total == 1
    assert [r.levelno for r in caplog.records if str(damaged) in r.getMessage()] == [logging.ERROR]
    with sqlite3.connect(b.store.path) as db:  # the neighbour stored nothing of it
        assert db.execute("SELECT COUNT(*) FROM seen WHERE id = ?", (damaged.key(),)).fetchone() == (0,)
    await a.close()
    await b.close()


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
