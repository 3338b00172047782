"""kill -9 a real process using the store at random points, restart it, and check the invariants.

The child (``store_crash_worker.py``) only reports a call after it returned; see its docstring for the
exactly-once boundary between the store's inbox and the application.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from store_crash_worker import held_here, make_bundle, recorded_deliveries, wants_delivery

from relay.bundle import BundleId
from relay.store import Store

WORKER = Path(__file__).with_name("store_crash_worker.py")


@dataclass
class Claims:
    """What the children said was durable, across every run."""

    put: dict[str, bool] = field(default_factory=dict)  # id -> queued for the app
    next_ids: list[str] = field(default_factory=list)
    delete_requested: set[str] = field(default_factory=set)
    delivery_acked: set[str] = field(default_factory=set)
    killed: int = 0
    finished: int = 0

    def read(self, output: str) -> None:
        complete = output[: output.rfind("\n") + 1]  # a line cut by the kill is no claim
        for line in complete.splitlines():
            word, _, rest = line.partition(" ")
            if word == "FAIL":
                pytest.fail(f"worker invariant broken: {rest}")
            elif word == "PUT":
                key, deliver = rest.split()
                assert key not in self.put, f"{key} accepted twice"
                self.put[key] = deliver == "1"
            elif word == "NEXTID":
                self.next_ids.append(rest)
            elif word == "DELREQ":
                self.delete_requested.add(rest)
            elif word == "DACK":
                self.delivery_acked.add(rest)


def run_and_kill(tmp_path: Path, iterations: int, seed: int) -> Claims:
    rng = random.Random(seed)
    db, deliveries = tmp_path / "crash.db", tmp_path / "deliveries.log"
    claims = Claims()
    for run in range(1, iterations + 1):
        out_path = tmp_path / f"out{run}.txt"
        with out_path.open("wb") as out:
            child = subprocess.Popen(
                [sys.executable, str(WORKER), str(db), str(deliveries), str(run), str(seed)],
                stdout=out,
                stderr=subprocess.PIPE,
            )
            try:
                time.sleep(rng.uniform(0.15, 1.2))  # from mid-import to deep in the write load
                child.kill()  # SIGKILL to this PID
                _, stderr = child.communicate(timeout=30)
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait(timeout=10)
        if child.returncode == -9:
            claims.killed += 1
        elif child.returncode == 0:
            claims.finished += 1
        else:
            pytest.fail(f"worker run {run} exited {child.returncode}: {stderr.decode()[-2000:]}")
        claims.read(out_path.read_text())
    return claims


async def check_invariants(tmp_path: Path, claims: Claims) -> None:
    delivered = (tmp_path / "deliveries.log").read_text().split("\n")[:-1]
    duplicates = [key for key, count in Counter(delivered).items() if count > 1]
    assert not duplicates, f"delivered to the app more than once: {duplicates[:5]}"
    assert set(delivered) == recorded_deliveries(tmp_path / "deliveries.log")
    assert len(claims.next_ids) == len(set(claims.next_ids)), "a local bundle id was issued twice"

    store = await Store.open(tmp_path / "crash.db")
    try:
        pending = {bundle.id.key().hex() for bundle in await store.pending_deliveries()}
        assert not pending & claims.delivery_acked, "an acknowledged delivery came back"
        for key in pending | set(delivered):
            assert wants_delivery(BundleId.from_key(bytes.fromhex(key))), f"{key} was never meant for the app"
        for key, for_app in claims.put.items():
            bundle = make_bundle(BundleId.from_key(bytes.fromhex(key)))
            if key not in claims.delete_requested and held_here(bundle.id):
                assert await store.get(bundle.id) == bundle, f"acknowledged bundle {key} lost"
            if for_app:
                assert key in pending or key in delivered, f"bundle {key} for the app lost"
            assert await store.put(bundle, now=1000.0) is False, f"{key} accepted again after restart"
            again = await store.put_each([(bundle, True, False)], now=1000.0)  # looked up as not held
            assert again == [False], f"{key} accepted again after restart, not to be held"
    finally:
        await store.close()


def crash_test(tmp_path: Path, iterations: int, seed: int) -> None:
    claims = run_and_kill(tmp_path, iterations, seed)
    assert claims.killed >= iterations // 2, "the kills did not land while the worker ran"
    assert len(claims.put) > 100 and claims.delivery_acked and claims.next_ids
    asyncio.run(check_invariants(tmp_path, claims))


def test_store_survives_kill_9(tmp_path: Path) -> None:
    crash_test(tmp_path, iterations=15, seed=112)


@pytest.mark.long
@pytest.mark.timeout(1800)
def test_store_survives_kill_9_soak(tmp_path: Path) -> None:
    crash_test(tmp_path, iterations=200, seed=2024)
