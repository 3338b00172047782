"""NG112 across command posts, real processes: a dispatcher at post B acknowledges an alarm raised
at a building that reports to post A, and the building receives the acknowledgement.

Three posts and the centre as ``mesh112 relay run`` processes beside their nats-servers (the region
of ``tests/test_regional.py``); the building's gateway node (``mesh112 ng112 gateway --config``) is on
the mesh with post A only, over IP. SIPp is the building: it sends the brewery's ammonia alarm (CAP +
PIDF-LO) to the gateway, then takes the acknowledgements as a SIP UAS on the same port. Post A's
alarm app makes the record and sends the automatic receipt; the record crosses the backbone; a
dispatcher acknowledges it through post B's API; B's hook leaves it to A (A raised it), the
acknowledgement crosses to A as an event, and A's alarm app carries it over A's mesh to the gateway,
which sends it to the building as a CAP Ack. SIPp must take exactly the receipt and B's
acknowledgement.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
from ng112_samples import (
    BREWERY_PIDF,
    BREWERY_SENDER,
    SIPP_ACK_SCENARIO,
    brewery_cap,
    multipart_body,
    sipp_alarm_scenario,
)
from system_tools import require_tool
from test_ng112_field import _free_sip_port, _run, _trace_notes, _wait_for

from field.deployment import create_demo_deployment
from field.processes import start_node, stop_all, wait_healthy
from field.radio import buildings_toml, start_gateway
from relay.daemon import ROSTER_DIR
from tests.backbone_servers import free_port
from tests.impair_proxy import ImpairProxy
from tests.test_regional import POSTS, region_field

RECEIVED_CS = "Operační středisko přijalo váš poplach."


def gateway_toml(name: str, ip_port: int, post_ip_port: int) -> str:
    """The building gateway's node: no API, one IP link to post A."""
    return f"""[node]
name = "{name}"
roles = ["building"]

[[links]]
type = "ip"
name = "ip0"
listen = "tcp://127.0.0.1:{ip_port}"
peers = ["tcp://127.0.0.1:{post_ip_port}"]
"""


async def test_dispatcher_at_post_b_acknowledges_an_alarm_raised_at_post_a(tmp_path: Path) -> None:
    sipp = require_tool("sipp", "sip-tester")
    leaf_port = free_port()
    proxy = ImpairProxy(leaf_port)
    await proxy.start()
    processes: dict[str, subprocess.Popen[bytes]] = {}
    acks: asyncio.Task[tuple[int, str]] | None = None
    try:
        with region_field(tmp_path, proxy, leaf_port) as (nodes, token, _):
            deployment = create_demo_deployment(tmp_path / "field")
            gateway = deployment.node("Building Gateway")
            post_a = next(d for d in deployment.nodes if d.directory.name == POSTS["a"])
            gateway.config.write_text(gateway_toml(gateway.name, free_port(), nodes["a"].ip_port))
            (gateway.directory / ROSTER_DIR).mkdir(exist_ok=True)
            for other in deployment.nodes:
                (gateway.directory / ROSTER_DIR / f"{other.node_id.hex()}.cert").write_bytes(
                    other.certificate.encode()
                )
            buildings = buildings_toml(free_port(), digest_secret=None)
            for directory in (gateway.directory, *(nodes[name].directory for name in POSTS)):
                (directory / "buildings.toml").write_text(buildings)
            logs = tmp_path / "logs"
            for name in POSTS:
                processes[name] = start_node(nodes[name], logs)
            wait_healthy([nodes[name] for name in POSTS], timeout=60)
            sip_port = _free_sip_port()
            processes["gateway"] = start_gateway(
                gateway.config,
                gateway.directory / "buildings.toml",
                sip_port,
                logs / "gateway.log",
                post_a.node_id,
            )

            async def gateway_listening() -> bool:
                assert processes["gateway"].poll() is None, (logs / "gateway.log").read_text()[-3000:]
                return "ng112 gateway listening" in (logs / "gateway.log").read_text()

            await _wait_for("the gateway's SIP UAS", gateway_listening, 30)

            # the building: SIPp sends its alarm from building_port, then takes the acks there
            building = tmp_path / "building"
            building.mkdir()
            sent = datetime.now(UTC).replace(microsecond=0).astimezone(timezone(timedelta(hours=1)))
            alarm = sipp_alarm_scenario(BREWERY_SENDER, multipart_body(brewery_cap(sent), BREWERY_PIDF))
            (building / "alarm.xml").write_text(alarm, "utf-8")
            (building / "acks.xml").write_text(SIPP_ACK_SCENARIO, "utf-8")
            building_port = free_port(socket.SOCK_DGRAM)
            common = ["-i", "127.0.0.1", "-nostdin", "-t", "u1", "-p", str(building_port)]
            once = ["-timeout", "20s", "-timeout_error", "-m", "1"]
            code, out = await _run(
                [sipp, "-sf", "alarm.xml", *common, *once, f"127.0.0.1:{sip_port}"], building, 40
            )
            assert code == 0, out[-2000:]
            uas = [
                sipp,
                "-sf",
                "acks.xml",
                *common,
                "-m",
                "2",
                "-timeout",
                "150s",
                "-timeout_error",
                "-trace_msg",
            ]
            acks = asyncio.create_task(_run(uas, building, 160))

            headers = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(base_url=nodes["b"].api, headers=headers, timeout=10) as api:
                records: list[dict[str, Any]] = []

                async def alarm_at_post_b() -> bool:
                    nonlocal records
                    records = (await api.get("/api/v1/records", params={"type": "alarm"})).json()
                    return bool(records) and records[0]["body"].get("followup") == "complete"

                await _wait_for("the building's alarm at post B, whole", alarm_at_post_b, 90)
                (record,) = records
                assert record["body"]["cap"]["identifier"] == "PHD-NH3-2026-0042"
                reply = await api.post(
                    f"/api/v1/records/{record['record_id']}/ack", json={"action": "dispatched"}
                )
                assert reply.status_code == 200, reply.text
            code, out = await asyncio.wait_for(acks, 160)
            assert code == 0, out[-2000:]
            receipt, dispatched = _trace_notes(building)
            assert receipt == RECEIVED_CS
            assert re.fullmatch(
                r"K vaší budově byly vyslány záchranné jednotky\. Operátor: dispatcher B.*\.", dispatched
            ), dispatched

            async with httpx.AsyncClient(base_url=nodes["a"].api, headers=headers, timeout=10) as api:

                async def carried_back_once() -> bool:
                    found = (await api.get(f"/api/v1/records/{record['record_id']}")).json()
                    carried = [a for a in found["acks"] if a.get("post") == "b" and a.get("bundle_id")]
                    return len(carried) == 1

                await _wait_for("post A's record of carrying B's acknowledgement back", carried_back_once, 30)
            await asyncio.sleep(3)  # nothing more may come: SIPp took exactly two messages
            assert len(_trace_notes(building)) == 2
    finally:
        if acks is not None and not acks.done():
            acks.cancel()
        stop_all(list(processes.values()))
        await proxy.stop()
