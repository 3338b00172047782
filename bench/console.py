"""The command post console in Chromium: how soon an alarm is on screen, and how fast a busy field renders.

- ``alarm_to_paint_ms``: 100 alarms sent as SIP MESSAGEs (one building each, 4 per second from 10
  loopback addresses) to a ``mesh112 ng112 gateway`` process, carried over the IP link to a command
  post relay process;
  timed from the moment the command post's feed wrote the record into its journal (``received``, just
  before the durable commit) to the first animation frame after the console drew it, in Debian's
  Chromium (headless, Playwright). Both clocks are this machine's wall clock.
- ``render_ms``: 500 units (with positions on the map), 200 alarms and 1,000 detections applied to a
  signed-in console and rendered: the DOM work until layout (``dom``) and until the next frame
  (``to_frame``), median of 5 runs in fresh pages.

The machine's load average (1 min) at the start and end of the run is written beside the figures:
on a shared 2-core machine the render time follows it closely.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, sync_playwright

from field.browser import CHROMIUM_ARGS
from field.deployment import create_demo_deployment
from field.processes import FieldNode, node_config, operator_token, start_node, stop_all, wait_healthy
from field.radio import buildings_toml, start_gateway
from relay.daemon import ROSTER_DIR

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "ng112"
WIRE = (CORPUS / "sip" / "synthetic-sipp-fire-alarm-message.sip").read_bytes()
ALARMS = 100
RATE = 4.0  # alarms per second, all sources together (the gateway allows 10 unauthenticated)
SOURCES = 10

RENDER_JS = (Path(__file__).parent / "console_render.js").read_text()


def _variant(n: int) -> bytes:
    """The corpus alarm as building ``n`` (its own sender, so no per-sender budget applies)."""
    head, body = WIRE.split(b"\r\n\r\n", 1)
    body = body.replace(b"FP17-2026-000123", f"FP17-C{n}".encode())
    head = head.replace(b"1-16807@127.0.0.1", f"console-{n}@127.0.0.1".encode())
    head = head.replace(b"z9hG4bK-16807-1-0", f"z9hG4bK-c{n}".encode())
    head = head.replace(b"fire-panel-17@", f"panel-{n}@".encode())
    head = head.replace(b"Content-Length:  2287", f"Content-Length: {len(body)}".encode())
    return head + b"\r\n\r\n" + body


def _port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _open(page: Page, api: str, token: str) -> None:
    page.goto(f"{api}/#token={token}")
    page.wait_for_selector("#stream-state.up", timeout=20_000)


def _measure(root: Path) -> dict[str, Any]:
    deployment = create_demo_deployment(root / "field")
    post, gateway = deployment.node("Command Post"), deployment.node("Building Gateway")
    api, post_ip, sip_port = _port(), _port(), _port(socket.SOCK_DGRAM)
    post.config.write_text(node_config(post.name, post.roles, api, post_ip, []))
    gateway.config.write_text(node_config(gateway.name, gateway.roles, _port(), _port(), [post_ip]))
    for node in (post, gateway):
        (node.directory / "buildings.toml").write_text(
            buildings_toml(_port(socket.SOCK_DGRAM), digest_secret=None)
        )
        roster = node.directory / ROSTER_DIR
        roster.mkdir(exist_ok=True)
        for other in deployment.nodes:
            (roster / f"{other.node_id.hex()}.cert").write_bytes(other.certificate.encode())
    logs = root / "logs"
    logs.mkdir()
    field_post = FieldNode("command-post", post.directory, api, post_ip)
    token = operator_token(deployment, frozenset({"dispatcher"}), "Bench Dispatcher")
    processes = [start_node(field_post, logs)]
    buildings = gateway.directory / "buildings.toml"
    processes.append(start_gateway(gateway.config, buildings, sip_port, logs / "gateway.log", post.node_id))
    try:
        wait_healthy([field_post], 30.0)
        deadline = time.monotonic() + 30
        while "ng112 gateway listening" not in (logs / "gateway.log").read_text():
            if time.monotonic() > deadline:
                raise RuntimeError((logs / "gateway.log").read_text()[-2000:])
            time.sleep(0.2)
        with sync_playwright() as playwright:
            chromium = shutil.which("chromium") or "/usr/bin/chromium"
            browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                _open(page, field_post.api, token)
                for n in range(ALARMS):  # from 10 loopback addresses: each within its 2/s budget
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sip:
                        sip.bind((f"127.0.0.{2 + n % SOURCES}", 0))
                        sip.sendto(_variant(n), ("127.0.0.1", sip_port))
                    time.sleep(1 / RATE)
                deadline = time.monotonic() + 120
                painted: dict[str, float] = {}
                while len(painted) < ALARMS and time.monotonic() < deadline:
                    time.sleep(0.5)
                    painted = page.evaluate(
                        "Object.fromEntries([...mesh112.paintedAt].filter(([, at]) => at != null))"
                    )
                records = httpx.get(
                    f"{field_post.api}/api/v1/records/open",
                    params={"type": "alarm"},
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=10,
                ).json()
                latencies = [
                    painted[r["record_id"]] - r["received"] * 1000
                    for r in records
                    if r["record_id"] in painted
                ]
                renders = []
                for _ in range(5):
                    fresh = browser.new_page(viewport={"width": 1280, "height": 900})
                    _open(fresh, field_post.api, token)
                    renders.append(fresh.evaluate(RENDER_JS))
                    fresh.close()
            finally:
                browser.close()
    finally:
        stop_all(processes)
    return {
        "alarms_sent": ALARMS,
        "alarms_painted": len(latencies),
        "alarm_to_paint_ms": {
            "p50": round(statistics.median(latencies), 1),
            "p99": round(_percentile(latencies, 0.99), 1),
            "max": round(max(latencies), 1),
        },
        "render_500_units_200_alarms_1000_detections_ms": {
            "dom": round(statistics.median(r["dom"] for r in renders), 1),
            "to_frame": round(statistics.median(r["to_frame"] for r in renders), 1),
        },
        "browser": "Debian chromium, headless, 1280x900",
    }


def run() -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        figures = _measure(Path(tmp))
    figures["load_average_1min"] = {"start": round(load_before, 2), "end": round(os.getloadavg()[0], 2)}
    return figures
