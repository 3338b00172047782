"""Child process for the journal crash test: a command post's feed at work until SIGKILL.

Usage: ``python journal_crash_worker.py DIR RUN SEED MESSAGES``. DIR holds ``authority.pub``,
``cp.key`` and ``cp.cert``; the node's ``store.sqlite3`` and ``journal.sqlite3`` are kept there
across runs. The node sends text messages to itself from several producers, so each one enters its
store's inbox and is delivered; the real :class:`relay.command_post.CommandPostFeed` records each
delivery in the journal and then acknowledges it to the store, as the daemon does.

Each ``SENT <id>`` line is printed (and flushed) only after ``send`` returned: the bundle is
durable in the store. ``READY`` comes once the feed runs, ``DONE`` once every delivery is acked
and both files are closed. What the store marks delivered and no longer holds in its inbox is what
the feed acknowledged; the parent checks every such bundle is in the journal.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from pathlib import Path

from crypto.certificate import Certificate
from crypto.identity import Identity, PublicIdentity
from relay.api.app import ApiContext
from relay.bundle import Destination, Kind, Priority, to_epoch
from relay.command_post import CommandPostFeed
from relay.engine import NodeEngine
from relay.journal import Journal
from relay.node import Node
from relay.trust import TrustStore

PRODUCERS = 4


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(directory: Path, run: int, seed: int, messages: int) -> None:
    rng = random.Random(seed * 100_003 + run)
    authority = PublicIdentity.decode((directory / "authority.pub").read_bytes())
    identity = Identity.from_private_bytes((directory / "cp.key").read_bytes())
    certificate = Certificate.decode((directory / "cp.cert").read_bytes())
    engine = await NodeEngine.open(
        identity,
        certificate,
        TrustStore(authority, [certificate]),
        directory / "store.sqlite3",
        now=to_epoch(time.time()),
    )
    node = Node(engine, [])
    journal = await Journal.open(directory / "journal.sqlite3")
    commits = 0  # counted, so the fsync test can ask for one log sync per commit

    def traced(statement: str) -> None:  # on the journal's thread, for each statement it runs
        nonlocal commits
        commits += statement == "COMMIT"

    await journal._call(lambda db: db.set_trace_callback(traced))
    feed = CommandPostFeed(node, journal, ApiContext(node, journal, authority, lambda: None), [])
    feeding = asyncio.create_task(feed.run())
    emit("READY")
    numbers = iter(range(messages))

    async def produce() -> None:
        for number in numbers:
            text = f"run {run} message {number}".encode()
            priority = rng.choice((Priority.FLASH, Priority.PRIORITY, Priority.ROUTINE))
            bundle_id = await node.send(
                Destination.to_node(node.node_id), text, kind=Kind.TEXT, priority=priority
            )
            emit(f"SENT {bundle_id.key().hex()}")

    await asyncio.gather(*(produce() for _ in range(PRODUCERS)))
    while await engine.store.pending_deliveries(limit=1):
        await asyncio.sleep(0.01)
    feeding.cancel()
    await asyncio.gather(feeding, return_exceptions=True)
    await node.stop()
    await journal.close()
    emit(f"COMMITS {commits}")
    emit("DONE")


if __name__ == "__main__":
    where, run_number, seed_number, count = sys.argv[1:5]
    asyncio.run(main(Path(where), int(run_number), int(seed_number), int(count)))
