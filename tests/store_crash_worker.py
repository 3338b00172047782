"""Child process for the store crash test: busy store work until the parent kills it with SIGKILL.

Usage: ``python store_crash_worker.py DB DELIVERIES RUN SEED``. Every line on stdout is printed
(and flushed) only *after* the awaited store call returned, so a line is a claim the parent may check:

- ``PUT <id> <deliver>``  the store accepted the bundle (durable);
- ``NEXTID <id>``         next_bundle_id returned this id (durable, never to be reused);
- ``DELREQ <id>``         printed *before* delete(), so the bundle may be gone;
- ``DACK <id>``           ack_delivery returned: the inbox must never return this id again;
- ``FAIL <why>``          an invariant broke inside the child.

The application here is the DELIVERIES file. Exactly-once boundary: the app appends the bundle id
and fsyncs *before* ack_delivery. A kill between the two leaves the bundle in the inbox, so after a
restart the app sees it again; it then finds the id already recorded and only acks it. The store's
part is that nothing acked comes back and nothing accepted for delivery is lost or queued twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import sys
from pathlib import Path

import relay.store_accept
from relay.bundle import Bundle, BundleId, Destination, Priority
from relay.store import Store

REMOTE = b"\x52" * 16
LOCAL = b"\x4c" * 16
NOW = 1000.0
LOCAL_CLOCK = 5000  # a node without a clock: every local id comes from the persisted counter
PRODUCERS = 8
MAX_OPS_PER_PRODUCER = 400
MAX_SECONDS = 3.0


def make_bundle(bundle_id: BundleId) -> Bundle:
    """The one bundle a given id stands for in this test, so the parent can rebuild it."""
    key = bundle_id.key()
    size = 64 + (bundle_id.seq * 37) % 900
    return Bundle(
        bundle_id.origin,
        Destination.everyone(),
        bundle_id.created,
        bundle_id.seq,
        86_400,
        Priority(bundle_id.seq % 5),
        40,
        hashlib.shake_128(key).digest(size),
    )


def wants_delivery(bundle_id: BundleId) -> bool:
    return bundle_id.origin == REMOTE and bundle_id.seq % 3 == 0


def held_here(bundle_id: BundleId) -> bool:
    """Half the bundles for the app are for this node alone: not held, so written unsettled, outside
    the id index (store schema 4), and settled with others later (relay/store_accept.py)."""
    return not (wants_delivery(bundle_id) and bundle_id.seq % 2)


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def recorded_deliveries(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return {line for line in path.read_text().split("\n") if len(line) == 44}


async def main(db: Path, deliveries: Path, run: int, seed: int) -> int:
    rng = random.Random(seed * 100_003 + run)
    # settles within a run's few hundred puts: each run's ids are of a second of their own (``run``)
    relay.store_accept.SETTLE_ROWS, relay.store_accept.SETTLE_ALL = 16, 256
    store = await Store.open(db)
    recorded = recorded_deliveries(deliveries)
    app_log = os.open(deliveries, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + MAX_SECONDS
    next_seq = iter(range(1 << 16))
    accepted: list[BundleId] = []
    failures: list[str] = []

    def fail(why: str) -> None:
        failures.append(why)
        emit(f"FAIL {why}")

    async def produce() -> None:
        for _ in range(MAX_OPS_PER_PRODUCER):
            if loop.time() > stop_at:
                return
            choice = rng.random()
            if choice < 0.15:
                bundle_id = await store.next_bundle_id(LOCAL, LOCAL_CLOCK)
                emit(f"NEXTID {bundle_id.key().hex()}")
                if not await store.put(make_bundle(bundle_id), now=NOW, local=True):
                    fail(f"fresh local id {bundle_id} refused as duplicate")
                    return
                emit(f"PUT {bundle_id.key().hex()} 0")
                accepted.append(bundle_id)
            elif choice < 0.22 and accepted:
                victim = rng.choice(accepted)
                emit(f"DELREQ {victim.key().hex()}")
                await store.delete(victim, "forwarded")
            else:
                bundle_id = BundleId(REMOTE, run, next(next_seq))
                bundle = make_bundle(bundle_id)
                deliver, hold = wants_delivery(bundle_id), held_here(bundle_id)
                if await store.put(bundle, now=NOW, deliver=deliver, hold=hold):
                    emit(f"PUT {bundle_id.key().hex()} {int(deliver)}")
                    accepted.append(bundle_id)
                if rng.random() < 0.1 and await store.put(bundle, now=NOW, deliver=deliver, hold=hold):
                    fail(f"duplicate {bundle_id} accepted")
                    return

    async def consume(producers: asyncio.Future[list[None]]) -> None:
        while True:
            pending = await store.pending_deliveries(limit=16)
            for bundle in pending:
                key = bundle.id.key().hex()
                if key not in recorded:
                    os.write(app_log, (key + "\n").encode())
                    os.fsync(app_log)
                    recorded.add(key)
                await store.ack_delivery(bundle.id)
                emit(f"DACK {key}")
            if not pending:
                if producers.done():
                    return
                await asyncio.sleep(0.005)

    emit("READY")
    producers = asyncio.gather(*(produce() for _ in range(PRODUCERS)))
    await consume(producers)
    await producers
    await store.close()
    os.close(app_log)
    emit("DONE")
    return 1 if failures else 0


if __name__ == "__main__":
    db_path, deliveries_path, run_number, seed_number = sys.argv[1:5]
    sys.exit(asyncio.run(main(Path(db_path), Path(deliveries_path), int(run_number), int(seed_number))))
