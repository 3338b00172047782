"""Positions through real relay processes: ``mesh112 position`` from a field relay reaches the
command post, and hostile position payloads from an enrolled node are refused and logged there
without moving the unit, while the command post keeps running and takes the next good fix."""

from __future__ import annotations

import asyncio
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from field.harness import RunningField, inbox_pending, running_field, stopped_node_engine
from field.processes import FieldNode
from relay.bundle import Destination, Kind, Priority, to_epoch
from relay.config import load_config
from relay.errors import ConfigError
from relay.position import Position, encode_position

CHAIN = ("command-post", "relay-1")


def _units(field: RunningField) -> dict[str, dict[str, object]]:
    headers = {"Authorization": f"Bearer {field.token}"}
    response = httpx.get(f"{field.node('command-post').api}/api/v1/units", headers=headers, timeout=10)
    return {unit["node_id"]: unit for unit in response.json()}


def _wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.2)


def _cli_position(node: FieldNode, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", "position", "--api", node.api, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MESH112_TOKEN": token},
    )


async def _originate(node: FieldNode, to: bytes, payloads: list[bytes]) -> None:
    """Originate Kind.POSITION bundles with these payloads in a *stopped* node's store, sealed and
    signed by the node itself: what a compromised or buggy enrolled node could put on the air."""
    async with stopped_node_engine(node) as engine:
        for payload in payloads:
            await engine.send(
                Destination.to_node(to),
                payload,
                kind=Kind.POSITION,
                priority=Priority.PRIORITY,
                lifetime=900,
                now=to_epoch(time.time()),
            )


def test_cli_position_and_hostile_payloads_at_the_command_post(tmp_path: Path) -> None:
    with running_field(tmp_path, CHAIN) as field:
        relay, post = field.node("relay-1"), field.node("command-post")
        relay_id, post_id = field.node_id("relay-1"), field.node_id("command-post")
        assert load_config(relay.config).node.command_post == bytes.fromhex(post_id)

        sent = _cli_position(relay, field.token, "--accuracy", "12", "-12.0463731", "-77.042754")
        assert sent.returncode == 0, sent.stderr
        assert len(sent.stdout.split()[0]) == 44  # the bundle id
        _wait_for(lambda: _units(field).get(relay_id, {}).get("lat") is not None, 30, "the CLI's position")
        good = _units(field)[relay_id]
        assert (good["lat"], good["lon"], good["accuracy_m"]) == (-12.0463731, -77.042754, 12)

        field.stop("relay-1")
        hostile = [
            b"",
            b"\x00" * 15,
            b"\xff" * 4096,
            struct.pack(">iiIHh", 900_000_001, 0, 1, 0, 0),
            struct.pack(">iiIHh", 0, -(2**31), 1, 0, 0),
            encode_position(Position(10.0, 10.0, int(time.time()) + 86_400)),  # a clock a day ahead
        ]
        asyncio.run(_originate(relay, bytes.fromhex(post_id), hostile))
        field.start_healthy("relay-1")

        log = tmp_path / "logs" / "command-post.log"
        _wait_for(
            lambda: log.read_text().count("position from Field Relay 1 refused") >= len(hostile),
            30,
            "the command post to refuse every hostile position",
        )
        text = log.read_text()
        for reason in ("exactly 16 bytes, got 0", "got 4096", "latitude 90.0000001", "longitude", "future"):
            assert reason in text, reason
        assert "Traceback" not in text
        after = _units(field)[relay_id]
        assert (after["lat"], after["lon"], after["fixed"]) == (good["lat"], good["lon"], good["fixed"])
        _wait_for(lambda: inbox_pending(post) == 0, 10, "the refused deliveries to be acknowledged")

        sent = _cli_position(relay, field.token, "52.5", "13.4")
        assert sent.returncode == 0, sent.stderr
        _wait_for(lambda: _units(field)[relay_id]["lat"] == 52.5, 30, "the next good position")


def test_cli_position_explains_a_refusal_in_one_line(tmp_path: Path) -> None:
    with running_field(tmp_path, CHAIN[:1]) as field:
        post = field.node("command-post")
        refused = _cli_position(post, field.token, "95", "0")
        assert refused.returncode != 0
        assert "422" in refused.stderr and "Traceback" not in refused.stderr
        nowhere = _cli_position(post, field.token, "45", "7")
        assert "command_post" in nowhere.stderr


@pytest.mark.parametrize("value", ['"abc"', '"zz" ', "42", '"' + "0" * 31 + '"', '"' + "g" * 32 + '"'])
def test_a_bad_command_post_in_node_toml_is_named(tmp_path: Path, value: str) -> None:
    path = tmp_path / "node.toml"
    path.write_text(f'[node]\nname = "n"\ncommand_post = {value}\n')
    with pytest.raises(ConfigError, match="command_post"):
        load_config(path)
