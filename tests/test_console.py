"""The command post console in Debian's Chromium (Playwright) against real relay processes.

* a dispatcher sends to ``all`` from the page and every field node journals it (group keys from the
  demo deployment); the stream drops and reconnects from its cursor without missing a message;
* an observer's page has no Send or Acknowledge control;
* 300 detections from a camera node later, an open alarm is still on screen and the page is no
  wider than the window.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import socket
import subprocess
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect, sync_playwright
from system_tools import require_tool

from analytics_edge.events import DetectionRecord, SnapshotRecord, encode_event, encode_snapshot_record
from analytics_edge.kinds import DETECTION_EVENT, SNAPSHOT, register_kinds
from analytics_edge.rules import EventType
from analytics_edge.tracking import Phase
from crypto.certificate import Certificate
from field.browser import CHROMIUM_ARGS
from field.deployment import DemoDeployment, create_demo_deployment
from field.harness import free_port, journal_messages, running_field, send_many, stopped_node_engine
from field.processes import FieldNode, node_config, operator_token, start_node, stop_all, wait_healthy
from field.radio import (
    Radio,
    buildings_toml,
    demo_alarm_message,
    emulator_toml,
    gateway_node_toml,
    lora_link_toml,
    start_emulator,
    start_gateway,
)
from relay.api.tokens import issue_token
from relay.bundle import Destination, Priority, to_epoch
from relay.daemon import ROSTER_DIR

VIEWPORT = {"width": 1280, "height": 900}
T = TypeVar("T")
# The README's screenshots: MESH112_SCREENSHOTS=docs/img pytest tests/test_console.py writes them there;
# otherwise they go to the test's temporary directory (a test run leaves the tree as it was).
SHOTS = os.environ.get("MESH112_SCREENSHOTS")


@pytest.fixture()
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=require_tool("chromium", "chromium"), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on a fresh loop in a worker thread: Playwright's sync API holds this one's."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def open_console(browser: Browser, api: str, token: str) -> Page:
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(f"{api}/#token={token}")
    expect(page.locator("#stream-state")).to_have_class("state up", timeout=15_000)
    return page


def assert_no_wider_than_window(page: Page) -> None:
    scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll <= inner, f"page is {scroll} px wide in a {inner} px window"


def test_send_to_all_reaches_every_node_and_a_dropped_stream_misses_nothing(
    tmp_path: Path, browser: Browser
) -> None:
    chain = ["command-post", "relay-1", "responder-1"]
    with running_field(tmp_path / "field", chain) as field:
        post, relay, responder = (field.node(slug) for slug in chain)
        dispatcher = operator_token(field.deployment, frozenset({"dispatcher"}), "Dispatcher Jana")
        page = open_console(browser, post.api, dispatcher)
        options = page.locator("#send-to option")
        expect(options.filter(has_text="Responder 1")).to_have_count(1, timeout=10_000)  # units by name
        expect(options.filter(has_text="role: responder")).to_have_count(1)
        page.select_option("#send-to", "all")
        page.fill("#send-text", "all units: water at shelter 3")
        page.click("#send-form button[type=submit]")
        expect(page.locator("#send-result")).to_contain_text("all", timeout=10_000)
        expect(page.locator("#send-error")).to_be_hidden()
        for node in (relay, responder):  # every field node journals it (opened with the "all" key)
            deadline = time.monotonic() + 30
            while not any(m[2] == "all units: water at shelter 3" for m in journal_messages(node)):
                assert time.monotonic() < deadline, f"{node.slug} never received the message to all"
                time.sleep(0.2)

        # Errors stay beside the control that caused them, through live updates, until dismissed.
        page.evaluate(
            """() => document.getElementById("send-to").append(new Option("nobody", "no-such-unit"))"""
        )
        page.select_option("#send-to", "no-such-unit")
        page.fill("#send-text", "lost")
        page.click("#send-form button[type=submit]")
        send_error = page.locator("#send-error")
        expect(send_error).to_contain_text("422", timeout=10_000)
        page.evaluate(
            """() => applyRecord({ record_id: "no-such-alarm", type: "alarm", origin: "00",
            priority: "FLASH", created: Date.now() / 1000, received: Date.now() / 1000, seq: 0,
            closed: null, acks: [], body: { summary: "a record the journal does not hold" } })"""
        )
        bogus = page.locator("#alarms li.card", has_text="a record the journal does not hold")
        bogus.locator("button.ack").click()
        expect(bogus.locator(".error")).to_contain_text("404", timeout=10_000)
        run_async(send_many(relay, field.token, f"node:{field.node_id('command-post')}", ["meanwhile"]))
        expect(page.locator("#messages tbody tr", has_text="meanwhile")).to_have_count(1, timeout=20_000)
        page.evaluate("scheduleAlarms()")
        expect(bogus.locator(".error")).to_contain_text("404")  # re-rendered, still there
        expect(send_error).to_be_visible()
        bogus.locator(".error button").click()
        expect(bogus.locator(".error")).to_have_count(0)
        send_error.locator("button").click()
        expect(send_error).to_be_hidden()
        page.evaluate("""() => { state.alarms.delete("no-such-alarm"); scheduleAlarms(); }""")

        page.select_option("#send-to", "group:incident-1")  # the demo's incident group
        page.fill("#send-text", "incident 1: regroup at the depot")
        page.click("#send-form button[type=submit]")
        expect(page.locator("#send-result")).to_contain_text("group:incident-1", timeout=10_000)
        deadline = time.monotonic() + 30
        while not any(m[2] == "incident 1: regroup at the depot" for m in journal_messages(responder)):
            assert time.monotonic() < deadline, "the incident group's member never received it"
            time.sleep(0.2)

        page.select_option("#send-to", "role:camera")  # a role no node here holds still seals
        page.fill("#send-text", "cameras: report")
        page.click("#send-form button[type=submit]")
        expect(page.locator("#send-result")).to_contain_text("role:camera", timeout=10_000)

        # The stream drops; while it is down the field keeps sending; on reconnect it resumes from
        # its cursor, and every message appears exactly once.
        texts = [f"drop test {i}" for i in range(20)]
        page.evaluate("mesh112.dropStream()")
        run_async(send_many(relay, field.token, f"node:{field.node_id('command-post')}", texts))
        deadline = time.monotonic() + 60  # all in the command post's journal while the page is away
        while len({m[2] for m in journal_messages(post)} & set(texts)) < len(texts):
            assert time.monotonic() < deadline, "the field's messages did not reach the command post"
            time.sleep(0.2)
        page.evaluate("mesh112.resumeStream()")
        for text in texts:
            row = page.locator("#messages tbody tr", has_text=re.compile(rf"{text}$"))
            expect(row).to_have_count(1, timeout=20_000)  # arrived, and only once
        expect(page.locator("#messages tbody tr", has_text=re.compile("drop test 3$"))).to_contain_text(
            "Field Relay 1"
        )

        observer = open_console(
            browser, post.api, operator_token(field.deployment, frozenset({"observer"}), "Observer")
        )
        expect(observer.locator("#units .row", has_text="Responder 1")).to_have_count(1)
        expect(observer.locator("#send-form")).to_have_count(0)
        expect(observer.locator("button", has_text="Send")).to_have_count(0)
        expect(observer.locator("button.ack")).to_have_count(0)
        health = page.locator("#links tbody tr", has_text="Field Relay 1")  # neighbours by name
        expect(health).to_contain_text("up", timeout=15_000)
        expect(page.locator("#plot-queue .uplot")).to_have_count(1)
        time.sleep(6)  # a second health reading: the plots draw lines, not points
        page.locator("#health-lane").screenshot(path=str(Path(SHOTS or tmp_path) / "console-health.png"))
        assert_no_wider_than_window(page)


HERE = Path(__file__).resolve().parent


def node_token(deployment: DemoDeployment, certificate: Certificate) -> str:
    """An API token for an enrolled node's own identity (a building operator at its gateway)."""
    expires = int(time.time()) + 3600
    return issue_token(deployment.authority.identity, certificate, expires)


