"""Three command posts and the regional centre as real processes on loopback.

Four ``mesh112 relay run`` processes with ``[backbone]`` (posts A, B, C and the centre), each beside
its own nats-server (leaf nodes with their own JetStream domains; the centre's is the hub); post C's
leaf dials the hub through the impairment proxy. A responder's node, on the mesh with post A only,
holds a load of SOS bundles (the responder app's alarm, kind 48) that it forwards when it starts;
post A turns each into an ``sos`` record, and the backbone spreads it. Post C is cut off from the
backbone during the load; after healing, every post's journal hashes the same, with every SOS once.
A dispatcher at post B then acknowledges an SOS raised at post A; post A's application carries the
acknowledgement back over the mesh and the responder's node receives it.

``make test`` runs a short load (1,000 bundles, a 10 s cut); ``make soak`` the full one (10,000
bundles, a 60 s cut).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from field.deployment import create_demo_deployment
from field.harness import free_port_base, stopped_node_engine
from field.processes import FieldNode, node_config, operator_token, start_node, stop_all, wait_healthy
from mobile.kinds import SOS, register_kinds
from mobile.sos import SosRecord, encode_sos
from relay.backbone.bridge import entry_content
from relay.backbone.fold import table_hash
from relay.bundle import Destination, Priority, to_epoch
from relay.daemon import JOURNAL_FILE, ROSTER_DIR, STORE_FILE
from relay.journal import RecordEntry
from tests.backbone_servers import Region, free_port, start_region
from tests.impair_proxy import ImpairProxy

POSTS = {"a": "command-post", "b": "relay-1", "c": "relay-2", "centre": "camera-1"}  # demo identities
RESPONDER = "responder-1"
CONVERGE_S = 30.0  # the goal: every table the same within this long after healing (and the load)
LOAD_S = 600.0  # the mesh's bound for bringing the whole load to post A


def journal_records(node: FieldNode) -> list[RecordEntry]:
    """Every record in a node's journal, read-only straight from its SQLite file (WAL: while it runs)."""
    db = sqlite3.connect(f"file:{node.directory / JOURNAL_FILE}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute(
            "SELECT record_id, type, origin, priority, created, received, body, acks, seq, closed"
            " FROM records"
        ).fetchall()
    except sqlite3.OperationalError:
        return []  # no journal yet
    finally:
        db.close()
    return [
        RecordEntry(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), json.loads(r[7]), r[8], r[9])
        for r in rows
    ]


def journal_hash(records: list[RecordEntry]) -> str:
    return table_hash(entry_content(r) for r in records)


def delivered(node: FieldNode, bundle_id: str) -> bool:
    db = sqlite3.connect(f"file:{node.directory / STORE_FILE}?mode=ro", uri=True, timeout=10)
    try:
        row = db.execute("SELECT delivered FROM seen WHERE id = ?", (bytes.fromhex(bundle_id),)).fetchone()
    finally:
        db.close()
    return bool(row and row[0])


@contextmanager
def region_field(
    root: Path, proxy: ImpairProxy, leaf_port: int, responder_post: str = "a"
) -> Iterator[tuple[dict[str, FieldNode], str, Region]]:
    """The region's nodes (the posts, the centre and the responder, on the mesh with
    ``responder_post`` only), an operator token for a dispatcher, and the nats-servers."""
    deployment = create_demo_deployment(root / "field")
    by_slug = {node.directory.name: node for node in deployment.nodes}
    region = start_region(root / "nats", {"a": None, "b": None, "c": proxy.port}, leaf_port=leaf_port)
    try:
        api, ip = free_port_base(5), free_port_base(5)
        nodes: dict[str, FieldNode] = {}
        for index, name in enumerate([*POSTS, "responder"]):
            slug = POSTS.get(name, RESPONDER)
            demo = by_slug[slug]
            dial = [ip + list(POSTS).index(responder_post)] if name == "responder" else []
            text = node_config(demo.name, demo.roles, api + index, ip + index, dial, api_rate=100_000.0)
            if name in POSTS:
                config = region.centre_config() if name == "centre" else region.post_config(name)
                posts = f"posts = {json.dumps(list(config.posts))}\n" if config.posts else ""
                text += (
                    f'\n[backbone]\nrole = "{config.role}"\nname = "{config.name}"\nurl = "{config.url}"\n'
                    f'domain = "{config.domain}"\nhub_domain = "{config.hub_domain}"\n{posts}'
                )
            demo.config.write_text(text)
            (demo.directory / ROSTER_DIR).mkdir(exist_ok=True)
            for other in deployment.nodes:
                (demo.directory / ROSTER_DIR / f"{other.node_id.hex()}.cert").write_bytes(
                    other.certificate.encode()
                )
            nodes[name] = FieldNode(slug, demo.directory, api + index, ip + index)
        (root / "logs").mkdir(exist_ok=True)
        token = operator_token(deployment, frozenset({"dispatcher"}), "dispatcher B")
        yield nodes, token, region
    finally:
        region.stop()


