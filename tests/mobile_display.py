"""Xvfb for the app tests: a free display number, started and stopped by PID, and the driver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from system_tools import require_tool

DRIVER = Path(__file__).with_name("mobile_drive.py")
SCREEN = "540x960x24"  # a phone-shaped window


@contextmanager
def xvfb() -> Iterator[str]:
    binary = require_tool("Xvfb", "xvfb")
    for number in range(120, 200):
        if Path(f"/tmp/.X{number}-lock").exists() or Path(f"/tmp/.X11-unix/X{number}").exists():
            continue
        process = subprocess.Popen(
            [binary, f":{number}", "-screen", "0", SCREEN, "-nolisten", "tcp"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not Path(f"/tmp/.X11-unix/X{number}").exists() and process.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if process.poll() is None and Path(f"/tmp/.X11-unix/X{number}").exists():
            try:
                yield f":{number}"
            finally:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            return
        if process.poll() is None:
            process.kill()
            process.wait()
    raise RuntimeError("no free X display number for Xvfb")


class Driven:
    """The app process under the driver: its JSON lines, read as they come."""

    def __init__(self, display: str, node: Path, actions: list[str], home: Path, log: Path) -> None:
        env = dict(os.environ, DISPLAY=display, KIVY_NO_ARGS="1", KIVY_HOME=str(home))
        self.process = subprocess.Popen(
            [sys.executable, str(DRIVER), "--node", str(node), *actions],
            stdout=subprocess.PIPE,
            stderr=log.open("ab"),
            env=env,
            start_new_session=True,
        )
        self.lines: list[dict[str, Any]] = []

    def expect(self, timeout: float, has: str | None = None, **match: Any) -> dict[str, Any]:
        """The first line (from now on) with these fields (and the field ``has``); fails on the
        driver's error or exit."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            raw = self.process.stdout.readline()
            if not raw:
                raise AssertionError(
                    f"the app exited ({self.process.wait()}) before {match}: {self.lines[-5:]}"
                )
            line = json.loads(raw)
            self.lines.append(line)
            if "error" in line:
                raise AssertionError(f"the driver: {line['error']}")
            if (has is None or has in line) and all(line.get(k) == v for k, v in match.items()):
                return line
        raise AssertionError(f"no {match} within {timeout} s: {self.lines[-5:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
