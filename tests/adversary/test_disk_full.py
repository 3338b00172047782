"""A full disk under a node (a real tmpfs, filled to the last byte): sends are refused with a specific
error (the API's 507), ``/healthz`` says degraded and why, FLASH still goes into the reserve, nothing
floods the log, and once space is freed the node takes everything again."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import auth
from disk import fill, tmpfs
from engine_net import Deployment

from field.deployment import create_demo_deployment
from field.harness import free_port_base
from field.processes import operator_token, start_node, stop_all, wait_healthy, write_field
from relay.bundle import Destination, Kind, Priority, to_epoch
from relay.engine import StorageFullError


async def test_engine_on_a_full_disk_refuses_specifically_and_keeps_flash(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "3m") as disk:
        net = Deployment()
        net.enrol("post")
        _, field = net.enrol("field")
        now = to_epoch(time.time())
        engine = await net.open("post", disk, now)
        filler = disk / "filler"
        to_field = Destination.to_node(field.node_id)
        try:
            fill(filler)
            sent = 0
            with pytest.raises(StorageFullError, match="disk full") as refused:
                for _ in range(10_000):  # SQLite may still have free pages: use them up
                    await engine.send(
                        to_field,
                        b"x" * 2000,
                        kind=Kind.TEXT,
                        priority=Priority.PRIORITY,
                        lifetime=3600,
                        now=now,
                    )
                    sent += 1
            assert "database or disk is full" in str(refused.value) and sent < 10_000
            assert engine.store.disk_full is not None
            flash = await engine.send(
                to_field, b"SOS", kind=Kind.SOS, priority=Priority.FLASH, lifetime=3600, now=now
            )
            assert await engine.store.get(flash) is not None  # taken into the reserve
            with pytest.raises(StorageFullError, match="disk full"):
                await engine.send(
                    to_field, b"later", kind=Kind.TEXT, priority=Priority.ROUTINE, lifetime=3600, now=now
                )
            filler.unlink()
            back = await engine.send(
                to_field, b"room again", kind=Kind.TEXT, priority=Priority.PRIORITY, lifetime=3600, now=now
            )
            assert await engine.store.get(back) is not None and engine.store.disk_full is None
        finally:
            await engine.close()


def test_api_answers_507_and_healthz_says_degraded_on_a_full_disk(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    with tmpfs(tmp_path / "disk", "32m") as root:
        deployment = create_demo_deployment(root)
        ports = {"api_port": free_port_base(4), "ip_port": free_port_base(4)}
        post = write_field(deployment, **ports, api_rate=1000)[0]
        process = start_node(post, logs)  # alone: what it sends is held in its store
        filler = root / "filler"
        try:
            wait_healthy([post])
            headers = auth(operator_token(deployment, frozenset({"dispatcher"}), "dispatcher op"))
            relay_id = deployment.node("Field Relay 1").node_id.hex()

            def send(priority: str, text: str = "x" * 4000) -> httpx.Response:
                body = {"to": f"node:{relay_id}", "text": text, "priority": priority}
                return httpx.post(f"{post.api}/api/v1/messages", json=body, headers=headers, timeout=10)

            assert send("PRIORITY").status_code == 202
            fill(filler)
            refusals = []
            for _ in range(2000):  # SQLite may still have free pages: use them up
                response = send("PRIORITY")
                if response.status_code != 202:
                    refusals.append(response)
                    break
            assert refusals and refusals[0].status_code == 507, refusals[:1] and refusals[0].text
            assert "insufficient storage" in refusals[0].json()["detail"]
            assert "disk full" in refusals[0].json()["detail"]
            health = httpx.get(f"{post.api}/healthz", timeout=5)
            assert health.status_code == 503 and health.json()["status"] == "degraded"
            assert "disk full" in health.json()["problems"][0]
            flash = send("FLASH", "SOS: trapped on floor 3")
            assert flash.status_code == 202, flash.text  # taken into the reserve
            assert send("ROUTINE", "later").status_code == 507
            for _ in range(200):  # a client hammering a full node: refused, and the log stays quiet
                assert send("PRIORITY", "again").status_code == 507
            filler.unlink()
            assert send("PRIORITY", "room again").status_code == 202
            assert httpx.get(f"{post.api}/healthz", timeout=5).status_code == 200
        finally:
            stop_all([process])
    log = (logs / f"{post.slug}.log").read_text()
    sys.stderr.write(log[-3000:])
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert "Traceback" not in log
    assert sum(1 for line in lines if "disk full" in line.get("message", "")) <= 10
