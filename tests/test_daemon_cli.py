"""``mesh112 relay run`` as an operator meets it: SIGTERM stops it cleanly (exit 0, store intact),
and a bad config, a port in use or missing keys give one clear line on stderr and exit code 1 (a
failure at run time; 2 is kept for a wrong command line)."""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from field.deployment import create_demo_deployment
from field.harness import free_port_base
from field.processes import FieldNode, operator_token, wait_healthy, write_field
from relay.daemon import STORE_FILE

CHAIN = ("command-post",)


@pytest.fixture
def post(tmp_path: Path) -> Iterator[tuple[FieldNode, str, str]]:
    deployment = create_demo_deployment(tmp_path)
    (node,) = write_field(deployment, api_port=free_port_base(1), ip_port=free_port_base(1), chain=CHAIN)
    token = operator_token(deployment, frozenset({"dispatcher"}), "cli test")
    yield node, token, deployment.node("Field Relay 1").node_id.hex()


def _run(config: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", "relay", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("mesh112:")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_sigterm_exits_0_with_a_consistent_store(post: tuple[FieldNode, str, str]) -> None:
    node, token, relay_id = post
    process = subprocess.Popen(
        [sys.executable, "-m", "relay", "relay", "run", "--config", str(node.config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_healthy([node])
        body = {"to": f"node:{relay_id}", "text": "stand by", "priority": "FLASH"}
        headers = {"Authorization": f"Bearer {token}"}
        sent = httpx.post(f"{node.api}/api/v1/messages", json=body, headers=headers, timeout=10)
        assert sent.status_code == 202, sent.text
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert b"Traceback" not in stderr
    db = sqlite3.connect(node.directory / STORE_FILE)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM bundles").fetchone()[0] == 1  # the FLASH, kept for later
    finally:
        db.close()


def test_bad_config_is_one_line(post: tuple[FieldNode, str, str]) -> None:
    node, _, _ = post
    good = node.config.read_text()
    node.config.write_text(good.replace("[api]", "[api]\nrate_per_s = -1"))
    _one_line_error(_run(node.config), "[api] rate_per_s: must be greater than 0")
    node.config.write_text(good.replace('type = "ip"', 'type = "ip"\nkeepalive_interval = "often"'))
    _one_line_error(_run(node.config), "[link ip0] keepalive_interval: must be a number, got text 'often'")
    node.config.write_text(good.replace('type = "ip"', 'type = "ip"\nkeepalive_interval = 0'))
    _one_line_error(_run(node.config), "[link ip0] keepalive_interval: must be greater than 0")
    node.config.write_text("[node\nname = 'x'")
    _one_line_error(_run(node.config), "not valid TOML")
    _one_line_error(_run(node.directory / "missing.toml"), "configuration file not found")


def test_api_port_in_use_is_one_line(post: tuple[FieldNode, str, str]) -> None:
    node, _, _ = post
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", node.api_port))
        taken.listen()
        _one_line_error(_run(node.config), f"127.0.0.1:{node.api_port}")


def test_ip_link_port_in_use_is_one_line(post: tuple[FieldNode, str, str]) -> None:
    node, _, _ = post
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", node.ip_port))
        taken.listen()
        _one_line_error(_run(node.config), str(node.ip_port))


def test_missing_keys_is_one_line(post: tuple[FieldNode, str, str]) -> None:
    node, _, _ = post
    for key in node.directory.glob("*.key"):
        key.unlink()
    _one_line_error(_run(node.config))
