"""A full disk under a node (a real tmpfs, filled to the last byte): sends are refused with a specific
error (the API's 507), ``/healthz`` says degraded and why, FLASH still goes into the reserve, nothing
floods the log, and once space is freed the node takes everything again."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import auth
from disk import fill, tmpfs
from engine_net import IP, Deployment, EnginePump

from field.deployment import create_demo_deployment
from field.harness import free_port_base
from field.processes import operator_token, start_node, stop_all, wait_healthy, write_field
from relay.bundle import BundleId, Destination, Kind, Priority, to_epoch
from relay.core.receipts import State
from relay.engine import NodeEngine, StorageFullError
from relay.store import Store


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


async def test_ids_prepared_on_a_full_disk_are_refused_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Opening an engine commits a window of ids (``Store.prepare_ids``); on a full disk with no
    reserve left that commit is refused, and the node must start all the same: logged, not raised."""
    with tmpfs(tmp_path / "disk", "3m") as disk:
        store = await Store.open(disk / "store.sqlite3", reserve_bytes=0)
        filler = disk / "filler"
        try:
            fill(filler)
            await store.prepare_ids(b"\x01" * 16, 1000)
            assert "no window of ids committed at start" in caplog.text
            assert store.disk_full is not None
        finally:
            await store.close()
            filler.unlink()


async def _delivered(post: NodeEngine, pump: EnginePump, now: float, seconds: int) -> list[BundleId]:
    """Run the pair for ``seconds``; the ids the post's application was handed meanwhile."""
    ids: list[BundleId] = []
    for second in range(0, seconds, 5):
        await pump.run(now + second, 5, dt=0.5)
        with contextlib.suppress(TimeoutError):
            ids += [delivery.bundle_id for delivery in await asyncio.wait_for(post.receive(), 0.05)]
    return ids


async def test_an_early_delivery_the_full_disk_refuses_stays_with_its_sender_until_space_is_back(
    tmp_path: Path,
) -> None:
    """The post's application (idempotent: it gets bundles before the store's commit) has the
    bundle and acks it, but the store refused its id for want of disk: no custody ACK goes, so
    the sender keeps it and sends it again; once space is freed the resend is taken, handed over
    again (the application keeps it once per id) and acknowledged."""
    with tmpfs(tmp_path / "disk", "3m") as disk:
        net = Deployment()
        net.enrol("post")
        net.enrol("field")
        now = to_epoch(time.time())
        post = await net.open("post", disk, now)
        field = await net.open("field", tmp_path, now)
        post.deliver_before_commit = True
        pump = EnginePump()
        await pump.connect(IP, field, post, now)
        filler = disk / "filler"
        try:
            fill(filler)
            with pytest.raises(StorageFullError, match="disk full"):
                for _ in range(10_000):  # SQLite may still have free pages: use them up
                    await post.send(
                        Destination.to_node(field.node_id),
                        b"x" * 2000,
                        kind=Kind.TEXT,
                        priority=Priority.ROUTINE,
                        lifetime=3600,
                        now=now,
                    )
            assert post.store.disk_full is not None and post.refused_bundles == 0
            report = await field.send(
                Destination.to_node(post.node_id),
                b"smoke on floor 3",
                kind=Kind.TEXT,
                priority=Priority.PRIORITY,
                lifetime=3600,
                now=now,
            )
            first = await _delivered(post, pump, now, 20)
            assert report in first, "the application gets it before the refused commit"
            await post.ack_many(first, now + 20)
            await pump.run(now + 20, 5, dt=0.5)
            assert field.status(report).state is State.QUEUED, "custody taken for a bundle the store refused"
            assert post.refused_bundles >= 1, "the store refused the bundle's id"
            filler.unlink()
            again = await _delivered(post, pump, now + 25, 60)
            assert again.count(report) == 1, "the resend is taken once space is back"
            await post.ack_many(again, now + 85)
            await pump.run(now + 85, 5, dt=0.5)
            assert field.status(report).state in (State.FORWARDED, State.DELIVERED)
            assert post.store.disk_full is None
        finally:
            await post.close()
            await field.close()


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
