"""A batch an application sends at once (NodeEngine.send_many, Store.next_bundle_ids): one id
reservation, one commit, each message accepted or refused on its own, nothing accepted lost."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from engine_net import IP, Deployment, EnginePump

from relay.bundle import MAX_SEQ, BundleId, Destination, Kind, Priority
from relay.core.receipts import State
from relay.engine import NodeEngine, Outgoing, SendError, StorageFullError
from relay.store import BATCH_BLOCK, ID_BLOCK, ID_HORIZON_S, Store

T0 = 1000.0
ORIGIN = bytes(range(16))


def _reserved(path: Path) -> tuple[int, int, int, int]:
    """The id mark the store committed for ORIGIN (what a restart after kill -9 continues from)."""
    with sqlite3.connect(path) as raw:
        row = raw.execute(
            "SELECT created, seq, horizon, floor FROM origin_seq WHERE origin = ?", (ORIGIN,)
        ).fetchone()
    return row[0], row[1], row[2], row[3]


async def test_a_batch_of_ids_is_contiguous_reserved_ahead_and_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await Store.open(path)
    first = await store.next_bundle_ids(ORIGIN, 500, 250)
    assert first == [BundleId(ORIGIN, 500, seq) for seq in range(250)]
    floor = 249 + BATCH_BLOCK * 250
    mark = _reserved(path)  # committed before the ids were returned
    assert mark == (499, MAX_SEQ, 500 + ID_HORIZON_S, floor)
    taken = set(first)
    for now in (500,) * (BATCH_BLOCK - 1) + (501,):  # the next batches stay under the floor: no commit
        taken |= set(await store.next_bundle_ids(ORIGIN, now, 250))
        assert _reserved(path) == mark
    # kill -9 now (the mark, not close(), is what the next start sees): every id issued is below the
    # floor in its second; restarted within the same second, the ids start at the floor
    crashed = await Store.open(path)
    after = await crashed.next_bundle_ids(ORIGIN, 501, 3)
    assert after == [BundleId(ORIGIN, 501, floor + n) for n in (0, 1, 2)]
    assert not taken & set(after)
    await crashed.close()
    await store.close()


async def test_a_batch_of_ids_rolls_into_the_next_second_after_65536(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await Store.open(path)
    await store.next_bundle_id(ORIGIN, 7)
    await store.close()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE origin_seq SET seq = 65534")
    store = await Store.open(path)
    ids = await store.next_bundle_ids(ORIGIN, 7, 3)
    assert ids == [BundleId(ORIGIN, 7, 65535), BundleId(ORIGIN, 8, 0), BundleId(ORIGIN, 8, 1)]
    assert _reserved(path) == (7, MAX_SEQ, 8 + ID_HORIZON_S, 1 + ID_BLOCK)  # the floor counts from 8's
    await store.close()


async def test_a_batch_with_bad_messages_answers_each_and_loses_none_of_the_others(tmp_path: Path) -> None:
    net = Deployment()
    for name in ("a", "b"):
        net.enrol(name)
    a, b = [await net.open(name, tmp_path, T0) for name in ("a", "b")]
    to_b = Destination.to_node(b.node_id)
    messages = [Outgoing(to_b, f"message {n}".encode(), Kind.TEXT) for n in range(20)]
    messages[3] = Outgoing(Destination.to_node(b"\xab" * 16), b"to a node nobody enrolled", Kind.TEXT)
    messages[11] = Outgoing(Destination.to_group("no-key-here"), b"to a group without a key", Kind.TEXT)
    messages[15] = Outgoing(to_b, b"an unregistered kind", 200)
    results = await a.send_many(messages, T0)
    refused = {n: r for n, r in enumerate(results) if isinstance(r, SendError)}
    assert sorted(refused) == [3, 11, 15]
    assert "no certificate" in str(refused[3])
    assert "no key for group 'no-key-here'" in str(refused[11])
    assert "not registered" in str(refused[15])
    sent = [r for r in results if isinstance(r, BundleId)]
    assert len(sent) == len(set(sent)) == 17
    assert all(a.status(bundle_id).state is State.QUEUED for bundle_id in sent)
    assert await a.send_many([], T0) == []

    pump = EnginePump()
    await pump.connect(IP, a, b, T0)
    await pump.run(T0, 30, dt=0.5)
    delivered = await asyncio.wait_for(b.receive(), 5)
    assert sorted(d.bundle_id for d in delivered) == sorted(sent)
    assert sorted(d.payload for d in delivered) == sorted(
        m.payload for n, m in enumerate(messages) if n not in refused
    )
    for engine in (a, b):
        await engine.close()


async def test_a_full_store_refuses_the_messages_that_do_not_fit_and_keeps_the_rest(tmp_path: Path) -> None:
    net = Deployment()
    for name in ("a", "b"):
        net.enrol(name)
    identity, certificate = net.members["a"]
    path = tmp_path / "a.sqlite"
    a = await NodeEngine.open(identity, certificate, net.trust(), path, quota_bytes=2000, now=T0)
    to_b = Destination.to_node(net.members["b"][1].node_id)
    messages = [Outgoing(to_b, bytes([n]) * 100, Kind.TEXT, Priority.ROUTINE) for n in range(40)]
    results = await a.send_many(messages, T0)
    sent = [r for r in results if isinstance(r, BundleId)]
    full = [r for r in results if isinstance(r, SendError)]
    assert sent and full and len(sent) + len(full) == 40
    assert all(isinstance(r, StorageFullError) and "store is full" in str(r) for r in full)
    assert results[: len(sent)] == sent  # the first ones fit, in order; no later one took their room
    await a.close()
    a = await NodeEngine.open(identity, certificate, net.trust(), path, quota_bytes=2000, now=T0)
    assert {bundle.id for bundle in a.core.held_for([net.members["b"][1].node_id])} == set(sent)
    await a.close()
