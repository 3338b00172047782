"""Store benchmark: durable put throughput with group commit, load_all at start-up, memory.

Side by side with the obvious baseline: plain sqlite3, same WAL + synchronous=FULL settings, one
transaction per bundle (what a store without group commit pays). Figures are medians of RUNS.
"""

from __future__ import annotations

import asyncio
import resource
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from relay.bundle import Bundle, Destination, Priority, encode_full
from relay.store import Store

RUNS = 3
PAYLOAD = bytes(1024)
PUTS_PER_PRODUCERS = {1: 400, 10: 3000, 100: 10_000}
LOAD_ALL_COUNT = 50_000
NOW = 1000.0


def _bundle(origin: int, created: int, seq: int) -> Bundle:
    return Bundle(
        origin.to_bytes(16, "big"),
        Destination.everyone(),
        created,
        seq,
        86_400,
        Priority(seq % 5),
        40,
        PAYLOAD,
    )


async def _put_throughput(directory: Path, producers: int, total: int) -> float:
    store = await Store.open(directory / f"put-{producers}-{time.monotonic_ns()}.db", quota_bytes=1 << 30)
    per_producer = total // producers

    async def produce(origin: int) -> None:
        for seq in range(per_producer):
            await store.put(_bundle(origin, 1, seq), now=NOW)

    started = time.perf_counter()
    await asyncio.gather(*(produce(origin) for origin in range(producers)))
    elapsed = time.perf_counter() - started
    await store.close()
    return producers * per_producer / elapsed


def _baseline_throughput(directory: Path, total: int) -> float:
    """One sqlite3 transaction per bundle, WAL + synchronous=FULL: the cost group commit avoids."""
    db = sqlite3.connect(directory / f"baseline-{time.monotonic_ns()}.db", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE bundles (id BLOB PRIMARY KEY, data BLOB NOT NULL)")
    started = time.perf_counter()
    for seq in range(total):
        bundle = _bundle(0, 1, seq)
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO bundles VALUES (?, ?)", (bundle.id.key(), encode_full(bundle)))
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return total / elapsed


async def _load_all_seconds(directory: Path) -> tuple[list[float], int]:
    path = directory / "load-all.db"
    store = await Store.open(path, quota_bytes=1 << 30)
    for start in range(0, LOAD_ALL_COUNT, 1000):
        chunk = [_bundle(7, 1 + seq // 65536, seq % 65536) for seq in range(start, start + 1000)]
        await store.put_many(chunk, now=NOW)
    await store.close()
    timings = []
    for _ in range(RUNS):
        store = await Store.open(path, quota_bytes=1 << 30)
        started = time.perf_counter()
        loaded = await store.load_all()
        timings.append(time.perf_counter() - started)
        await store.close()
        assert len(loaded) == LOAD_ALL_COUNT
    return timings, path.stat().st_size


def run() -> dict[str, Any]:
    figures: dict[str, Any] = {
        "payload_bytes": len(PAYLOAD),
        "runs": RUNS,
        "synchronous": "FULL",
        "wal": True,
    }
    with tempfile.TemporaryDirectory(prefix="mesh112-bench-store-") as tmp:
        directory = Path(tmp)
        for producers, total in PUTS_PER_PRODUCERS.items():
            rates = [asyncio.run(_put_throughput(directory, producers, total)) for _ in range(RUNS)]
            figures[f"put_bundles_per_s_{producers}_producers"] = round(statistics.median(rates), 1)
        baseline = [_baseline_throughput(directory, PUTS_PER_PRODUCERS[1]) for _ in range(RUNS)]
        figures["baseline_sqlite3_txn_per_bundle_per_s"] = round(statistics.median(baseline), 1)
        timings, size = asyncio.run(_load_all_seconds(directory))
        figures["load_all_50k_seconds"] = round(statistics.median(timings), 3)
        figures["load_all_50k_db_bytes"] = size
    figures["rss_high_water_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return figures


if __name__ == "__main__":
    print(run())
