"""``/metrics`` of a real node, scraped the way Prometheus does, with a scrape-only credential.

Processes: the LoRa emulator (20x real time), a command post (LoRa) and the building gateway node
(``mesh112 ng112 gateway --config``: LoRa, an IP link with no peers, API on). sipsak sends a real
alarm to the gateway, which answers 200 and carries it over LoRa to the command post. The gateway
node's ``/metrics`` must then show every family with values that fit what happened: the command post
up on lora0, airtime spent within the EU 868 budget, the 200 counted, queues and store present.
The scrape token comes from the real CLI (``mesh112 authority token --scrape``); a dispatcher's
token is refused with 403. A second field of two relay processes over IP shows a neighbour that went
away as 0 and the FLASH message held for it in the store's figures.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from system_tools import require_tool

from field.deployment import create_demo_deployment
from field.harness import free_port_base
from field.processes import (
    FieldNode,
    node_config,
    operator_token,
    start_node,
    stop_all,
    wait_healthy,
    write_field,
)
from field.radio import (
    Radio,
    buildings_toml,
    demo_alarm_message,
    emulator_toml,
    lora_link_toml,
    start_emulator,
    start_gateway,
)
from relay.daemon import ROSTER_DIR

Samples = dict[str, list[tuple[dict[str, str], float]]]


def _free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _free_sip_port() -> int:
    for _ in range(50):
        port = _free_port(socket.SOCK_DGRAM)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no port free for both UDP and TCP")


def _scrape(api: str, token: str) -> Samples:
    response = httpx.get(f"{api}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=5.0)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return samples


def _value(samples: Samples, metric: str, /, **labels: str) -> float:
    found = [value for have, value in samples.get(metric, []) if labels.items() <= have.items()]
    assert len(found) == 1, (metric, labels, samples.get(metric))
    return found[0]


def _wait(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_gateway_node_metrics_with_a_scrape_token(tmp_path: Path) -> None:
    sipsak = require_tool("sipsak", "sipsak")
    root, logs = tmp_path / "field", tmp_path / "logs"
    logs.mkdir()
    deployment = create_demo_deployment(root)
    post, gateway = deployment.node("Command Post"), deployment.node("Building Gateway")
    radio_post = Radio("command-post", 0xA0000001, 0.0, _free_port())
    radio_gateway = Radio("building-gateway", 0xA0000003, 900.0, _free_port())
    emulator = root / "lora-emulator.toml"
    emulator.write_text(emulator_toml((radio_post, radio_gateway), speedup=20.0))
    post_api, gateway_api, sip_port = _free_port(), _free_port(), _free_sip_port()
    post.config.write_text(
        node_config(post.name, post.roles, post_api, _free_port(), [])
        + lora_link_toml(radio_post, {radio_gateway.num: gateway.node_id})
    )
    gateway.config.write_text(
        node_config(gateway.name, gateway.roles, gateway_api, _free_port(), [])
        + lora_link_toml(radio_gateway, {radio_post.num: post.node_id})
    )
    for node in (post, gateway):
        (node.directory / "buildings.toml").write_text(
            buildings_toml(_free_port(socket.SOCK_DGRAM), digest_secret=None)
        )
        roster = node.directory / ROSTER_DIR
        roster.mkdir(exist_ok=True)
        for other in deployment.nodes:
            (roster / f"{other.node_id.hex()}.cert").write_bytes(other.certificate.encode())
    authority = str(deployment.authority_dir)
    issued = subprocess.run(
        [sys.executable, "-m", "relay", "authority", "token", "--scrape", "--authority", authority],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert issued.returncode == 0, issued.stderr
    scrape_token = issued.stdout.strip()
    dispatcher = operator_token(deployment, frozenset({"dispatcher"}), "Operator Jane Doe")
    field_post = FieldNode("command-post", post.directory, post_api, 0)
    field_gateway = FieldNode("building-gateway", gateway.directory, gateway_api, 0)

    processes = [start_emulator(emulator, logs / "emulator.log")]
    try:
        time.sleep(1.0)  # the radios listen
        processes.append(start_node(field_post, logs))
        buildings = gateway.directory / "buildings.toml"
        processes.append(
            start_gateway(gateway.config, buildings, sip_port, logs / "gateway.log", post.node_id)
        )
        wait_healthy([field_post, field_gateway], 30.0)
        _wait(
            "the gateway's SIP UAS",
            lambda: "ng112 gateway listening" in (logs / "gateway.log").read_text(),
            30,
        )

        as_dispatcher = {"Authorization": f"Bearer {dispatcher}"}
        refused = httpx.get(f"{field_gateway.api}/metrics", headers=as_dispatcher)
        assert refused.status_code == 403 and "may not metrics" in refused.json()["detail"]
        for path in ("/api/v1/messages", "/api/v1/links"):  # the scrape token reads metrics and nothing else
            other = httpx.get(
                f"{field_gateway.api}{path}", headers={"Authorization": f"Bearer {scrape_token}"}
            )
            assert other.status_code == 403, other.text

        before = _scrape(field_gateway.api, scrape_token)
        assert _value(before, "mesh112_build_info", version=version("mesh112")) == 1.0
        assert _value(before, "mesh112_lora_airtime_budget_seconds", link="lora0") == 360.0  # EU 868: 10 %
        assert "mesh112_ng112_responses_total" not in before  # family present, no response yet

        message = tmp_path / "alarm.sip"
        message.write_bytes(demo_alarm_message(time.time()))
        target, listen = f"sip:ng112@127.0.0.1:{sip_port}", str(_free_port(socket.SOCK_DGRAM))
        sent = subprocess.run(
            [sipsak, "-vv", "-f", str(message), "-s", target, "-E", "udp", "-l", listen],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert sent.returncode == 0 and "200 OK" in sent.stdout, sent.stdout[-2000:]

        def alarm_at_post() -> bool:
            records = httpx.get(
                f"{field_post.api}/api/v1/records", params={"type": "alarm"}, headers=as_dispatcher
            )
            return len(records.json()) == 1

        _wait("the alarm at the command post over LoRa", alarm_at_post, 60)

        after = _scrape(field_gateway.api, scrape_token)
        peer = {"link": "lora0", "kind": "lora", "peer": post.node_id.hex(), "name": "Command Post"}
        assert _value(after, "mesh112_link_peer_up", **peer) == 1.0
        airtime = _value(after, "mesh112_lora_airtime_seconds", link="lora0")
        assert 0.1 < airtime < 360.0, airtime  # at least the alarm's frame, far below the budget
        assert _value(after, "mesh112_ng112_responses_total", code="200") == 1.0
        for link in ("lora0", "ip0"):
            depths = [_value(after, "mesh112_queue_depth", link=link, priority=p) for p in ("FLASH", "BULK")]
            assert all(0 <= depth < 100 for depth in depths), depths
        assert _value(after, "mesh112_custody_resends_total") >= 0  # a lossy air may need some
        assert _value(after, "mesh112_implicit_acks_total") >= 0  # exported (FLASH over LoRa only)
        assert _value(after, "mesh112_frames_lost_total") >= 0  # exported (a radio that gave up)
        assert _value(after, "mesh112_store_quota_bytes") == 256 << 20
        assert 0 <= _value(after, "mesh112_store_bytes") < 1 << 20
        assert sum(value for _, value in after["mesh112_store_bundles"]) >= 0
        assert {labels["priority"] for labels, _ in after["mesh112_store_bundles"]} == {
            "FLASH",
            "IMMEDIATE",
            "PRIORITY",
            "ROUTINE",
            "BULK",
        }
        assert _value(after, "mesh112_store_evictions_total") == 0.0
        assert _value(after, "mesh112_api_requests_total", action="metrics") >= 2.0
        print(f"\nlora0 airtime {airtime:.2f} s of 360 s per hour")
    finally:
        stop_all(processes)
        for log in logs.iterdir():
            sys.stderr.write(f"--- {log.name}\n{log.read_text()[-2000:]}\n")


def test_a_neighbour_that_went_away_reads_0_and_what_waits_for_it_is_counted(tmp_path: Path) -> None:
    """Two relay processes over IP; the relay stops; the post's scrape says so (0) and counts the
    FLASH message it holds for it."""
    deployment = create_demo_deployment(tmp_path / "field")
    post, relay = write_field(
        deployment, api_port=free_port_base(2), ip_port=free_port_base(2), chain=("command-post", "relay-1")
    )
    token = operator_token(deployment, frozenset({"observer", "dispatcher"}), "Observer Olga")
    relay_id = deployment.node("Field Relay 1").node_id.hex()
    logs = tmp_path / "logs"
    logs.mkdir()
    processes = [start_node(post, logs), start_node(relay, logs)]
    try:
        wait_healthy([post, relay])
        peer = {"link": "ip0", "kind": "ip", "peer": relay_id, "name": "Field Relay 1"}
        _wait("the relay up at the post", lambda: _peer_up(post.api, token, peer) == 1.0, 30)
        stop_all(processes[1:])
        _wait("the relay down at the post", lambda: _peer_up(post.api, token, peer) == 0.0, 30)
        sent = httpx.post(
            f"{post.api}/api/v1/messages",
            json={"to": "field-relay-1", "text": "report when back", "priority": "FLASH"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert sent.status_code == 202, sent.text
        samples = _scrape(post.api, token)
        for why in ("refused_at_cap", "handshake_refused", "lost_records"):
            assert _value(samples, "mesh112_ip_connections_closed_total", link="ip0", why=why) == 0.0
        assert _value(samples, "mesh112_store_bundles", priority="FLASH") == 1.0
        assert _value(samples, "mesh112_store_bytes") > 0
        assert _value(samples, "mesh112_api_messages_sent_total") == 1.0
    finally:
        stop_all(processes)


def _peer_up(api: str, token: str, labels: dict[str, str]) -> float | None:
    samples = _scrape(api, token).get("mesh112_link_peer_up", [])
    found = [value for have, value in samples if have == labels]
    return found[0] if found else None
