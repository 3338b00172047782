"""`make run` as a newcomer sees it: `mesh112 demo` starts the field, traffic, alarms and a helmet
camera's live video reach the command post, Ctrl-C stops every process it started (a second signal
during the clean-up too)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _wait(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_demo_field_runs_carries_traffic_alarms_and_detections_then_stops(tmp_path: Path) -> None:
    out = (tmp_path / "demo.out").open("w+")
    demo = subprocess.Popen(
        [sys.executable, "-m", "relay", "demo", "--dir", str(tmp_path / "field"), "--duration", "240"],
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        text = _wait(
            lambda: (
                (tmp_path / "demo.out").read_text() if "Ctrl-C" in (tmp_path / "demo.out").read_text() else ""
            ),
            120,
            "the demo to print its dashboard address",
        )
        pids = [int(p) for p in re.findall(r"pid (\d+)", text)]
        assert len(pids) >= 7
        token = re.search(r"export MESH112_TOKEN=(\S+)", text).group(1)  # type: ignore[union-attr]
        api = "http://127.0.0.1:8112"
        headers = {"Authorization": f"Bearer {token}"}
        assert re.search(r"Dashboard: http://127\.0\.0\.1:8112/#token=m112\.", text)

        alarm = re.search(r"sipsak (.+)$", text, re.MULTILINE).group(1).split()  # type: ignore[union-attr]
        sent = subprocess.run(["sipsak", *alarm], capture_output=True, text=True, timeout=30)
        assert "200" in sent.stdout + sent.stderr, sent.stdout + sent.stderr

        _wait(lambda: len(httpx.get(f"{api}/api/v1/messages", headers=headers).json()) >= 3, 60, "messages")
        walker = _wait(
            lambda: [
                unit
                for unit in httpx.get(f"{api}/api/v1/units", headers=headers).json()
                if unit["name"] == "Responder 1" and unit["lat"] is not None
            ],
            60,
            "responder-1's position at the command post",
        )
        assert abs(walker[0]["lat"] - 48.2071) < 0.01 and abs(walker[0]["lon"] - 16.3711) < 0.01
        assert walker[0]["fixed"] <= time.time() and walker[0]["accuracy_m"] == 5
        _wait(
            lambda: httpx.get(f"{api}/api/v1/records?type=detection", headers=headers).json(),
            90,
            "a camera detection at the command post",
        )
        alarms = _wait(
            lambda: httpx.get(f"{api}/api/v1/records?type=alarm", headers=headers).json(),
            90,
            "the building alarm at the command post",
        )
        assert "EXERCISE" in alarms[0]["body"]["summary"].upper()
        units = httpx.get(f"{api}/api/v1/units", headers=headers).json()
        helmet = next(unit["node_id"] for unit in units if unit["name"] == "Responder 2")
        _wait(
            lambda: helmet in httpx.get(f"{api}/api/v1/webrtc", headers=headers).json()[0]["streams"],
            90,
            "responder-2's live video at the command post (the console's Live video panel)",
        )
    finally:  # Ctrl-C, then a second signal during the clean-up (as `make` passes a SIGTERM on)
        demo.send_signal(signal.SIGINT)
        time.sleep(0.3)
        demo.send_signal(signal.SIGTERM)
        demo.wait(60)
        out.close()
    assert demo.returncode == 0
    for pid in pids:
        _wait(lambda pid=pid: not _alive(pid), 15, f"process {pid} to stop")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited; its parent reaps it
        return stat.read().split()[2] != "Z"
