"""Relay core benchmark: durable bundles/s through one relay, memory high-water, scheduler decisions/s.

Relay throughput: three real ``Node``\\ s in one process (A -> relay -> B) on in-process links,
each with its real SQLite store and real crypto. A sends 1 KiB bundles to B (sends run
concurrently, so the store's group commit works as it would with many applications). The figure
is bundles per second that the relay durably accepted *and* forwarded with custody acknowledged by
B, from A's first send to B's last delivery. Memory high-water is the peak of Python allocations
(tracemalloc) during one more run, so it counts the three nodes together; that run is not timed, as
tracing allocations halves the speed.

Scheduler decisions: ``RelayCore.next_frame`` on a link with 10 000 queued bundles of mixed
classes and origins, frames built and spent but not sent anywhere.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from crypto.certificate import Authority, Certificate
from crypto.identity import Identity
from relay.bundle import Bundle, Destination, Kind, Priority, to_epoch
from relay.core.machine import RelayCore
from relay.engine import NodeEngine
from relay.links.base import LinkProfile
from relay.links.inproc import InprocHub, InprocLink
from relay.node import Node
from relay.trust import TrustStore

BUNDLES = 256
PAYLOAD = 1024
CONCURRENT_SENDS = 64
ROUNDS = 3
IP = LinkProfile("ip0", "ip", mtu=64000, bitrate=1e9)


def _enrol(authority: Authority, name: str) -> tuple[Identity, Certificate]:
    identity = Identity.generate()
    return identity, authority.issue(identity.public, frozenset(), name, int(time.time()) + 86400)


async def _relay_round(directory: Path, trace: bool) -> tuple[float, int]:
    authority = Authority.generate()
    members = {name: _enrol(authority, name) for name in ("a", "relay", "b")}
    certs = [cert for _, cert in members.values()]
    a_hub, b_hub = InprocHub(), InprocHub()
    nodes = {}
    for name, (identity, cert) in members.items():
        trust = TrustStore(authority.public, certs)
        engine = await NodeEngine.open(
            identity, cert, trust, directory / f"{name}.sqlite", now=to_epoch(time.time())
        )
        links = []
        if name in ("a", "relay"):
            links.append(InprocLink(a_hub, identity.node_id, IP))
        if name in ("relay", "b"):
            links.append(
                InprocLink(b_hub, identity.node_id, LinkProfile("ip1", "ip", mtu=64000, bitrate=1e9))
            )
        nodes[name] = Node(engine, links)
    if trace:
        tracemalloc.start()
    for node in nodes.values():
        await node.start()
    a, b = nodes["a"], nodes["b"]
    payload = bytes(PAYLOAD)
    started = time.perf_counter()

    async def sender(count: int) -> None:
        for _ in range(count):
            await a.send(Destination.to_node(b.node_id), payload, kind=Kind.TEXT, priority=Priority.ROUTINE)

    senders = [asyncio.create_task(sender(BUNDLES // CONCURRENT_SENDS)) for _ in range(CONCURRENT_SENDS)]
    expected = (BUNDLES // CONCURRENT_SENDS) * CONCURRENT_SENDS
    received, acks = 0, []
    async with asyncio.timeout(300):
        async for delivery in b.inbox():
            acks.append(asyncio.create_task(b.ack(delivery.bundle_id)))  # the app acks as it records
            received += 1
            if received == expected:
                break
    elapsed = time.perf_counter() - started
    await asyncio.gather(*senders, *acks)
    peak = 0
    if trace:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    for node in nodes.values():
        await node.stop()
    return expected / elapsed, peak


def _scheduler_decisions() -> float:
    origins = [bytes([n]) * 16 for n in range(1, 9)]
    core = RelayCore(b"\xee" * 16)
    core.link_up(IP, b"\xdd" * 16, 0.0)
    for seq in range(10_000):
        origin = origins[seq % len(origins)]
        priority = Priority(seq % 5)
        core.originate(
            Bundle(origin, Destination.to_node(b"\xdd" * 16), 0, seq, 3600, priority, 1, b"x" * 64), 0.0
        )
    started, count = time.perf_counter(), 0
    while core.next_frame("ip0", 0.0) is not None:
        count += 1
    return count / (time.perf_counter() - started)


def run() -> dict[str, Any]:
    rates = []
    for _ in range(ROUNDS):
        with tempfile.TemporaryDirectory() as directory:
            rates.append(asyncio.run(_relay_round(Path(directory), trace=False))[0])
    with tempfile.TemporaryDirectory() as directory:
        _, peak = asyncio.run(_relay_round(Path(directory), trace=True))
    decisions = [_scheduler_decisions() for _ in range(ROUNDS)]
    return {
        "relay_bundles_per_s_median": round(statistics.median(rates), 1),
        "relay_bundles_per_s_runs": [round(r, 1) for r in rates],
        "bundle_payload_bytes": PAYLOAD,
        "bundles_per_run": (BUNDLES // CONCURRENT_SENDS) * CONCURRENT_SENDS,
        "python_alloc_high_water_mib": round(peak / (1 << 20), 1),
        "scheduler_decisions_per_s_median": round(statistics.median(decisions)),
        "note": (
            "A -> relay -> B on in-process links, real SQLite stores (synchronous=FULL) and real crypto; "
            "the relay also carries the end-to-end receipts back (one per batch of deliveries from an "
            "origin, up to 16 bundles each)"
        ),
    }