async def preload_detections(camera: FieldNode, post_id: bytes, count: int) -> None:
    """``count`` detection events of 10 tracked objects, originated in the stopped camera's store."""
    now = time.time()
    async with stopped_node_engine(camera) as engine:
        register_kinds(engine.kinds)
        for seq in range(count):
            record = DetectionRecord(
                EventType.INTRUSION,
                Phase.UPDATE if seq >= 10 else Phase.START,
                Priority.IMMEDIATE,
                camera=1,
                rule=1,
                time=round(now - count + seq, 3),
                seq=seq,
                subject=seq % 10,
                box=(0.1, 0.1, 0.3, 0.6),
                score=0.9,
                count=1,
                dwell_s=seq // 10,
            )
            await engine.send(
                Destination.to_node(post_id),
                encode_event(record),
                kind=DETECTION_EVENT,
                priority=Priority.IMMEDIATE,
                lifetime=3600,
                now=to_epoch(time.time()),
            )
            if seq < 10:  # each tracked object's first event gets its (masked) snapshot
                snapshot = SnapshotRecord(1, seq, int(now), 160, 120, _jpeg(seq))
                await engine.send(
                    Destination.to_node(post_id),
                    encode_snapshot_record(snapshot),
                    kind=SNAPSHOT,
                    priority=Priority.BULK,
                    lifetime=3600,
                    now=to_epoch(time.time()),
                )


