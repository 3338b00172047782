"""``mesh112 video stream`` on a field unit: two real relay processes (the unit and the command post,
an IP link between them and a webrtc link each); the unit's offer travels to the command post as a
FLASH bundle, the answer comes back the same way, and the command post records the unit's video."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
from conftest import auth

from field.deployment import create_demo_deployment
from field.harness import free_port_base
from field.processes import operator_token, start_node, stop_all, wait_healthy, write_field


def test_a_unit_streams_to_the_command_post_with_signalling_over_the_mesh(tmp_path: Path) -> None:
    deployment = create_demo_deployment(tmp_path)
    post_node, unit_node = write_field(
        deployment,
        api_port=free_port_base(2),
        ip_port=free_port_base(2),
        chain=("command-post", "responder-1"),
    )
    post_id = deployment.node("Command Post").node_id.hex()
    with post_node.config.open("a") as config:
        config.write('\n[[links]]\ntype = "webrtc"\n')
    unit_config = unit_node.config.read_text().replace("[api]\nenabled = true", "[api]\nenabled = false")
    unit_node.config.write_text(unit_config + f'\n[[links]]\ntype = "webrtc"\npeers = ["{post_id}"]\n')
    (tmp_path / "logs").mkdir()
    processes = [start_node(post_node, tmp_path / "logs")]
    try:
        wait_healthy([post_node])
        command = [sys.executable, "-m", "relay", "video", "stream", "--node", str(unit_node.config)]
        command += ["--to", post_id, "--sos", "--seconds", "8"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=90)
        assert result.returncode == 0, result.stderr[-3000:]
        lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        assert any(line.get("up") for line in lines), result.stdout[-2000:]
        assert lines[-1]["frames"] > 10 and lines[-1]["blur_ms"] is not None
        token = operator_token(deployment, frozenset({"dispatcher"}), "dispatcher op")
        records = httpx.get(f"{post_node.api}/api/v1/records", headers=auth(token), timeout=10).json()
        webrtc = [r for r in records if r.get("record_type", r.get("type")) == "webrtc"]
        assert webrtc and webrtc[0]["body"]["sos"] is True and webrtc[0]["body"]["state"] == "answered", (
            records
        )
    finally:
        stop_all(processes)
    deadline = time.monotonic() + 10
    recordings: list[Path] = []
    while not recordings and time.monotonic() < deadline:
        recordings = list((post_node.directory / "video").glob("*.webm"))
        time.sleep(0.2)
    assert recordings and recordings[0].stat().st_size > 1000


def test_without_a_channel_the_unit_sends_masked_snapshots_as_bulk_bundles(tmp_path: Path) -> None:
    """The command post has no webrtc link, so no answer comes: after --fallback-after the unit sends
    anonymised snapshots over its IP link, and the command post journals them as camera snapshots."""
    deployment = create_demo_deployment(tmp_path)
    post_node, unit_node = write_field(
        deployment,
        api_port=free_port_base(2),
        ip_port=free_port_base(2),
        chain=("command-post", "responder-1"),
    )
    post_id = deployment.node("Command Post").node_id.hex()
    unit_config = unit_node.config.read_text().replace("[api]\nenabled = true", "[api]\nenabled = false")
    unit_node.config.write_text(unit_config + f'\n[[links]]\ntype = "webrtc"\npeers = ["{post_id}"]\n')
    (tmp_path / "logs").mkdir()
    processes = [start_node(post_node, tmp_path / "logs")]
    try:
        wait_healthy([post_node])
        command = [sys.executable, "-m", "relay", "video", "stream", "--node", str(unit_node.config)]
        command += ["--to", post_id, "--seconds", "8", "--fallback-after", "2", "--snapshot-bytes", "4000"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=90)
        assert result.returncode == 0, result.stderr[-3000:]
        lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        assert not any(line.get("up") for line in lines) and lines[-1]["snapshots"] >= 3, result.stdout[
            -2000:
        ]
        token = operator_token(deployment, frozenset({"dispatcher"}), "dispatcher op")
        deadline = time.monotonic() + 20
        snapshots: list[dict[str, object]] = []
        while len(snapshots) < 3 and time.monotonic() < deadline:
            records = httpx.get(f"{post_node.api}/api/v1/records", headers=auth(token), timeout=10).json()
            snapshots = [r for r in records if "jpeg_base64" in r.get("body", {})]
            time.sleep(0.3)
        assert len(snapshots) >= 3, records
        assert all(len(str(r["body"]["jpeg_base64"])) * 3 // 4 <= 4000 for r in snapshots)
    finally:
        stop_all(processes)
