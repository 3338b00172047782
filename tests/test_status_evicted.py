"""A bundle evicted for higher-priority traffic reads "evicted" with the reason, through the relay API
over real HTTP and through ``mesh112 status`` (a real CLI process), on a real store at a tiny quota."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import httpx
import uvicorn
from engine_net import Deployment

from crypto.identity import Identity
from field.harness import free_port
from relay.api.app import ApiContext, create_app
from relay.api.tokens import issue_token
from relay.bundle import BundleId, to_epoch
from relay.engine import NodeEngine
from relay.journal import Journal
from relay.node import Node

TEXT = "x" * 900  # sealed and stored, a little over 1 kB per bundle
QUOTA = 3400  # three such BULK bundles fit, a fourth bundle does not
REASON = "storage full: evicted for higher-priority traffic (a FLASH bundle)"


async def test_an_evicted_bundle_reads_evicted_with_the_reason(tmp_path: Path) -> None:
    net = Deployment()
    identity, cert = net.enrol("post", frozenset({"dispatcher"}))
    _, unit = net.enrol("unit")  # enrolled, never connected: everything sent to it stays queued
    engine = await NodeEngine.open(
        identity, cert, net.trust(), tmp_path / "store.sqlite3", quota_bytes=QUOTA, now=to_epoch(time.time())
    )
    node = Node(engine, [])
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    now = int(time.time())
    operator = net.authority.issue(Identity.generate().public, frozenset({"dispatcher"}), "op", now + 3600)
    token = issue_token(net.authority.identity, operator, now + 3600)
    ctx = ApiContext(node, journal, net.authority.public, lambda: None)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    base = f"http://127.0.0.1:{port}"
    try:
        while not server.started:
            assert not serving.done(), "the API server did not start"
            await asyncio.sleep(0.02)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as client:
            bulk = []
            for _ in range(3):
                body = {"to": f"node:{unit.node_id.hex()}", "text": TEXT, "priority": "BULK"}
                response = await client.post("/api/v1/messages", json=body)
                assert response.status_code == 202, response.text
                bulk.append(response.json()["bundle_id"])
            stats = await engine.store.stats()
            assert stats.bytes_used + stats.bytes_used // 3 > QUOTA, "the quota leaves room for a fourth"
            body = {"to": f"node:{unit.node_id.hex()}", "text": TEXT, "priority": "FLASH"}
            flash = await client.post("/api/v1/messages", json=body)
            assert flash.status_code == 202, flash.text
            assert flash.json()["state"] == "queued"

            evicted = (await client.get(f"/api/v1/bundles/{bulk[0]}")).json()
            assert evicted["state"] == "evicted" and evicted["reason"] == REASON
            assert evicted["summary"] == f"evicted: {REASON}"
            for kept in bulk[1:]:  # the oldest of the lowest class went first, and only it
                answer = (await client.get(f"/api/v1/bundles/{kept}")).json()
                assert answer["state"] == "queued" and answer["reason"] is None
        assert not engine.core.holds(bytes_id(bulk[0]))

        cli = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "relay",
            "status",
            bulk[0],
            "--api",
            base,
            env={**os.environ, "MESH112_TOKEN": token},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(cli.communicate(), 60)
        finally:
            if cli.returncode is None:
                cli.kill()  # this PID only
                await cli.wait()
        assert cli.returncode == 0, err.decode()
        assert "evicted" in out.decode() and REASON in out.decode()
    finally:
        server.should_exit = True
        await serving
        await journal.close()
        await node.stop()


def bytes_id(hex_id: str) -> BundleId:
    return BundleId.from_key(bytes.fromhex(hex_id))
