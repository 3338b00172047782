"""Drive a field of real ``mesh112 relay run`` processes from outside, for tests and benchmarks.

The processes are the demo field's (same configs, rosters and tokens); this adds what a harness needs
on top: free ports, a backlog originated straight into a stopped node's store, a fast concurrent
sender through the relay API, and reading a node's journal (the command post application's durable,
idempotent record of deliveries) straight from its SQLite file.
"""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from crypto.keystore import load_node_keys
from field.deployment import DemoDeployment, create_demo_deployment
from field.processes import FieldNode, operator_token, start_node, stop_all, wait_healthy, write_field
from relay.bundle import BundleId, Destination, Kind, Priority, to_epoch
from relay.daemon import JOURNAL_FILE, ROSTER_DIR, STORE_FILE, load_roster
from relay.engine import NodeEngine
from relay.trust import TrustStore

BULK_RATE = 100_000.0  # API requests per second per operator: the tests inject thousands of bundles


_HANDED_OUT: set[int] = set()  # ports this process already gave out: a second call never repeats them


def _below_ephemeral() -> range:
    """Ports under the kernel's ephemeral range. A port probed free there stays free until a node
    binds it: one from the ephemeral range could meanwhile become the local port of any outgoing
    connection (the other test worker's clients and diallers), and the node then failed to start
    with "Address in use" (seen once in a full run)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    return range(10_000, low)


_PORTS = _below_ephemeral()
_CHOOSE = random.SystemRandom()  # not the tests' seeded random: two workers must not draw alike


def _bindable(port: int, kind: socket.SocketKind) -> bool:
    try:
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port free now for ``kind`` on 127.0.0.1, never one this process handed out before."""
    return free_port_base(1, kind)


