"""Child process for the engine crash test: an engine that sends until the parent kills it (SIGKILL).

Usage: ``python engine_crash_worker.py DIR``. DIR holds ``authority.pub``, ``a.key``, ``a.cert`` and
``b.cert``. Each ``SENT <id key hex>`` line is printed (and flushed) only after ``send`` returned,
so it is a claim that the bundle is durable; the parent checks that every claimed bundle is
delivered to B after the restart.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from crypto.certificate import Certificate
from crypto.identity import Identity, PublicIdentity
from relay.bundle import Destination, Kind, Priority
from relay.engine import NodeEngine
from relay.trust import TrustStore

NOW = 1000.0
MAX_BUNDLES = 2000


async def main(directory: Path) -> None:
    authority = PublicIdentity.decode((directory / "authority.pub").read_bytes())
    identity = Identity.from_private_bytes((directory / "a.key").read_bytes())
    certs = [Certificate.decode((directory / f"{n}.cert").read_bytes()) for n in ("a", "b")]
    engine = await NodeEngine.open(
        identity, certs[0], TrustStore(authority, certs), directory / "a.sqlite", now=NOW
    )
    dest = Destination.to_node(certs[1].node_id)
    for i in range(MAX_BUNDLES):
        priority = Priority.FLASH if i % 7 == 0 else Priority.ROUTINE
        bundle_id = await engine.send(
            dest, b"n%d" % i, kind=Kind.TEXT, priority=priority, lifetime=3600, now=NOW
        )
        print("SENT", bundle_id.key().hex(), flush=True)
    print("DONE", flush=True)
    await asyncio.sleep(60)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
