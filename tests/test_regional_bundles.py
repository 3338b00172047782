"""A bundle for a node another post's mesh reaches crosses the backbone, as real processes.

Three posts and the centre as ``mesh112 relay run`` processes beside their nats-servers (the region
of ``tests/test_regional.py``); the responder's node is on the mesh with post B only. Its SOS
reaches post B, so B's journal hears the unit and the sighting crosses the backbone. A dispatcher at
post A then sends the responder a message through A's API: A's node holds it (its mesh does not
reach the responder), hands it to post B on the backbone after the hold, and B's node takes custody
and delivers it over B's mesh. The responder's receipt, held at B for A's node, goes back to A the
same way, so A's console reads "delivered". Each handover is stored once.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx

from field.deployment import create_demo_deployment
from field.harness import stopped_node_engine
from field.processes import start_node, stop_all, wait_healthy
from mobile.kinds import SOS, register_kinds
from mobile.sos import SosRecord, encode_sos
from relay.backbone.handover import HOLD_S
from relay.backbone.nats_link import NatsBackbone
from relay.bundle import Destination, Priority, to_epoch
from relay.daemon import JOURNAL_FILE
from tests.backbone_servers import free_port
from tests.impair_proxy import ImpairProxy
from tests.test_regional import POSTS, delivered, region_field, responder_id

CROSS_S = 60.0  # bound for a sighting or a handed-over bundle to cross and be delivered


def heard(directory: Path, node_id: str) -> bool:
    """Whether a post's journal has heard the node (read-only from its SQLite file, WAL)."""
    db = sqlite3.connect(f"file:{directory / JOURNAL_FILE}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("SELECT 1 FROM units WHERE node_id = ?", (node_id,)).fetchone() is not None
    except sqlite3.OperationalError:
        return False  # no journal yet
    finally:
        db.close()


async def test_a_bundle_for_a_node_at_post_b_crosses_from_post_a(tmp_path: Path) -> None:
    leaf_port = free_port()
    proxy = ImpairProxy(leaf_port)
    await proxy.start()
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        with region_field(tmp_path, proxy, leaf_port, responder_post="b") as (nodes, token, region):
            post_b_id = next(
                d.node_id
                for d in create_demo_deployment(tmp_path / "field").nodes
                if d.directory.name == POSTS["b"]
            )
            responder = nodes["responder"]
            unit = responder_id(nodes)
            async with stopped_node_engine(responder) as engine:
                register_kinds(engine.kinds)
                await engine.send(
                    Destination.to_node(post_b_id),
                    encode_sos(SosRecord(1, int(time.time()), text="at gate 9")),
                    kind=SOS,
                    priority=Priority.PRIORITY,
                    lifetime=3600,
                    now=to_epoch(time.time()),
                )
            for name in POSTS:
                processes[name] = start_node(nodes[name], tmp_path / "logs")
            wait_healthy([nodes[name] for name in POSTS], timeout=60)
            processes["responder"] = start_node(responder, tmp_path / "logs")
            deadline = time.monotonic() + CROSS_S
            while not heard(nodes["a"].directory, unit):  # heard at B, the sighting crossed to A
                assert time.monotonic() < deadline, "post A never learned that post B heard the responder"
                await asyncio.sleep(0.5)

            async with httpx.AsyncClient(
                base_url=nodes["a"].api, headers={"Authorization": f"Bearer {token}"}, timeout=30
            ) as client:
                response = await client.post(
                    "/api/v1/messages", json={"to": f"node:{unit}", "text": "go to gate 4, team B waits"}
                )
                assert response.status_code == 202, response.text
                bundle_id = response.json()["bundle_id"]
            sent = time.monotonic()
            while not delivered(responder, bundle_id):
                assert time.monotonic() - sent < HOLD_S + CROSS_S, "the responder never got A's message"
                await asyncio.sleep(0.5)
            took = time.monotonic() - sent
            print(f"\nA's message reached the responder on B's mesh {took:.1f} s after it was sent")
            assert took >= HOLD_S - 1  # A's own mesh had its time first

            async with httpx.AsyncClient(
                base_url=nodes["a"].api, headers={"Authorization": f"Bearer {token}"}, timeout=30
            ) as client:
                while (await client.get(f"/api/v1/bundles/{bundle_id}")).json()["state"] != "delivered":
                    assert time.monotonic() - sent < 2 * HOLD_S + CROSS_S, "the receipt never came back to A"
                    await asyncio.sleep(0.5)
            print(f"A's message read delivered at A {time.monotonic() - sent:.1f} s after it was sent")
            for post in ("a", "b"):  # the message from A, its receipt from B: each handed over once
                backbone = NatsBackbone(region.post_config(post))
                await backbone.connect()
                try:
                    subject = f"region.{post}.bundles"
                    info = await backbone.js.stream_info(f"POST_{post}", subjects_filter=subject)
                finally:
                    await backbone.close()
                assert info.state.subjects == {subject: 1}
    finally:
        stop_all(list(processes.values()))
        await proxy.stop()
