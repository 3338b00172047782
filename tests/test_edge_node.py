"""`mesh112 camera run --node`: a camera runs its own relay node and its events reach a command
post that runs as a separate `mesh112 relay run` process, over pynng TCP on 127.0.0.1; the command
post journals them as `detection` records (the `mesh112.records` entry point)."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from analytics_edge import synthetic
from field.deployment import create_demo_deployment
from field.processes import node_config
from relay.cli import main
from relay.daemon import JOURNAL_FILE, ROSTER_DIR

CAMERA_TOML = """
[camera]
number = 7
fps = 5

[snapshots]
enabled = false

[[zones]]
name = "restricted"
points = [[400, 0], [640, 0], [640, 360], [400, 360]]

[[rules]]
type = "intrusion"
zone = "restricted"
"""


def _ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.timeout(120)
def test_camera_events_reach_a_command_post_process(tmp_path: Path) -> None:
    deployment = create_demo_deployment(tmp_path / "field")
    nodes = {node.directory.name: node for node in deployment.nodes}
    post, camera = nodes["command-post"], nodes["responder-1"]
    api_post, ip_post, api_camera, ip_camera = _ports(4)
    post.directory.joinpath("node.toml").write_text(node_config(post.name, post.roles, api_post, ip_post, []))
    camera_node = camera.directory / "node.toml"
    camera_node.write_text(node_config(camera.name, camera.roles, api_camera, ip_camera, [ip_post]))
    camera_node.write_text(camera_node.read_text().replace("enabled = true", "enabled = false"))
    for node in (post, camera):
        roster = node.directory / ROSTER_DIR
        roster.mkdir(exist_ok=True)
        for other in deployment.nodes:
            (roster / f"{other.node_id.hex()}.cert").write_bytes(other.certificate.encode())
    config = tmp_path / "camera.toml"
    config.write_text(CAMERA_TOML)
    clip = synthetic.write_clip(synthetic.entering_zone(duration_s=5.0), tmp_path / "clip.mkv")

    log = (tmp_path / "post.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "relay", "relay", "run", "--config", str(post.directory / "node.toml")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{api_post}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "post.log").read_text()
            time.sleep(0.2)
        args = ["camera", "run", "--source", str(clip), "--config", str(config)]
        args += ["--node", str(camera_node), "--to", post.node_id.hex(), "--linger", "3"]
        assert main(args) == 0
        deadline = time.monotonic() + 20
        rows: list[tuple[str, str]] = []
        while not rows and time.monotonic() < deadline:
            time.sleep(0.3)
            with sqlite3.connect(post.directory / JOURNAL_FILE) as db:
                rows = db.execute("SELECT type, body FROM records").fetchall()
    finally:
        process.terminate()
        process.wait(15)
        log.close()
    assert rows, (tmp_path / "post.log").read_text()
    record_type, body = rows[0]
    event = json.loads(body)
    assert record_type == "detection" and event["event"] == "intrusion" and event["camera"] == 7
