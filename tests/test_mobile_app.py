"""The responder app's real Kivy widgets under Xvfb, its node in-process, against real relay processes:
an SOS held, confirmed, delivered to the command post's journal and acknowledged back; killed with
kill -9 right after confirm and still delivered once on restart; messages queued while the links are
down and sent when they return."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mobile_display import Driven, xvfb
from playwright.sync_api import expect, sync_playwright
from system_tools import require_tool

from field.browser import CHROMIUM_ARGS
from field.harness import RunningField, free_port_base, running_field
from field.radio import Radio, emulator_toml, lora_link_toml, start_emulator

# The goal is 200 ms (bench/app.py measures it); two fsyncs on a 2-core machine shared with other
# test runs take longer, so the tests bound it loosely and the benchmark reports the figure.
DURABLE_BOUND_MS = 1000

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
    """The SOS reaches the command post's journal and console (headless Chromium); the operator
    acknowledges it in the console and the acknowledgement comes back to the app's screen."""
    with running_field(tmp_path, ("command-post", "responder-1"), started=("command-post",)) as field:
        app = _app(
            display,
            field,
            tmp_path,
            ["hold:sos.hold:1.8", "tap:confirm.send", "wait:sos=delivered", "wait:sos=acknowledged", "quit"],
        )
        try:
            ready = app.expect(30, has="ready")
            queued = app.expect(30, sos="queued")
            assert queued["durable_ms"] < DURABLE_BOUND_MS, queued  # durable before the screen says sent
            app.expect(30, sos="delivered")
            (record,) = _wait_records(field, 1)
            assert record["priority"] == "FLASH"
            body = record["body"]
            assert isinstance(body, dict) and body["responder"] == "Responder 1" and body["state"] == "raised"
            assert body["location"]["lat"] == pytest.approx(50.0875)
            _acknowledge_in_console(field, "SOS from Responder 1", tmp_path / "console-sos.png")
            acked = app.expect(30, sos="acknowledged")
            assert acked["ack"].startswith("test operator") and acked["ack"].endswith(": received"), acked
            app.expect(30, done=True)
            assert app.stop() == 0
            assert ready["ready"] < 10
        finally:
            app.stop()


