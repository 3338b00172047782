"""One busy post served by two relay processes on one PostgreSQL journal; one is killed; the console
on the other misses nothing.

Two ``mesh112 relay run`` processes (two enrolled identities of one post, each with its own store and
IP link) keep their journal in one PostgreSQL server the test starts. A responder's node sends SOSes
to both; a console follows the live stream (``/api/v1/stream?after=0``) of the second process only.
The first process is killed with SIGKILL in the middle of the load, then started again, and what it
had not taken yet arrives. The console saw every SOS either process wrote, though it never talked to
the first: writes reach the other process's live stream through NOTIFY.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncpg
import websockets

from crypto.keystore import load_certificate
from field.deployment import create_demo_deployment
from field.harness import free_port_base, stopped_node_engine
from field.processes import FieldNode, node_config, operator_token, start_node, stop_all, wait_healthy
from mobile.kinds import SOS, register_kinds
from mobile.sos import SosRecord, encode_sos
from relay.bundle import Destination, Priority, to_epoch
from relay.daemon import ROSTER_DIR
from tests.pg_server import postgres

LOAD = 300  # SOSes, half to each process
SERVERS = {"a1": "command-post", "a2": "relay-1"}


async def pg_record_ids(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return {row[0] for row in await conn.fetch("SELECT record_id FROM records")}
    finally:
        await conn.close()


async def test_two_processes_one_journal_one_killed_console_misses_nothing(tmp_path: Path) -> None:
    deployment = create_demo_deployment(tmp_path / "field")
    by_slug = {node.directory.name: node for node in deployment.nodes}
    api, ip = free_port_base(3), free_port_base(3)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    (tmp_path / "logs").mkdir()
    with postgres() as dsn:
        nodes: dict[str, FieldNode] = {}
        for index, name in enumerate([*SERVERS, "responder"]):
            demo = by_slug[SERVERS.get(name, "responder-1")]
            dial = [ip, ip + 1] if name == "responder" else []
            text = node_config(demo.name, demo.roles, api + index, ip + index, dial, api_rate=100_000.0)
            if name in SERVERS:
                text += f'\n[command_post]\ndatabase = "{dsn}"\n'
            demo.config.write_text(text)
            (demo.directory / ROSTER_DIR).mkdir(exist_ok=True)
            for other in deployment.nodes:
                cert = demo.directory / ROSTER_DIR / f"{other.node_id.hex()}.cert"
                cert.write_bytes(other.certificate.encode())
            nodes[name] = FieldNode(demo.directory.name, demo.directory, api + index, ip + index)
        servers = {name: by_slug[slug].node_id for name, slug in SERVERS.items()}
        now = int(time.time())
        async with stopped_node_engine(nodes["responder"]) as engine:
            register_kinds(engine.kinds)
            await asyncio.gather(
                *(
                    engine.send(
                        Destination.to_node(servers["a1" if number % 2 else "a2"]),
                        encode_sos(SosRecord(number, now, text="trapped")),
                        kind=SOS,
                        priority=Priority.PRIORITY,
                        lifetime=3600,
                        now=to_epoch(time.time()),
                    )
                    for number in range(1, LOAD + 1)
                )
            )
        certificate = load_certificate(nodes["responder"].directory)
        assert certificate is not None
        expected = {f"sos-{certificate.node_id.hex()}-{n}" for n in range(1, LOAD + 1)}
        token = operator_token(deployment, frozenset({"dispatcher"}), "console")
        seen: dict[str, int] = {}
        try:
            for name in SERVERS:
                processes[name] = start_node(nodes[name], tmp_path / "logs")
            wait_healthy([nodes[name] for name in SERVERS], timeout=60)
            url = f"ws://127.0.0.1:{nodes['a2'].api_port}/api/v1/stream?token={token}&after=0"

            async def console() -> None:
                async with websockets.connect(url) as stream:
                    async for raw in stream:
                        event: dict[str, Any] = json.loads(raw)
                        if event.get("type") == "record":
                            seen[event["record_id"]] = seen.get(event["record_id"], 0) + 1

            watching = asyncio.create_task(console())
            processes["responder"] = start_node(nodes["responder"], tmp_path / "logs")
            deadline = time.monotonic() + 120
            while len(await pg_record_ids(dsn)) < LOAD // 4:
                assert time.monotonic() < deadline, "the load did not start"
                await asyncio.sleep(0.1)
            processes["a1"].send_signal(signal.SIGKILL)  # one of the two processes dies mid-load
            processes["a1"].wait(10)
            killed_at = len(await pg_record_ids(dsn))
            await asyncio.sleep(3)
            processes["a1"] = start_node(nodes["a1"], tmp_path / "logs")  # and comes back
            while await pg_record_ids(dsn) != expected or set(seen) != expected:
                assert time.monotonic() < deadline, (
                    f"journal {len(await pg_record_ids(dsn))}, console {len(seen)} of {LOAD}"
                )
                await asyncio.sleep(0.2)
            print(
                f"\nkilled with {killed_at} of {LOAD} in the journal; the console on the other saw all {LOAD}"
            )
            assert not watching.done()  # the console's stream stayed open throughout
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        except BaseException:
            for log in sorted((tmp_path / "logs").iterdir()):
                print(f"--- {log.name}\n{log.read_text()[-3000:]}")
            raise
        finally:
            stop_all(list(processes.values()))
