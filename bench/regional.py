"""The backbone between command posts (docs/regional.md): throughput and convergence after a cut.

Real nats-server processes on loopback (a hub and a leaf node per post, :mod:`tests.backbone_servers`):

* ``backbone_events_per_s``: events (one per bundle or record) published at post A with
  ``Nats-Msg-Id`` until post B's copy of the region holds them all: JetStream alone (A's stream,
  the centre's sourcing, B's copy);
* ``journal_to_journal_records_per_s``: records already in post A's SQLite journal, from starting
  the bridges until post B's journal holds them all (A's bridge reads, folds and publishes them; the
  centre sources them; B's bridge folds them and commits them to its journal);
* ``partition``: post B's leaf cut off from the hub for 60 s (the impairment proxy) while post A
  raises records; seconds from healing until both tables have the same content hash.

* ``simulator``: the deterministic simulator's regional scenario, every node a real engine with its
  real store: 1,000 nodes (10 command posts joined through a centre over an intermittent backbone
  link, 5 relays per post on cellular to their post and a LoRa ring, 939 responders on LoRa to their
  relay), post 3's sector cut off from the backbone for 60 s; delivery ratio and latency per class
  against the oracle (the best possible delivery on the same contacts). The backbone link stands
  for the JetStream leaf connections; the sim routes bundles across it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.sim import class_figures
from relay.backbone.bridge import PostBridge
from relay.backbone.fold import EventKind, RecordEvent
from relay.backbone.nats_link import REGION_STREAM, NatsBackbone
from relay.journal import Journal, RecordEntry
from relay.sim.scenario import parse_scenario
from relay.sim.world import simulate
from tests.backbone_servers import Region, free_port, start_region
from tests.impair_proxy import ImpairProxy

EVENTS = 50_000
RECORDS = 10_000
PARTITION_S = 60.0
PARTITION_RECORDS = 5_000
ORIGIN = "ab" * 16


@contextlib.asynccontextmanager
async def bridges(region: Region, root: Path) -> AsyncIterator[dict[str, PostBridge]]:
    running: dict[str, tuple[PostBridge, asyncio.Task[None]]] = {}
    try:
        for name in [*region.posts, "centre"]:
            config = region.centre_config() if name == "centre" else region.post_config(name)
            backbone = NatsBackbone(config)
            await backbone.connect()
            bridge = PostBridge(backbone, await Journal.open(root / f"{name}.sqlite3"))
            running[name] = (bridge, asyncio.create_task(bridge.run()))
            await asyncio.wait_for(bridge.caught_up.wait(), 30)
        yield {name: bridge for name, (bridge, _) in running.items()}
    finally:
        for bridge, task in running.values():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await bridge.backbone.close()
            await bridge.journal.close()


async def raise_records(journal: Journal, prefix: str, count: int) -> None:
    now = time.time()
    for n in range(count):
        entry = RecordEntry(f"{prefix}-{n}", "alarm", ORIGIN, "FLASH", now, now, {"summary": f"alarm {n}"})
        await journal.put_record(entry)


async def wait_until(check: Any, timeout_s: float) -> float:
    start = time.perf_counter()
    while not await check():
        if time.perf_counter() - start > timeout_s:
            raise TimeoutError(f"not within {timeout_s} s")
        await asyncio.sleep(0.05)
    return time.perf_counter() - start


async def throughput(root: Path) -> dict[str, Any]:
    region = start_region(root / "nats", {"a": None, "b": None})
    try:
        a, b = NatsBackbone(region.post_config("a")), NatsBackbone(region.post_config("b"))
        centre = NatsBackbone(region.centre_config())
        for backbone in (a, b, centre):
            await backbone.connect()
        events = [
            RecordEvent(f"a:r{n}:raised", f"r{n}", EventKind.RAISED, 1.0, "a", type="alarm", body={"n": n})
            for n in range(EVENTS)
        ]
        start = time.perf_counter()
        await a.publish(events)
        published = time.perf_counter() - start

        async def arrived() -> bool:
            return await b.stream_messages(REGION_STREAM) >= EVENTS

        await wait_until(arrived, 120)
        total = time.perf_counter() - start
        await a.publish(events[:1000])  # republished: JetStream drops them by Nats-Msg-Id
        await asyncio.sleep(1)
        duplicates = await b.stream_messages(REGION_STREAM) - EVENTS
        for backbone in (a, b, centre):
            await backbone.close()
    finally:
        region.stop()
    journal = await Journal.open(root / "a.sqlite3")  # A's journal holds them before its bridge starts
    await raise_records(journal, "a", RECORDS)
    await journal.close()
    region = start_region(root / "nats2", {"a": None, "b": None})
    try:
        start = time.perf_counter()
        async with bridges(region, root) as posts:

            async def journaled() -> bool:
                return len(await posts["b"].journal.records(limit=RECORDS + 1)) >= RECORDS

            await wait_until(journaled, 300)
            journal_total = time.perf_counter() - start
    finally:
        region.stop()
    return {
        "events": EVENTS,
        "publish_acked_s": round(published, 2),
        "backbone_events_per_s": round(EVENTS / total),
        "republished_1000_duplicates_stored": duplicates,
        "records": RECORDS,
        "journal_to_journal_records_per_s": round(RECORDS / journal_total),
    }


async def partition(root: Path) -> dict[str, Any]:
    leaf_port = free_port()
    proxy = ImpairProxy(leaf_port)
    await proxy.start()
    region = start_region(root / "nats3", {"a": None, "b": proxy.port}, leaf_port=leaf_port)
    try:
        async with bridges(region, root / "p") as posts:
            proxy.blackhole = True
            proxy.reset_all()
            cut = time.perf_counter()
            await raise_records(posts["a"].journal, "a", PARTITION_RECORDS)
            await raise_records(posts["b"].journal, "b", 100)  # B keeps working alone
            await asyncio.sleep(max(0.0, PARTITION_S - (time.perf_counter() - cut)))
            proxy.blackhole = False
            proxy.reset_all()

            async def agreed() -> bool:
                await asyncio.sleep(0.2)  # hashing every table is work the bridges share the loop with
                if any(len(bridge.table.states) != PARTITION_RECORDS + 100 for bridge in posts.values()):
                    return False
                return len({bridge.table.content_hash() for bridge in posts.values()}) == 1

            converged = await wait_until(agreed, 300)
            revived = {name: bridge.stats.revived for name, bridge in posts.items()}
    finally:
        region.stop()
        await proxy.stop()
    return {
        "cut_s": PARTITION_S,
        "records_during_cut": {"a": PARTITION_RECORDS, "b": 100},
        "converged_after_healing_s": round(converged, 1),
        "sources_restarted": revived,
    }


POSTS, RELAYS_PER_POST, SIM_MINUTES = 10, 5, 10.0


def regional_scenario() -> dict[str, Any]:
    """1,000 nodes and 10 command posts, as :func:`relay.sim.scenario.parse_scenario` takes it."""
    responders = 1000 - 1 - POSTS - POSTS * RELAYS_PER_POST
    posts = [f"cp{p}" for p in range(1, POSTS + 1)]
    relays = {post: [f"r{p}x{i}" for i in range(1, RELAYS_PER_POST + 1)] for p, post in enumerate(posts, 1)}
    sector: dict[str, list[str]] = {post: [] for post in posts}
    for n in range(1, responders + 1):
        sector[posts[n % POSTS]].append(f"resp{n}")
    lora: list[list[str]] = []
    for post in posts:
        ring = relays[post]
        lora += [[ring[i], ring[(i + 1) % len(ring)]] for i in range(len(ring))]
        lora += [[ring[i % len(ring)], name] for i, name in enumerate(sector[post])]
    nodes: list[dict[str, Any]] = [{"name": "centre", "role": "command_post"}]
    nodes += [{"name": post, "role": "command_post"} for post in posts]
    nodes += [{"name": r, "role": "relay"} for post in posts for r in relays[post]]
    nodes += [{"name": n, "role": "responder"} for post in posts for n in sector[post]]
    traffic: list[dict[str, Any]] = []
    for post in posts:
        traffic.append(
            {
                "src": sector[post],
                "dst": post,
                "priority": "FLASH",
                "size": 60,
                "lifetime_s": 3600,
                "rate_per_min": 0.02,
            }
        )
    everyone = [n for post in posts for n in sector[post]]
    traffic.append(  # messages to another post's command post: across the backbone
        {
            "src": everyone,
            "dst": posts,
            "priority": "PRIORITY",
            "size": 80,
            "lifetime_s": 3600,
            "rate_per_min": 0.01,
        }
    )
    return {
        "name": "regional-1000-10-posts",
        "seed": 1,
        "duration_s": SIM_MINUTES * 60.0,
        "drain_s": 120.0,
        "node": nodes,
        "link": [
            {
                "name": "backbone",
                "kind": "ip",
                "bitrate": 1_000_000.0,
                "mtu": 1200,
                "latency_s": 0.05,
                "pairs": [["centre", post] for post in posts],
            },
            {
                "name": "cell",
                "kind": "ip",
                "bitrate": 50000.0,
                "mtu": 1200,
                "latency_s": 0.08,
                "schedule": {"type": "random", "up_fraction": 0.5, "mean_cycle_s": 900.0},
                "pairs": [[post, r] for post in posts for r in relays[post]],
            },
            {
                "name": "lora",
                "kind": "lora",
                "preset": "LONG_FAST",
                "duty_cycle": 0.1,
                "loss": 0.1,
                "pairs": lora,
            },
        ],
        "partition": [{"side": ["cp3", *relays["cp3"], *sector["cp3"]], "start_s": 120.0, "end_s": 180.0}],
        "traffic": traffic,
    }


def simulator() -> dict[str, Any]:
    scenario = parse_scenario(regional_scenario())
    started = time.perf_counter()
    report = simulate(scenario)
    wall = time.perf_counter() - started
    return {
        "scenario": report.scenario,
        "nodes": report.nodes,
        "command_posts": POSTS,
        "simulated_s": report.simulated_s,
        "wall_s": round(wall, 1),
        "classes": class_figures(report),
        "duplicates": report.duplicates,
    }


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mesh112-regional-") as directory:
        root = Path(directory)
        (root / "p").mkdir()
        return {
            "setup": "nats-server 2.15.1 hub + a leaf per post on 127.0.0.1; SQLite journals; one machine",
            "load_average_at_start": os.getloadavg()[0],  # the machine is shared: other work slows this
            "throughput_two_posts": asyncio.run(throughput(root)),
            "partition": asyncio.run(partition(root)),
            "simulator": simulator(),
        }
