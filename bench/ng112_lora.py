"""Measured SIP-to-command-post latency over the emulated LoRa path (used by ``bench/ng112.py``).

Real processes, as in the demo field: the LoRa emulator in real time (speedup 1, LongFast, EU 868),
a command post (``mesh112 relay run``, API on, no IP neighbour) and the building gateway node
(``mesh112 ng112 gateway --config``, LoRa only), one radio each, 450 m apart. Alarms are sent one at
a time over SIP/UDP. Per alarm: SIP MESSAGE sent -> 200 (durable at the gateway) -> the first frame
at the command post (the alarm record's arrival time, from its API) -> the follow-up there (the
record's last write once its body says ``followup: complete``). Same machine, same clock.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from field.deployment import create_demo_deployment
from field.processes import FieldNode, node_config, operator_token, start_node, stop_all, wait_healthy
from field.radio import (
    Radio,
    buildings_toml,
    emulator_toml,
    gateway_node_toml,
    lora_link_toml,
    start_emulator,
    start_gateway,
)
from relay.daemon import ROSTER_DIR

ALARMS = 5
ALARM_TIMEOUT_S = 120.0


def _port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_field(root: Path, sip_port: int) -> tuple[FieldNode, str, list[subprocess.Popen[bytes]]]:
    deployment = create_demo_deployment(root / "field")
    post, gateway = deployment.node("Command Post"), deployment.node("Building Gateway")
    radio_post = Radio("command-post", 0xA0000001, 0.0, _port())
    radio_gateway = Radio("building-gateway", 0xA0000003, 450.0, _port())
    emulator = root / "lora-emulator.toml"
    emulator.write_text(emulator_toml((radio_post, radio_gateway), speedup=1.0))
    api_port = _port()
    post.config.write_text(
        node_config(post.name, post.roles, api_port, _port(), [])
        + lora_link_toml(radio_post, {radio_gateway.num: gateway.node_id})
    )
    gateway.config.write_text(gateway_node_toml(gateway.name, radio_gateway, {radio_post.num: post.node_id}))
    for node in (post, gateway):
        (node.directory / "buildings.toml").write_text(
            buildings_toml(_port(socket.SOCK_DGRAM), digest_secret=None)
        )
        (node.directory / ROSTER_DIR).mkdir(exist_ok=True)
        for other in deployment.nodes:
            (node.directory / ROSTER_DIR / f"{other.node_id.hex()}.cert").write_bytes(
                other.certificate.encode()
            )
    token = operator_token(deployment, frozenset({"dispatcher"}), "Bench")
    field_post = FieldNode("command-post", post.directory, api_port, 0)
    logs = root / "logs"
    logs.mkdir()
    processes = [start_emulator(emulator, logs / "emulator.log")]
    time.sleep(1.0)
    processes.append(start_node(field_post, logs))
    gateway_log = logs / "gateway.log"
    processes.append(
        start_gateway(
            gateway.config, gateway.directory / "buildings.toml", sip_port, gateway_log, post.node_id
        )
    )
    wait_healthy([field_post], 60.0)
    deadline = time.monotonic() + 60.0
    while "ng112 gateway listening" not in gateway_log.read_text():
        if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
            raise RuntimeError(f"the gateway node did not start: {gateway_log.read_text()[-2000:]}")
        time.sleep(0.2)
    return field_post, token, processes


def measure_lora_latency(variant: Callable[[int], bytes], count: int = ALARMS) -> dict[str, Any]:
    """Median and max seconds, one alarm at a time: SIP sent -> first frame at the command post, and
    SIP 200 -> first frame / -> complete alarm (follow-up merged)."""
    sip_port = _port(socket.SOCK_DGRAM)
    with tempfile.TemporaryDirectory() as tmp:
        post, token, processes = _start_field(Path(tmp), sip_port)
        try:
            timings = asyncio.run(_send(variant, count, sip_port, post.api, token))
        finally:
            stop_all(processes)
    out: dict[str, Any] = {}
    for name in ("sip_to_command_post", "sip_200_to_first_frame", "sip_200_to_complete_alarm"):
        values = [t[name] for t in timings]
        out[f"{name}_lora_median_ms"] = round(statistics.median(values) * 1000, 1)
        out[f"{name}_lora_max_ms"] = round(max(values) * 1000, 1)
    return out | {
        "lora_alarms_measured": count,
        "lora_path": "emulated Meshtastic LongFast EU_868 in real time (speedup 1), one LoRa hop",
    }


class _Panel(asyncio.DatagramProtocol):
    """The panel's socket: notes when the gateway's final response came back."""

    def __init__(self) -> None:
        self.answered: asyncio.Future[float] | None = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data.startswith(b"SIP/2.0 200") and self.answered is not None and not self.answered.done():
            self.answered.set_result(time.time())


async def _send(
    variant: Callable[[int], bytes], count: int, port: int, api: str, token: str
) -> list[dict[str, float]]:
    loop = asyncio.get_running_loop()
    transport, panel = await loop.create_datagram_endpoint(_Panel, remote_addr=("127.0.0.1", port))
    timings = []
    try:
        async with httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {token}"}) as client:
            for n in range(count):
                panel.answered = loop.create_future()
                sent = time.time()
                transport.sendto(variant(10_000 + n))
                answered = await asyncio.wait_for(panel.answered, 10.0)
                deadline = time.monotonic() + ALARM_TIMEOUT_S
                while True:
                    records = (await client.get("/api/v1/records", params={"type": "alarm"})).json()
                    done = [r for r in records if r["body"]["followup"] == "complete"]
                    if len(records) > n and len(done) > n:
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"alarm {n} was not complete at the command post in {ALARM_TIMEOUT_S:.0f} s"
                        )
                    await asyncio.sleep(0.05)
                newest = max(records, key=lambda r: float(r["body"]["received_at"]))
                first = float(newest["body"]["received_at"])
                timings.append(
                    {
                        "sip_to_command_post": first - sent,
                        "sip_200_to_first_frame": first - answered,
                        "sip_200_to_complete_alarm": float(newest["received"]) - answered,
                    }
                )
    finally:
        transport.close()
    return timings
