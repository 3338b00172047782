"""Store benchmark: durable put throughput with group commit, load_all at start-up, memory.

Side by side, in the same run: plain sqlite3 with the same WAL + synchronous=FULL settings, one
transaction per bundle (what a store without group commit pays) and 1,000 rows per transaction (the
ceiling: the same encoded bundles under their ids in a two-column table, encoded before the clock
starts, inserted with ``executemany``; and the same rows in one multi-row INSERT per transaction,
which plain sqlite3 commits faster still). Puts are 100-byte bundles. "1 producer" awaits
each put before the next; "1 producer, put_many" hands batches of 1,000 (an engine admitting a
link's frames as a batch, the API's batch door). Memory: the peak RSS of a fresh process whose node
engine opened a store holding ``QUEUED`` bundles (all queued for a neighbour), beside the same
process on an empty store (the interpreter and imports). Figures are medians
of RUNS.
"""

from __future__ import annotations

import asyncio
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from crypto.certificate import Authority
from crypto.identity import Identity
from relay.bundle import Bundle, Destination, Priority, encode_full
from relay.engine import NodeEngine
from relay.links.base import LinkProfile
from relay.store import Store
from relay.store_reader import StoreReader
from relay.trust import TrustStore

RUNS = 3
PAYLOAD = bytes(100)
PUTS_PER_PRODUCERS = {1: 400, 10: 3000, 100: 10_000}
PUT_MANY_TOTAL, PUT_MANY_BATCH = 50_000, 1000
QUEUED = 100_000
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


