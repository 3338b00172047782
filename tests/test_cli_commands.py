"""Which subcommands ``mesh112`` loads: a relay command loads the relay's own and none of the packages
above it (each node of a field starts without numpy, scipy and onnxruntime), a package's command
loads that package's alone, and help or an unknown command loads every one."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("numpy", "scipy", "onnxruntime", "meshtastic", "kivy", "ng112", "analytics_edge", "field", "mobile")

PROBE = """
import json, sys
from relay.cli import build_parser
parser = build_parser(sys.argv[1] or None)
commands = sorted(parser._subparsers._group_actions[0].choices)
print(json.dumps({"commands": commands, "loaded": [m for m in sys.argv[2:] if m in sys.modules]}))
"""


def _probe(command: str) -> tuple[list[str], list[str]]:
    """The commands ``build_parser(command)`` registers and the heavy packages it imported, in a fresh
    interpreter (this one has imported everything the suite touched)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, command, *HEAVY],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    answer = json.loads(done.stdout)
    return answer["commands"], answer["loaded"]


@pytest.mark.parametrize("command", ["relay", "send", "sim", "init"])
def test_a_relay_command_loads_none_of_the_packages_above_the_relay(command: str) -> None:
    commands, loaded = _probe(command)
    assert loaded == []
    assert {"relay", "send", "status", "sim", "init", "authority"} <= set(commands)
    assert "ng112" not in commands


def test_a_package_command_loads_that_package_alone() -> None:
    commands, loaded = _probe("ng112")
    assert commands == ["ng112"]
    assert "analytics_edge" not in loaded and "field" not in loaded


@pytest.mark.parametrize("command", ["", "--help", "no-such-command"])
def test_help_and_unknown_commands_list_every_command(command: str) -> None:
    commands, _ = _probe(command)
    assert {"relay", "sim", "ng112", "camera", "video", "demo", "lora-emulator", "app"} <= set(commands)