def free_port_base(count: int, kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port such that ``count`` consecutive ports are free now (below the ephemeral range) and
    none was handed out before by this process."""
    for _ in range(200):
        base = _CHOOSE.randrange(_PORTS.start, _PORTS.stop - count)
        ports = range(base, base + count)
        if _HANDED_OUT.intersection(ports) or not all(_bindable(port, kind) for port in ports):
            continue
        _HANDED_OUT.update(ports)
        return base
    raise RuntimeError("no free port range on 127.0.0.1 below the ephemeral ports")


@dataclass
class RunningField:
    """Nodes of a chain, their processes (by slug), an operator token and the node ids."""

    root: Path
    deployment: DemoDeployment
    nodes: list[FieldNode]
    token: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def node(self, slug: str) -> FieldNode:
        return next(node for node in self.nodes if node.slug == slug)

    def node_id(self, slug: str) -> str:
        return next(n.node_id.hex() for n in self.deployment.nodes if n.directory.name == slug)

    def start(self, slug: str) -> None:
        self.processes[slug] = start_node(self.node(slug), self.root / "logs")

    def start_healthy(self, slug: str) -> None:
        self.start(slug)
        wait_healthy([self.node(slug)])

    def stop(self, slug: str) -> None:
        """SIGTERM, as an operator stops a node: it shuts down cleanly."""
        stop_all([self.processes.pop(slug)])

    def kill(self, slug: str) -> None:
        """SIGKILL: no shutdown code runs, the store is left as the crash left it."""
        process = self.processes.pop(slug)
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def logs(self) -> str:
        return "".join(
            f"--- {p.name}\n{p.read_text()[-3000:]}\n" for p in sorted((self.root / "logs").iterdir())
        )


@contextmanager
def running_field(
    root: Path, chain: Sequence[str], started: Sequence[str] | None = None, ip_bitrate: float | None = None
) -> Iterator[RunningField]:
    """Write ``chain`` (demo slugs, each dialling the one before; ``ip_bitrate``: what their IP links
    pace to, default the link's), start ``started`` (default: all), yield, then stop every process
    still running by PID."""
    deployment = create_demo_deployment(root)
    nodes = write_field(
        deployment,
        api_port=free_port_base(len(chain)),
        ip_port=free_port_base(len(chain)),
        chain=chain,
        api_rate=BULK_RATE,
        ip_bitrate=ip_bitrate,
    )
    (root / "logs").mkdir(exist_ok=True)
    token = operator_token(deployment, frozenset({"dispatcher", "responder"}), "test operator")
    running = RunningField(root, deployment, nodes, token)
    try:
        for slug in chain if started is None else started:
            running.start(slug)
        wait_healthy([running.node(slug) for slug in running.processes])
        yield running
    except BaseException:
        sys.stderr.write(running.logs())
        raise
    finally:
        stop_all(list(running.processes.values()))


async def send_many(
    node: FieldNode,
    token: str,
    to: str,
    texts: Sequence[str],
    priority: str = "PRIORITY",
    concurrency: int = 32,
) -> list[str]:
    """POST every text through ``node``'s API (``concurrency`` at a time); the bundle ids, in order.

    A request the node did not answer (it is being killed) is an error: the tests only kill nodes
    they do not send through.
    """
    ids: list[str] = [""] * len(texts)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(texts)):
        queue.put_nowait(index)
    limits = httpx.Limits(max_connections=concurrency)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=node.api, headers=headers, limits=limits, timeout=30.0) as client:

        async def worker() -> None:
            while not queue.empty():
                index = queue.get_nowait()
                body = {"to": to, "text": texts[index], "priority": priority}
                response = await client.post("/api/v1/messages", json=body)
                response.raise_for_status()
                ids[index] = response.json()["bundle_id"]

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ids


def journal_messages(node: FieldNode) -> list[tuple[str, str, str, float]]:
    """(bundle id, priority, text, received) of every message in the node's journal, oldest first.

    Read-only, so it works while the node runs (WAL) and after it stopped.
    """
    path = node.directory / JOURNAL_FILE
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute(
            "SELECT bundle_id, priority, text, received FROM messages ORDER BY rowid"
        ).fetchall()
    except sqlite3.OperationalError:  # the node has not created its tables yet
        return []
    finally:
        db.close()
    return [(str(a), str(b), str(c), float(d)) for a, b, c, d in rows]


def journal_count(node: FieldNode) -> int:
    path = node.directory / JOURNAL_FILE
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return int(db.execute("SELECT count(*) FROM messages").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def stored_bundles(node: FieldNode) -> int:
    """Bundles still held in the node's forwarding store (in transit, or kept for custody)."""
    db = sqlite3.connect(f"file:{node.directory / STORE_FILE}?mode=ro", uri=True, timeout=10)
    try:
        return int(db.execute("SELECT count(*) FROM bundles").fetchone()[0])
    finally:
        db.close()


def wait_until(read: Callable[[], int], target: int, timeout: float, what: str) -> None:
    """Poll ``read()`` until it reaches ``target``, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = read()
    while last < target and time.monotonic() < deadline:
        time.sleep(0.1)
        last = read()
    assert last >= target, f"{what}: {last} of {target} after {timeout:.0f} s"


@asynccontextmanager
async def stopped_node_engine(node: FieldNode) -> AsyncIterator[NodeEngine]:
    """The engine of a *stopped* node, opened on its own keys, roster and store, as the daemon would.

    Bundles it sends are sealed by the node itself and durable on return; the daemon forwards them
    when it starts. Used to put thousands of bundles in flight in a second, or to make an enrolled
    node originate what its API would refuse.
    """
    now = time.time()
    keys = load_node_keys(node.directory, int(now))
    trust = TrustStore(keys.authority, [keys.certificate], keys.revocations)
    for certificate in load_roster(node.directory / ROSTER_DIR):
        if certificate.node_id != keys.certificate.node_id:
            trust.add(certificate, to_epoch(now))
    engine = await NodeEngine.open(
        keys.identity, keys.certificate, trust, node.directory / STORE_FILE, now=to_epoch(now)
    )
    try:
        yield engine
    finally:
        await engine.close()


async def preload(
    node: FieldNode, to: bytes, texts: Sequence[str], priority: Priority = Priority.PRIORITY
) -> list[BundleId]:
    """Originate one text bundle per text in a *stopped* node's store, exactly as
    ``POST /api/v1/messages`` would inside the daemon, without the HTTP round trip per bundle."""
    async with stopped_node_engine(node) as engine:
        sends = [
            engine.send(
                Destination.to_node(to),
                text.encode(),
                kind=Kind.TEXT,
                priority=priority,
                lifetime=3600,
                now=to_epoch(time.time()),
            )
            for text in texts
        ]
        return list(await asyncio.gather(*sends))


def inbox_pending(node: FieldNode) -> int:
    """Deliveries in the node's store that its application has not acknowledged yet."""
    db = sqlite3.connect(f"file:{node.directory / STORE_FILE}?mode=ro", uri=True, timeout=10)
    try:
        return int(db.execute("SELECT count(*) FROM inbox").fetchone()[0])
    finally:
        db.close()