def _jpeg(shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (160, 120), (40 + shade * 20, 90, 140)).save(out, "JPEG", quality=70)
    return out.getvalue()


def test_sipp_alarm_banner_ack_reaches_the_building_and_survives_300_detections(
    tmp_path: Path, browser: Browser
) -> None:
    """SIPp (UAC) raises an alarm at the building gateway; it crosses LoRa to the command post; the
    console shows the FLASH banner; the operator acknowledges in the page; a SIPp UAS playing the
    building's panel receives the automatic receipt and the operator's acknowledgement."""
    sipp = require_tool("sipp", "sip-tester")
    root, logs = tmp_path / "field", tmp_path / "logs"
    logs.mkdir()
    deployment = create_demo_deployment(root)
    post, gateway, camera = (deployment.node(n) for n in ("Command Post", "Building Gateway", "Camera 1"))
    panel_port, api_port, post_ip, camera_api = (
        free_port(socket.SOCK_DGRAM),
        free_port(),
        free_port(),
        free_port(),
    )
    sip_port = free_port(socket.SOCK_DGRAM)
    radio_post = Radio("command-post", 0xA0000001, 0.0, free_port())
    radio_gateway = Radio("building-gateway", 0xA0000003, 900.0, free_port())
    emulator = root / "lora-emulator.toml"
    emulator.write_text(emulator_toml((radio_post, radio_gateway), speedup=20.0))
    post.config.write_text(
        node_config(post.name, post.roles, api_port, post_ip, [])
        + lora_link_toml(radio_post, {radio_gateway.num: gateway.node_id})
    )
    gateway.config.write_text(gateway_node_toml(gateway.name, radio_gateway, {radio_post.num: post.node_id}))
    camera.config.write_text(node_config(camera.name, camera.roles, camera_api, free_port(), [post_ip]))
    for node in (post, gateway, camera):
        (node.directory / "buildings.toml").write_text(buildings_toml(panel_port, digest_secret=None))
        roster = node.directory / ROSTER_DIR
        roster.mkdir(exist_ok=True)
        for other in deployment.nodes:
            (roster / f"{other.node_id.hex()}.cert").write_bytes(other.certificate.encode())
    field_post = FieldNode("command-post", post.directory, api_port, post_ip)
    field_camera = FieldNode("camera-1", camera.directory, camera_api, 0)
    run_async(preload_detections(field_camera, post.node_id, 300))
    token = operator_token(deployment, frozenset({"dispatcher"}), "Operator Jana Nováková")

    panel_log = logs / "panel-uas.log"
    uas = subprocess.Popen(  # the building's panel: must get the receipt and the operator's ack
        [
            sipp,
            "-sf",
            str(HERE / "sipp" / "console_panel_uas.xml"),
            "-t",
            "u1",
            "-i",
            "127.0.0.1",
            "-p",
            str(panel_port),
            "-m",
            "2",
            "-nostdin",
            "-timeout",
            "120s",
            "-timeout_error",
            "-trace_err",
        ],
        cwd=tmp_path,
        stdout=panel_log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    processes = [uas, start_emulator(emulator, logs / "emulator.log")]
    try:
        time.sleep(1.0)
        processes.append(start_node(field_post, logs))
        buildings = gateway.config.parent / "buildings.toml"
        processes.append(
            start_gateway(gateway.config, buildings, sip_port, logs / "gateway.log", post.node_id)
        )
        wait_healthy([field_post], 30.0)
        deadline = time.monotonic() + 30
        while "ng112 gateway listening" not in (logs / "gateway.log").read_text():
            assert time.monotonic() < deadline, (logs / "gateway.log").read_text()[-2000:]
            time.sleep(0.3)
        page = open_console(browser, field_post.api, token)
        statuses: list[int] = []
        page.on("response", lambda response: statuses.append(response.status))

        uac = subprocess.run(
            [
                sipp,
                "-sf",
                str(HERE / "sipp" / "alarm_uac.xml"),
                "-inf",
                str(HERE / "sipp" / "xxe.csv"),
                "-i",
                "127.0.0.1",
                "-nostdin",
                "-timeout",
                "20s",
                "-timeout_error",
                "-m",
                "1",
                "-t",
                "u1",
                "-p",
                str(free_port(socket.SOCK_DGRAM)),
                f"127.0.0.1:{sip_port}",
            ],
            cwd=tmp_path,
            capture_output=True,
            timeout=40,
        )
        assert uac.returncode == 0, uac.stdout.decode()[-2000:]
        expect(page.locator("#banner")).to_be_visible(timeout=60_000)
        expect(page.locator("#banner")).to_contain_text("Example Office Tower")
        card = page.locator("#alarms li.card.alarm").first
        expect(card).to_contain_text("Example Office Tower")
        page.screenshot(path=str(Path(SHOTS or tmp_path) / "console-alarm.png"))
        page.click("#mute")  # the beep stops; the banner stays
        expect(page.locator("#mute")).to_have_attribute("aria-pressed", "true")
        expect(page.locator("#banner")).to_be_visible()
        card.locator("button.details").click()  # everything the alarm carries
        expect(page.locator("#detail")).to_be_visible()
        expect(page.locator("#detail .building-data")).to_contain_text("Facility desk +43 1 555 0100")
        expect(page.locator("#detail")).to_contain_text("CAP 1.2")
        page.click("#detail form button")
        card.locator("select.ack-code").select_option("dispatched")
        page.evaluate("renderAlarms()")  # a live update redraws the card: the choice stays
        card.locator("button.ack").click()
        expect(card.locator(".acks li")).to_contain_text("dispatched", timeout=10_000)
        expect(page.locator("#banner")).to_be_hidden()
        assert uas.wait(90) == 0, panel_log.read_text()[-3000:]  # receipt + operator ack received
        expect(card.locator(".acks li")).to_contain_text("delivered to the building", timeout=60_000)
        messages = (tmp_path / "panel.msgs").read_text() if (tmp_path / "panel.msgs").exists() else ""
        assert not messages or "Operator Jana" in messages

        # A building operator (signed in as its gateway) sees its alarm and nothing else; another
        # building's operator sees none of it.
        building = browser.new_page(viewport=VIEWPORT)
        building.goto(f"{field_post.api}/#token={node_token(deployment, gateway.certificate)}")
        expect(building.locator("#alarms li.card.alarm", has_text="Example Office Tower")).to_have_count(1)
        expect(building.locator("#units-lane, #messages-lane, #detection-lane, button.ack")).to_have_count(0)
        other = browser.new_page(viewport=VIEWPORT)
        other.goto(f"{field_post.api}/#token={operator_token(deployment, frozenset({'building'}), 'Other')}")
        expect(other.locator("#stream-state")).to_have_class("state up", timeout=15_000)
        expect(other.locator("#alarm-count")).to_have_text("0")

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sip:  # an Exercise alarm looks different
            sip.sendto(demo_alarm_message(time.time()), ("127.0.0.1", sip_port))
        exercise = page.locator("#alarms li.card.alarm.exercise")
        expect(exercise).to_have_count(1, timeout=60_000)
        expect(exercise.locator(".badge.status")).to_have_text("EXERCISE")
        expect(page.locator("#alarms li.card.alarm.actual")).to_have_count(1)

        processes.append(start_node(field_camera, logs))  # 300 detections arrive over IP
        expect(page.locator("#detection-count")).to_have_text("10", timeout=60_000)  # 10 tracked objects
        deadline = time.monotonic() + 60
        while page.evaluate("mesh112.detectionRecords()") < 300:
            assert time.monotonic() < deadline, "300 detections did not reach the page"
            time.sleep(0.3)
        expect(page.locator("#alarms li.card.alarm.actual", has_text="Example Office Tower")).to_be_visible()
        thumbs = page.locator("#detections img.thumb")  # snapshots as pictures, never base64 text
        expect(thumbs).to_have_count(10, timeout=30_000)
        assert thumbs.first.get_attribute("src").startswith("data:image/jpeg;base64,/9j/")
        assert thumbs.first.evaluate("img => img.complete && img.naturalWidth") == 160
        assert "/9j/" not in page.inner_text("body")
        assert 429 not in statuses, "the console made the operator's own rate limit answer 429"
        assert_no_wider_than_window(page)
        page.locator("#detections li.card").first.locator(".meta").first.wait_for()
        page.screenshot(path=str(Path(SHOTS or tmp_path) / "console-overview.png"))
        page.select_option("#lang", "cs")  # Czech, with Czech dates and numbers
        expect(page.locator("#alarm-lane h2")).to_contain_text("Poplachy", timeout=15_000)
        expect(page.locator("#alarms li.card.alarm.actual")).to_contain_text("vysláno")
        page.screenshot(path=str(Path(SHOTS or tmp_path) / "console-cs.png"))
    finally:
        stop_all(processes)
