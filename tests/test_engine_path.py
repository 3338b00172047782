"""The path taken, through NodeEngines on real SQLite stores and real crypto: names from the trust
store, a LoRa hop's gap, the trail surviving a restart, and forged receipts refused harmlessly."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from engine_net import IP, LORA, Deployment, EnginePump

from relay.bundle import Bundle, Destination, Kind, Priority
from relay.core.receipts import State
from relay.engine import Delivery, NodeEngine
from relay.store import Store

T0 = 1000.0
IP1 = replace(IP, name="ip1")  # the pump moves one peer's frames per link name: a relay needs two


async def _open(net: Deployment, names: tuple[str, ...], directory: Path) -> list[NodeEngine]:
    for name in names:
        net.enrol(name)
    return [await net.open(name, directory, T0) for name in names]


async def _received(engine: NodeEngine) -> list[Delivery]:
    try:
        return await asyncio.wait_for(engine.receive(), 1.0)
    except TimeoutError:
        return []


async def test_names_come_from_the_trust_store_and_a_lora_hop_is_a_counted_gap(tmp_path: Path) -> None:
    net = Deployment()
    a, r1, r2, b = await _open(net, ("post", "relay one", "relay two", "unit 7"), tmp_path)
    seen = []
    a.on_status(lambda _, status: seen.append(status))
    pump = EnginePump()
    await pump.connect(IP, a, r1, T0)
    await pump.connect(LORA, r1, r2, T0)
    await pump.connect(IP, r2, b, T0)
    bid = await a.send(
        Destination.to_node(b.node_id),
        b"evacuate",
        kind=Kind.TEXT,
        priority=Priority.FLASH,
        lifetime=600,
        now=T0,
    )
    await pump.run(T0, 180, dt=0.5)
    assert [d.bundle_id for d in await _received(b)] == [bid]
    status = a.status(bid)
    assert status.state is State.DELIVERED
    assert status.hops == 3 and status.names == ("relay two", "unit 7") and not status.path_complete
    assert "via [1 hop not recorded] → relay two → unit 7, 3 hops (first over ip0)" in str(status)
    assert seen[-1] == status, "status callbacks see the names too"
    for engine in (a, r1, r2, b):
        await engine.close()


async def test_a_relay_restarts_with_the_trail_it_stored(tmp_path: Path) -> None:
    net = Deployment()
    a, relay, b = await _open(net, ("post", "relay", "unit"), tmp_path)
    pump = EnginePump()
    await pump.connect(IP, a, relay, T0)
    bid = await a.send(
        Destination.to_node(b.node_id),
        b"hold on",
        kind=Kind.TEXT,
        priority=Priority.PRIORITY,
        lifetime=600,
        now=T0,
    )
    await pump.run(T0, 5, dt=0.5)
    stored = await relay.store.get(bid)
    assert stored is not None and stored.trail == (relay.node_id[:4],)
    await relay.close()
    relay = await net.open("relay", tmp_path, T0 + 10)
    pump = EnginePump()
    await pump.connect(IP, a, relay, T0 + 10)
    await pump.connect(IP1, relay, b, T0 + 10)
    await pump.run(T0 + 10, 30, dt=0.5)
    assert [d.bundle_id for d in await _received(b)] == [bid]
    status = a.status(bid)
    assert status.state is State.DELIVERED and status.names == ("relay", "unit") and status.path_complete
    for engine in (a, relay, b):
        await engine.close()


async def test_forged_receipts_are_refused_and_leave_the_bundle_and_its_status_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    net = Deployment()
    a, b, c = await _open(net, ("post", "unit", "stranger"), tmp_path)
    bid = await a.send(
        Destination.to_node(b.node_id),
        b"order",
        kind=Kind.TEXT,
        priority=Priority.FLASH,
        lifetime=600,
        now=T0,
    )
    forged = [
        bid.key() + bytes(4) + b"\x01" + bytes(8),  # a path longer than its hop count
        bid.key() + bytes(4) + b"\x03" + bytes(5),  # not a whole number of short ids
        bid.key() + bytes(4) + b"\x10" + bytes(4 * 16 + 4),  # over the size limit
        b"\xff" * 200,
    ]
    for plaintext in forged:
        await c.send(
            Destination.to_node(a.node_id),
            plaintext,
            kind=Kind.RECEIPT,
            priority=Priority.FLASH,
            lifetime=600,
            now=T0,
        )
    pump = EnginePump()
    await pump.connect(IP, a, c, T0)
    await pump.run(T0, 20, dt=0.5)
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == len(forged) and all(" receipt " in m for m in refused), refused
    assert await a.store.get(bid) is not None, "the bundle a forged receipt named is still held"
    assert a.core.holds(bid) and a.status(bid).state in (State.QUEUED, State.FORWARDED)
    assert await a.store.pending_deliveries() == [], "refused receipts leave nothing in the inbox"
    for engine in (a, b, c):
        await engine.close()


async def test_a_stored_bundle_without_a_trail_loads_and_counts_its_hops_as_unrecorded(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "old.sqlite")
    old = Bundle(bytes(16), Destination.everyone(), 1000, 1, 600, Priority.ROUTINE, 1, b"x", 2)
    await store.put(old, now=T0)
    await store.close()
    store = await Store.open(tmp_path / "old.sqlite")
    loaded = await store.get(old.id)
    assert loaded == old and loaded.trail == () and loaded.trail_gap == 2
    await store.close()
