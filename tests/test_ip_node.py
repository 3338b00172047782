"""Two real Nodes (SQLite stores, crypto, relay core) talking over real IpLinks through the impair proxy."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from engine_net import ip_field
from impair_proxy import ImpairProxy

import relay.core.held as held_module
from relay.api.metrics import NodeCollector
from relay.bundle import BundleId, Destination, Kind, Priority, to_epoch
from relay.core.receipts import State
from relay.links.ip import IpLink
from relay.node import Node


@pytest.fixture
async def field(tmp_path: Path) -> AsyncIterator[tuple[Node, Node, ImpairProxy]]:
    proxy = ImpairProxy(0)
    await proxy.start()
    ip = ip_field(proxy.via)
    nodes = []
    for name in ("post", "field"):
        engine = await ip.net.open(name, tmp_path, to_epoch(time.time()))
        nodes.append(Node(engine, [ip.link(name)]))
    for node in nodes:
        await node.start()
    yield nodes[0], nodes[1], proxy
    for node in nodes:
        await node.stop()
    await proxy.stop()


async def collect(node: Node, count: int, timeout: float) -> list[bytes]:
    payloads: list[bytes] = []

    async def drain() -> None:
        async for delivery in node.inbox():
            payloads.append(delivery.payload)
            await node.ack(delivery.bundle_id)
            if len(payloads) >= count:
                return

    await asyncio.wait_for(drain(), timeout)
    return payloads


async def wait_delivered(node: Node, ids: list[BundleId], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not all(node.status(i).state is State.DELIVERED for i in ids):
            await asyncio.sleep(0.05)


async def test_bundles_cross_the_ip_link_both_ways(field: tuple[Node, Node, ImpairProxy]) -> None:
    post, field_node, _ = field
    order = await post.send(Destination.to_node(field_node.node_id), b"evacuate block C", kind=Kind.TEXT)
    sos = await field_node.send(
        Destination.to_node(post.node_id), b"SOS", kind=Kind.SOS, priority=Priority.FLASH
    )
    assert await collect(field_node, 1, 10) == [b"evacuate block C"]
    assert await collect(post, 1, 10) == [b"SOS"]
    await wait_delivered(post, [order], 10)
    await wait_delivered(field_node, [sos], 10)


async def test_a_reset_mid_stream_loses_nothing_and_duplicates_nothing(
    field: tuple[Node, Node, ImpairProxy],
) -> None:
    post, field_node, proxy = field
    first = await field_node.send(Destination.to_node(post.node_id), b"report 0", kind=Kind.TEXT)
    assert await collect(post, 1, 10) == [b"report 0"]
    proxy.blackhole = True  # frames and custody acks now vanish on the path
    sent = [first] + [
        await field_node.send(Destination.to_node(post.node_id), b"report %d" % i, kind=Kind.TEXT)
        for i in range(1, 40)
    ]
    await asyncio.sleep(0.3)
    proxy.blackhole = False
    proxy.reset_all()
    payloads = [b"report 0"] + await collect(post, 39, 30)
    assert sorted(payloads) == sorted(b"report %d" % i for i in range(40))
    link = field_node.links["ip0"]
    assert isinstance(link, IpLink) and link.metrics().handshakes_completed >= 2  # it reconnected
    assert sorted(payloads) == sorted(b"report %d" % i for i in range(40))
    await wait_delivered(field_node, sent, 30)
    await asyncio.sleep(0.5)
    leftovers: list[bytes] = []
    with pytest.raises(TimeoutError):
        leftovers = await collect(post, 1, 0.5)
    assert leftovers == []


async def test_a_damaged_row_in_the_store_does_not_end_the_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One held bundle's row overwritten in the store's file, as a disk error or bit rot would: the
    node's link keeps sending the others to the neighbour over loopback IP, the damaged one reads
    as dropped, with why, and the metric counts it. Before, its decode error ended the link's loop
    and nothing more went out on it."""
    monkeypatch.setattr(held_module, "RESIDENT_BYTES", 0)  # BULK is read back from the store's bytes
    ip = ip_field()
    engines = {name: await ip.net.open(name, tmp_path, to_epoch(time.time())) for name in ip.configs}
    to_field = Destination.to_node(engines["field"].node_id)
    ids = [
        await engines["post"].send(
            to_field,
            b"bulk %d" % i,
            kind=Kind.TEXT,
            priority=Priority.BULK,
            lifetime=3600,
            now=to_epoch(time.time()),
        )
        for i in range(6)
    ]
    damaged = ids[2]
    with sqlite3.connect(engines["post"].store.path) as db:
        db.execute("UPDATE seen SET data = ? WHERE id = ?", (b"\xc1" * 64, damaged.key()))
    post, field_node = (Node(engines[name], [ip.link(name)]) for name in ip.configs)
    for node in (post, field_node):
        await node.start()
    try:
        got = await collect(field_node, 5, 10)
        assert sorted(got) == [b"bulk %d" % i for i in range(6) if i != 2]
        await wait_delivered(post, [i for i in ids if i != damaged], 10)
        async with asyncio.timeout(5):  # the timers drop it once the link found it damaged
            while post.status(damaged).state is not State.EVICTED:
                await asyncio.sleep(0.05)
        assert (post.status(damaged).reason or "").startswith("damaged in the store")
        collector = NodeCollector(post)
        await collector.refresh()
        counted = [m for m in collector.collect() if m.name == "mesh112_store_damaged"]
        assert [s.value for s in counted[0].samples] == [1.0]
    finally:
        for node in (post, field_node):
            await node.stop()