def _acknowledge_in_console(field: RunningField, text: str, shot: Path) -> None:
    """Open the command post's console, find the alarm card with ``text`` and press Acknowledge."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=require_tool("chromium", "chromium"), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{field.node('command-post').api}/#token={field.token}")
            card = page.locator("#alarms li.card", has_text=text)
            expect(card).to_have_count(1, timeout=20_000)
            expect(card).to_contain_text("FLASH")
            card.locator("button.ack").click()
            expect(card.locator("ul.acks li")).to_have_count(1, timeout=20_000)  # sent back
            page.screenshot(path=str(shot))
        finally:
            browser.close()


def _messages(field: RunningField) -> list[dict[str, object]]:
    return list(_api(field, "GET", "/api/v1/messages").json())


def test_killed_right_after_confirm_and_links_down_then_back(tmp_path: Path, display: str) -> None:
    """The command post is down: the app is usable (SOS confirmed, a status queued), killed with -9
    right after confirm, restarted; when the command post comes up the SOS arrives once."""
    with running_field(tmp_path, ("command-post", "responder-1"), started=()) as field:
        app = _app(display, field, tmp_path, ["hold:sos.hold:1.8", "tap:confirm.send", "sleep:30"])
        try:
            app.expect(30, sos="idle")
            confirmed = app.expect(30, sos="confirmed")
            app.kill()
        finally:
            app.stop()
        app = _app(
            display,
            field,
            tmp_path,
            [
                *("show:messages", "tap:messages.canned_on_scene", "wait:message=queued"),
                *("show:links", "sleep:1", "show:sos"),
                *("wait:sos=delivered", "wait:message=delivered", "quit"),
            ],
        )
        try:
            restarted = app.expect(30, action="show:messages")
            ready = next(line for line in app.lines if "ready" in line)
            assert ready["sos"] in ("confirmed", "queued"), ready  # restored from the app's table
            app.expect(30, message="queued", text="STATUS: on scene")  # usable with no link up
            app.expect(30, action="show:sos")
            assert _sos_free(app), "delivered before the command post was up"
            field.start_healthy("command-post")
            app.expect(60, sos="delivered")
            app.expect(60, message="delivered")
            app.expect(30, done=True)
            assert app.stop() == 0
        finally:
            app.stop()
        records = _wait_records(field, 1)
        time.sleep(2)  # a duplicate would be right behind
        records = _sos_records(field)
        assert len(records) == 1, records
        body = records[0]["body"]
        assert isinstance(body, dict) and body["number"] == confirmed["number"]
        assert any(m["text"] == "STATUS: on scene" for m in _messages(field))
        assert restarted["t"] > confirmed["t"]


def _sos_free(app: Driven) -> bool:
    return not any(line.get("sos") == "delivered" for line in app.lines)


def test_enrol_by_qr_from_mesh112_authority_invite(tmp_path: Path, display: str) -> None:
    """`mesh112 authority invite` prints a QR; the app scans it from the PNG, enrols (a new identity,
    its certificate from the authority) and its first message reaches the command post, which is
    not restarted: it learns the certificate at run time and keeps it in its roster."""
    with running_field(tmp_path, ("command-post",)) as field:
        post = field.node("command-post")
        phone = tmp_path / "phone"
        png = tmp_path / "invitation.png"
        listen = f"127.0.0.1:{free_port_base(1)}"
        invite = subprocess.Popen(
            [
                *(sys.executable, "-m", "relay", "authority", "invite"),
                *("--authority", str(field.deployment.authority_dir), "--name", "Responder 7"),
                *("--groups", "incident-1", "--post-dir", str(post.directory)),
                *("--peer", f"tcp://127.0.0.1:{post.ip_port}", "--listen", listen, "--png", str(png)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert invite.stdout is not None
            printed = ""
            for line in invite.stdout:
                printed += line
                if line.startswith("waiting for the device"):
                    break
            size = int(re.search(r": (\d+) bytes", printed).group(1))  # type: ignore[union-attr]
            assert size <= 300 and "█" in printed  # the QR code on the terminal
            app = Driven(
                display,
                phone,
                [
                    *(f"type:enrol.path:{png}", "tap:enrol.scan", "wait:ready", "show:messages"),
                    *("tap:messages.canned_en_route", "wait:message=delivered", "quit"),
                ],
                tmp_path / "kivy",
                tmp_path / "logs" / "app.log",
            )
            try:
                scanned = app.expect(30, action="tap:enrol.scan")
                app.expect(30, action="wait:ready")
                assert invite.wait(10) == 0
                # The command post keeps running: it learns the device's certificate from the IP
                # link's handshake (docs/crypto.md, "Learning certificates at run time").
                app.expect(30, message="delivered", text="STATUS: en route")
                delivered = app.lines[-1]
                assert delivered["t"] - scanned["t"] < 30  # from scan to the first delivered message
                app.expect(30, done=True)
            finally:
                app.stop()
            assert "enrolled 'Responder 7'" in invite.stdout.read()
            log = (tmp_path / "logs" / "command-post.log").read_text()
            assert "certificate of Responder 7 learned and saved" in log
        finally:
            if invite.poll() is None:
                invite.kill()
                invite.wait()
        messages = _messages(field)
        assert any(m["text"] == "STATUS: en route" for m in messages)


def test_sos_over_emulated_lora(tmp_path: Path, display: str) -> None:
    """The app's node has only a LoRa link: its radio is an emulated Meshtastic device (the real
    meshtastic library talks to it over TCP), and the command post's radio hears it on the air."""
    with running_field(tmp_path, ("command-post", "responder-1"), started=()) as field:
        port = free_port_base(2)
        post_radio = Radio("command-post", 0xA0000001, 0.0, port)
        phone_radio = Radio("responder-1", 0xA0000004, 600.0, port + 1)
        post_id, phone_id = (bytes.fromhex(field.node_id(slug)) for slug in ("command-post", "responder-1"))
        post, phone = field.node("command-post"), field.node("responder-1")
        with post.config.open("a") as config:
            config.write(lora_link_toml(post_radio, {phone_radio.num: phone_id}))
        phone.config.write_text(
            f'[node]\nname = "Responder 1"\nroles = ["responder"]\ncommand_post = "{post_id.hex()}"\n'
            + lora_link_toml(phone_radio, {post_radio.num: post_id})
        )
        emulator_config = tmp_path / "lora-emulator.toml"
        emulator_config.write_text(emulator_toml((post_radio, phone_radio)))
        emulator = start_emulator(emulator_config, tmp_path / "logs" / "lora-emulator.log")
        try:
            field.start_healthy("command-post")
            app = _app(
                display,
                field,
                tmp_path,
                ["hold:sos.hold:1.8", "tap:confirm.send", "wait:sos=delivered", "quit"],
            )
            try:
                queued = app.expect(60, sos="queued")
                assert queued["durable_ms"] < DURABLE_BOUND_MS, queued
                app.expect(120, sos="delivered")  # the command post's receipt came back over LoRa
                app.expect(30, done=True)
            finally:
                app.stop()
            (record,) = _wait_records(field, 1)
            assert record["priority"] == "FLASH" and record["body"]["responder"] == "Responder 1"
        finally:
            emulator.send_signal(signal.SIGTERM)
            try:
                emulator.wait(10)
            except subprocess.TimeoutExpired:
                emulator.kill()
                emulator.wait()