async def _put_many_throughput(directory: Path) -> float:
    store = await Store.open(directory / f"put-many-{time.monotonic_ns()}.db", quota_bytes=1 << 30)
    batches = [
        [_bundle(3, 1 + seq // 65536, seq % 65536) for seq in range(start, start + PUT_MANY_BATCH)]
        for start in range(0, PUT_MANY_TOTAL, PUT_MANY_BATCH)
    ]
    started = time.perf_counter()
    for batch in batches:
        await store.put_many(batch, now=NOW)
    elapsed = time.perf_counter() - started
    await store.close()
    return PUT_MANY_TOTAL / elapsed


def _ceiling_table(path: Path, origin_seed: int) -> tuple[sqlite3.Connection, list[tuple[bytes, bytes]]]:
    """A plain table in WAL with synchronous=FULL, and the rows to put in it (encoded before any
    clock starts)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE bundles (id BLOB PRIMARY KEY, data BLOB NOT NULL)")
    rows = [
        (bundle.id.key(), encode_full(bundle))
        for bundle in (_bundle(origin_seed, 1 + seq // 65536, seq % 65536) for seq in range(PUT_MANY_TOTAL))
    ]
    return db, rows


def _ceiling_throughput(directory: Path) -> float:
    """Plain sqlite3, WAL + synchronous=FULL, 1,000 rows per transaction: this disk's ceiling."""
    db, rows = _ceiling_table(directory / f"ceiling-{time.monotonic_ns()}.db", 4)
    started = time.perf_counter()
    for start in range(0, len(rows), PUT_MANY_BATCH):
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO bundles VALUES (?, ?)", rows[start : start + PUT_MANY_BATCH])
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return len(rows) / elapsed


def _ceiling_multirow_throughput(directory: Path) -> float:
    """The same ceiling with each transaction's 1,000 rows in one INSERT statement (``VALUES (..),
    (..), ...``) instead of ``executemany``: plain sqlite3 at its fastest on this disk."""
    db, rows = _ceiling_table(directory / f"ceiling-multirow-{time.monotonic_ns()}.db", 5)
    sql = "INSERT INTO bundles VALUES " + ", ".join(["(?, ?)"] * PUT_MANY_BATCH)
    started = time.perf_counter()
    for start in range(0, len(rows), PUT_MANY_BATCH):
        db.execute("BEGIN IMMEDIATE")
        db.execute(sql, [value for row in rows[start : start + PUT_MANY_BATCH] for value in row])
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return len(rows) / elapsed


async def _fill_queued(path: Path) -> None:
    store = await Store.open(path, quota_bytes=1 << 30)
    peer = Destination.to_node(bytes([0xDD]) * 16)
    for start in range(0, QUEUED, PUT_MANY_BATCH):
        chunk = [
            Bundle(
                bytes([9]) * 16, peer, 1 + seq // 65536, seq % 65536, 86_400, Priority.ROUTINE, 40, PAYLOAD
            )
            for seq in range(start, start + PUT_MANY_BATCH)
        ]
        await store.put_many(chunk, now=NOW)
    await store.close()


async def _open_queued(path: Path) -> int:
    """In a fresh process: a node engine opens the store and queues every bundle for its neighbour."""
    authority = Authority.generate()
    identity = Identity.generate()
    cert = authority.issue(identity.public, frozenset(), "bench", int(time.time()) + 86400)
    engine = await NodeEngine.open(
        identity, cert, TrustStore(authority.public, [cert]), path, quota_bytes=1 << 30, now=NOW
    )
    await engine.link_up(LinkProfile("ip0", "ip", mtu=64000, bitrate=1e9), bytes([0xDD]) * 16, NOW)
    queued = engine.core.queued("ip0")
    await engine.close()
    return queued


def _own_peak_rss_kib() -> int:
    """This process's peak RSS since its exec (VmHWM): ``ru_maxrss`` also counts the parent's peak
    from before the exec, so a child of a big bench process reported the parent's figure."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status: this measurement needs Linux")


def _engine_rss_mib(path: Path) -> float:
    """Peak RSS of a fresh process whose engine opened the store at ``path``."""
    child = subprocess.run(
        [sys.executable, "-m", "bench.store", "--open-queued", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(child.stdout.split()[-1])


def _queued_rss_mib(directory: Path) -> tuple[float, float]:
    """(an engine on an empty store: the interpreter and imports; the same with QUEUED queued)."""
    empty = _engine_rss_mib(directory / "empty.db")
    path = directory / "queued.db"
    asyncio.run(_fill_queued(path))
    return empty, _engine_rss_mib(path)


def _read_back_us(path: Path, count: int = 5000) -> float:
    """µs to read one held bundle back from the store (what a frame of a bundle kept only as a
    small record costs on top of building it, relay/core/held.py)."""
    reader = StoreReader(path)
    ids = [stored.bundle.id for _, stored in zip(range(count), reader.held(), strict=False)]
    started = time.perf_counter()
    for bundle_id in ids:
        reader.get_many([bundle_id])
    elapsed = time.perf_counter() - started
    reader.close()
    return elapsed / len(ids) * 1e6


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


def _store_and_ceilings(directory: Path) -> tuple[list[float], list[float], list[float]]:
    """``put_many`` and both ceilings, RUNS times in turn: on a shared machine the load moves between
    runs, and a ratio of medians taken minutes apart measured the load as much as the store."""
    many, ceiling, multirow = [], [], []
    for _ in range(RUNS):
        many.append(asyncio.run(_put_many_throughput(directory)))
        ceiling.append(_ceiling_throughput(directory))
        multirow.append(_ceiling_multirow_throughput(directory))
    return many, ceiling, multirow


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
        many, ceiling, multirow = _store_and_ceilings(directory)
        figures["put_many_bundles_per_s_1_producer"] = round(statistics.median(many), 1)
        figures["ceiling_sqlite3_1000_rows_per_txn_per_s"] = round(statistics.median(ceiling), 1)
        figures["put_many_vs_ceiling"] = round(statistics.median(many) / statistics.median(ceiling), 3)
        figures["ceiling_sqlite3_1000_rows_per_insert_per_s"] = round(statistics.median(multirow), 1)
        figures["put_many_vs_multirow_ceiling"] = round(
            statistics.median(many) / statistics.median(multirow), 3
        )
        baseline = [_baseline_throughput(directory, PUTS_PER_PRODUCERS[1]) for _ in range(RUNS)]
        figures["baseline_sqlite3_txn_per_bundle_per_s"] = round(statistics.median(baseline), 1)
        timings, size = asyncio.run(_load_all_seconds(directory))
        figures["load_all_50k_seconds"] = round(statistics.median(timings), 3)
        figures["load_all_50k_db_bytes"] = size
        empty, queued = _queued_rss_mib(directory)
        figures["rss_mib_node_engine_empty"] = empty
        figures["rss_mib_node_engine_100k_bundles_queued"] = queued
        figures["rss_bytes_per_queued_bundle"] = round((queued - empty) * 2**20 / QUEUED)
        figures["read_back_us_per_bundle"] = round(_read_back_us(directory / "queued.db"), 1)
    figures["rss_high_water_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return figures


if __name__ == "__main__":
    if sys.argv[1:2] == ["--open-queued"]:
        queued = asyncio.run(_open_queued(Path(sys.argv[2])))
        assert queued in (1, QUEUED + 1), f"{queued} items queued for {QUEUED} bundles and a summary"
        print(round(_own_peak_rss_kib() / 1024, 1))
    else:
        print(run())
