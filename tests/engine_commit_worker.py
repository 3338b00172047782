"""Child process for the kill-between-frame-and-commit test: A's frame leaves, its commit never lands.

Usage: ``python engine_commit_worker.py DIR COUNT``. DIR holds ``authority.pub``, ``a.key``, ``a.cert``
and ``b.cert``. Every frame A hands its IP link to B is printed as ``FRAME <hex>``; ``SENT <id key
hex>`` follows each send that returned (a claim that the bundle is durable). After COUNT sends a
second SQLite connection takes the store's write lock, so the next commit cannot land; one more
bundle (``held``) is sent, and once its DATA frame is out ``HELD`` is printed and the process waits
for the parent's SIGKILL.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

from engine_net import IP

from crypto.certificate import Certificate
from crypto.identity import Identity, PublicIdentity
from relay.bundle import BundleId, Destination, Kind, Priority
from relay.core.frames import DataFrame, decode_frame
from relay.engine import NodeEngine
from relay.trust import TrustStore

NOW = 1000.0


async def main(directory: Path, count: int) -> None:
    authority = PublicIdentity.decode((directory / "authority.pub").read_bytes())
    identity = Identity.from_private_bytes((directory / "a.key").read_bytes())
    certs = [Certificate.decode((directory / f"{n}.cert").read_bytes()) for n in ("a", "b")]
    engine = await NodeEngine.open(
        identity, certs[0], TrustStore(authority, certs), directory / "a.sqlite", now=NOW
    )
    await engine.link_up(IP, certs[1].node_id, NOW)
    held = asyncio.Event()

    async def link() -> None:
        while True:
            out = engine.next_frame(IP.name, NOW)
            if out is None:
                await asyncio.sleep(0.001)
                continue
            print("FRAME", out[1].hex(), flush=True)
            frame = decode_frame(out[1], None)
            if locked and isinstance(frame, DataFrame) and frame.bundle.id not in sent:
                held.set()  # the one bundle sent while the lock is held

    sent: set[BundleId] = set()
    locked = False
    pump = asyncio.create_task(link())
    dest = Destination.to_node(certs[1].node_id)
    for i in range(count):
        bundle_id = await engine.send(
            dest, b"n%d" % i, kind=Kind.TEXT, priority=Priority.PRIORITY, lifetime=3600, now=NOW
        )
        print("SENT", bundle_id.key().hex(), flush=True)
        sent.add(bundle_id)
    lock = sqlite3.connect(engine.store.path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # held until the process dies: no commit lands
    locked = True
    sending = asyncio.create_task(
        engine.send(dest, b"held", kind=Kind.TEXT, priority=Priority.PRIORITY, lifetime=3600, now=NOW)
    )
    await held.wait()
    print("HELD", flush=True)
    await asyncio.sleep(60)
    pump.cancel()
    sending.cancel()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
