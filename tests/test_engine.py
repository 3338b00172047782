"""NodeEngine on real SQLite stores and real crypto, wired by an in-test pump."""

from __future__ import annotations

import asyncio
from pathlib import Path

from engine_net import IP, LORA, Deployment, EnginePump

from relay.bundle import Destination, Kind, Priority
from relay.core.receipts import State
from relay.engine import NodeEngine

T0 = 1000.0


async def _collect(engine: NodeEngine, timeout: float = 1.0) -> list:
    try:
        return await asyncio.wait_for(engine.receive(), timeout)
    except TimeoutError:
        return []


async def test_two_hops_delivery_receipt_and_status(tmp_path: Path) -> None:
    net = Deployment()
    for name in ("a", "relay", "b"):
        net.enrol(name)
    a, relay, b = [await net.open(n, tmp_path, T0) for n in ("a", "relay", "b")]
    statuses = []
    a.on_status(lambda bid, st: statuses.append(st.state))
    pump = EnginePump()
    await pump.connect(IP, a, relay, T0)
    await pump.connect(LORA, relay, b, T0)
    bid = await a.send(
        Destination.to_node(b.node_id),
        b"SOS at gate 3",
        kind=Kind.SOS,
        priority=Priority.FLASH,
        lifetime=600,
        now=T0,
    )
    assert a.status(bid).state is State.QUEUED
    await pump.run(T0, 120, dt=0.5)
    got = await _collect(b)
    assert [(d.bundle_id, d.payload) for d in got] == [(bid, b"SOS at gate 3")]
    assert a.status(bid).state is State.DELIVERED
    assert State.FORWARDED in statuses and statuses[-1] is State.DELIVERED
    for engine in (a, relay, b):
        await engine.close()