async def run_region(tmp_path: Path, load: int, cut_s: float) -> None:
    leaf_port = free_port()
    proxy = ImpairProxy(leaf_port)
    await proxy.start()
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        with region_field(tmp_path, proxy, leaf_port) as (nodes, token, _):
            post_a_id = next(
                d.node_id
                for d in create_demo_deployment(tmp_path / "field").nodes
                if d.directory.name == POSTS["a"]
            )
            responder = nodes["responder"]
            now = int(time.time())
            async with stopped_node_engine(responder) as engine:
                register_kinds(engine.kinds)  # as the responder app does on its node
                for start in range(1, load + 1, 1000):
                    await asyncio.gather(
                        *(
                            engine.send(
                                Destination.to_node(post_a_id),
                                encode_sos(SosRecord(number, now, text=f"trapped, gate {number % 40}")),
                                kind=SOS,
                                priority=Priority.PRIORITY,
                                lifetime=3600,
                                now=to_epoch(time.time()),
                            )
                            for number in range(start, min(load + 1, start + 1000))
                        )
                    )
            for name in POSTS:
                processes[name] = start_node(nodes[name], tmp_path / "logs")
            wait_healthy([nodes[name] for name in POSTS], timeout=60)
            proxy.blackhole = True  # post C is cut off from the backbone ...
            proxy.reset_all()
            cut_at = time.monotonic()
            processes["responder"] = start_node(responder, tmp_path / "logs")  # ... as the load arrives
            while time.monotonic() - cut_at < cut_s:
                await asyncio.sleep(1)
                assert processes["c"].poll() is None
            during = len(journal_records(nodes["c"]))
            proxy.blackhole = False
            proxy.reset_all()
            healed = time.monotonic()
            loaded = {f"sos-{responder_id(nodes)}-{n}" for n in range(1, load + 1)}
            arrived: float | None = None  # when post A held the whole load (the mesh's pace)
            while True:
                tables = {name: journal_records(nodes[name]) for name in POSTS}
                ids = {name: {r.record_id for r in records} for name, records in tables.items()}
                if arrived is None and ids["a"] == loaded:
                    arrived = time.monotonic()
                hashes = {journal_hash(records) for records in tables.values()}
                if all(found == loaded for found in ids.values()) and len(hashes) == 1:
                    break
                counts = {name: len(found) for name, found in ids.items()}
                assert time.monotonic() - healed < LOAD_S, f"the load did not reach post A: {counts}"
                if time.monotonic() - max(healed, arrived or LOAD_S + healed) > CONVERGE_S:
                    raise AssertionError(
                        f"not converged {CONVERGE_S} s after healing and the load: {counts}, "
                        f"{len(hashes)} hashes"
                    )
                await asyncio.sleep(0.5)
            assert arrived is not None
            converged = time.monotonic() - max(healed, arrived)
            print(
                f"\n{load} SOS records on 3 posts and the centre; C held {during} during the "
                f"{cut_s:.0f} s cut; the load was at post A {arrived - healed:+.1f} s from healing; "
                f"same content hash {converged:.1f} s after healing and the load"
            )
            assert all(len(records) == load for records in tables.values())  # nothing duplicated

            # A dispatcher at post B acknowledges an SOS raised at post A (from A's responder).
            record_id = f"sos-{responder_id(nodes)}-7"
            async with httpx.AsyncClient(
                base_url=nodes["b"].api, headers={"Authorization": f"Bearer {token}"}, timeout=30
            ) as client:
                response = await client.post(
                    f"/api/v1/records/{record_id}/ack", json={"action": "team on its way"}
                )
                assert response.status_code == 200, response.text
            deadline = time.monotonic() + 30
            while True:
                acks = next(r for r in journal_records(nodes["a"]) if r.record_id == record_id).acks
                sent = [ack for ack in acks if ack.get("bundle_id")]
                if sent and delivered(responder, sent[0]["bundle_id"]):
                    break
                assert time.monotonic() < deadline, (
                    f"the responder did not receive B's acknowledgement: {acks}"
                )
                await asyncio.sleep(0.5)
            assert sent[0]["operator"].startswith("dispatcher B") and sent[0]["post"] == "b"
            deadline = time.monotonic() + 30
            while len({journal_hash(journal_records(nodes[name])) for name in POSTS}) != 1:
                assert time.monotonic() < deadline, "posts disagree after the acknowledgement"
                await asyncio.sleep(0.5)
    finally:
        stop_all(list(processes.values()))
        await proxy.stop()


def responder_id(nodes: dict[str, FieldNode]) -> str:
    from crypto.keystore import load_certificate

    certificate = load_certificate(nodes["responder"].directory)
    assert certificate is not None
    return certificate.node_id.hex()


async def test_three_posts_and_a_centre_converge_after_a_cut(tmp_path: Path) -> None:
    await run_region(tmp_path, load=1000, cut_s=10)


@pytest.mark.long
async def test_soak_three_posts_10000_bundles_60_s_cut(tmp_path: Path) -> None:
    await run_region(tmp_path, load=10_000, cut_s=60)
