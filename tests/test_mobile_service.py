"""The app's Android foreground service entry (mobile/android_service.py), run as its own process on
Linux the way python-for-android runs it on the phone: the node headless, a real store, a real
command post process. An SOS the window confirmed into the app's table, but whose process died before
the node stored it, is sent by the service and reaches the command post once; SIGTERM (Android
stopping the service) stops the node cleanly. Building the APK needs the Android SDK and NDK, which
this machine cannot download: the service declaration in deploy/android/buildozer.spec is checked by
reading it."""

from __future__ import annotations

import asyncio
import configparser
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from field.harness import RunningField, running_field
from mobile.appstore import AppStore
from mobile.state import Sos, SosPhase

REPO = Path(__file__).resolve().parent.parent


def _sos_records(field: RunningField) -> list[dict[str, object]]:
    post = field.node("command-post")
    response = httpx.get(
        post.api + "/api/v1/records",
        params={"type": "sos"},
        headers={"Authorization": f"Bearer {field.token}"},
        timeout=10,
    )
    response.raise_for_status()
    return list(response.json())


async def _confirm_into_the_app_table(node_dir: Path) -> Sos:
    """What the window leaves behind when it dies between its own table and the node's store."""
    store = await AppStore.open(node_dir)
    try:
        sos = Sos(await store.next_sos_number(), SosPhase.CONFIRMED, time.time(), 50.0875, 14.4213)
        await store.put_sos(sos)
        return sos
    finally:
        await store.close()


async def _latest(node_dir: Path) -> Sos | None:
    store = await AppStore.open(node_dir)
    try:
        return await store.latest_sos()
    finally:
        await store.close()


def test_the_service_runs_the_node_headless_and_delivers_the_sos(tmp_path: Path) -> None:
    with running_field(tmp_path, ("command-post", "responder-1"), started=("command-post",)) as field:
        node_dir = field.node("responder-1").directory
        sos = asyncio.run(_confirm_into_the_app_table(node_dir))
        env = dict(os.environ, PYTHON_SERVICE_ARGUMENT=str(node_dir))  # as python-for-android passes it
        env.pop("DISPLAY", None)  # headless: no window, no Kivy
        with (tmp_path / "service.log").open("wb") as log:
            service = subprocess.Popen(
                [sys.executable, "-m", "mobile.android_service"], env=env, stderr=log, cwd=REPO
            )
        try:
            deadline = time.monotonic() + 60
            while not (records := _sos_records(field)) and time.monotonic() < deadline:
                assert service.poll() is None, (tmp_path / "service.log").read_text()[-2000:]
                time.sleep(0.3)
            assert len(records) == 1, records
            body = records[0]["body"]
            assert isinstance(body, dict) and body["number"] == sos.number and body["state"] == "raised"
            deadline = time.monotonic() + 30
            while (latest := asyncio.run(_latest(node_dir))) is not None and latest.phase not in (
                SosPhase.DELIVERED,
                SosPhase.ACKNOWLEDGED,
            ):
                assert time.monotonic() < deadline, latest
                time.sleep(0.3)  # the receipt reaches the service's node, which records the phase
        finally:
            service.send_signal(signal.SIGTERM)
            try:
                code = service.wait(20)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait()
                raise
        assert code == 0, (tmp_path / "service.log").read_text()[-2000:]
        assert "kivy" not in (tmp_path / "service.log").read_text().lower()  # no window was opened
        assert len(_sos_records(field)) == 1  # once


def test_buildozer_declares_the_foreground_service() -> None:
    spec = configparser.ConfigParser()
    spec.read(REPO / "deploy" / "android" / "buildozer.spec")
    name, entry, *options = spec["app"]["services"].split(":")
    assert (name, entry) == ("node", "mobile/android_service.py")
    assert "foreground" in options and "sticky" in options
    assert (REPO / entry).exists()
    assert "FOREGROUND_SERVICE" in spec["app"]["android.permissions"]
