"""The console's "Live video" panel: a real command post process with a webrtc link, a field unit
running ``mesh112 video stream`` as its own process (offer and answer as FLASH bundles over their IP
link), and Debian Chromium (Playwright) opening the console, clicking the unit's video and decoding
its frames. The frames are read back from the page's pixels (the stamp the unit paints into them),
and a second console shares the unit's one uplink. The command post's video session records
(answered, refused, SOS) show in that panel by unit name, never in the Alarms queue, live and after a
reload alike."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import auth
from playwright.sync_api import Browser, Page, expect, sync_playwright
from system_tools import require_tool

from analytics_edge.kinds import CLIP
from analytics_edge.live import read_stamp
from crypto.keystore import load_node_keys
from field.browser import WEBRTC_ARGS
from field.deployment import create_demo_deployment
from field.harness import free_port_base, running_field, stopped_node_engine
from field.processes import FieldNode, operator_token, start_node, stop_all, wait_healthy, write_field
from mobile.kinds import SOS, register_kinds
from mobile.sos import SosRecord, encode_sos
from relay.bundle import Destination, Kind, Priority, to_epoch
from relay.links.webrtc import WebRtcLink
from relay.links.webrtc_config import WebRtcLinkOptions

# MESH112_SCREENSHOTS=docs/img writes the README's screenshot there; otherwise the test's temp dir.
SHOTS = os.environ.get("MESH112_SCREENSHOTS")
TILE_PIXELS_JS = """
(node) => {
  const video = document.querySelector(`.video-tile[data-node="${node}"] video`);
  if (!video || !video.videoWidth) return null;
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth; canvas.height = video.videoHeight;
  const context = canvas.getContext('2d');
  context.drawImage(video, 0, 0);
  return {width: canvas.width, height: canvas.height, time: video.currentTime,
          rgba: Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data)};
}
"""


def _stamp(shot: dict[str, object]) -> int | None:
    rgba = np.array(shot["rgba"], dtype=np.uint8).reshape(int(shot["height"]), int(shot["width"]), 4)  # type: ignore[call-overload]
    stamped = read_stamp(rgba[..., :3])
    return None if stamped is None else stamped[0]


@dataclass
class Streaming:
    post: FieldNode
    unit: str  # node id (hex)
    token: str  # a dispatcher's
    command: list[str]  # the unit's mesh112 video stream
    log: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_unit(self) -> None:
        with self.log.open("ab") as log:
            self.processes.append(
                subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            )

    def kill_unit(self) -> None:
        unit = self.processes.pop()
        os.kill(unit.pid, signal.SIGKILL)
        unit.wait(10)


@pytest.fixture()
def streaming(tmp_path: Path) -> Iterator[Streaming]:
    """The command post (API, webrtc link) and a unit streaming to it."""
    deployment = create_demo_deployment(tmp_path)
    post_node, unit_node = write_field(
        deployment,
        api_port=free_port_base(2),
        ip_port=free_port_base(2),
        chain=("command-post", "responder-1"),
    )
    post_id = deployment.node("Command Post").node_id.hex()
    with post_node.config.open("a") as config:
        config.write('\n[[links]]\ntype = "webrtc"\n')
    unit_config = unit_node.config.read_text().replace("[api]\nenabled = true", "[api]\nenabled = false")
    unit_node.config.write_text(unit_config + f'\n[[links]]\ntype = "webrtc"\npeers = ["{post_id}"]\n')
    logs = tmp_path / "logs"
    logs.mkdir()
    command = [sys.executable, "-m", "relay", "video", "stream", "--node", str(unit_node.config)]
    command += ["--to", post_id, "--sos", "--kbps", "256", "--seconds", "150", "--fallback-after", "0"]
    token = operator_token(deployment, frozenset({"dispatcher"}), "dispatcher op")
    unit = deployment.node("Responder 1").node_id.hex()
    streaming = Streaming(post_node, unit, token, command, logs / "unit.log", [start_node(post_node, logs)])
    try:
        wait_healthy([post_node])
        streaming.start_unit()
        yield streaming
    finally:
        stop_all(streaming.processes)


def _webrtc(post: FieldNode, token: str) -> dict[str, object]:
    listed = httpx.get(f"{post.api}/api/v1/webrtc", headers=auth(token), timeout=10).json()
    assert len(listed) == 1, listed
    return dict(listed[0])


def _watch(page: Page, post: FieldNode, unit: str, token: str) -> list[int]:
    """Open the console, click the unit's video; the frame numbers read from two decoded frames."""
    page.goto(f"{post.api}/#token={token}")
    button = page.locator(f'#video-streams button[data-node="{unit}"]')
    button.wait_for(timeout=30_000)
    button.click()
    page.wait_for_function(
        f"document.querySelector('.video-tile[data-node=\"{unit}\"] video')?.currentTime > 0.5",
        timeout=30_000,
    )
    first = page.evaluate(TILE_PIXELS_JS, unit)
    page.wait_for_timeout(1500)
    second = page.evaluate(TILE_PIXELS_JS, unit)
    assert first["width"] > 0 and second["time"] > first["time"] + 0.5, "the tile's video must keep playing"
    numbers = [_stamp(first), _stamp(second)]
    assert all(n is not None for n in numbers), "the tile's frames must carry the unit's stamp"
    return [int(n) for n in numbers if n is not None]


@pytest.fixture()
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=require_tool("chromium", "chromium"), headless=True, args=WEBRTC_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


def _wait_stream(post: FieldNode, unit: str, token: str) -> None:
    deadline = time.monotonic() + 60
    while unit not in _webrtc(post, token)["streams"]:  # type: ignore[operator]
        assert time.monotonic() < deadline, "the unit's video never reached the command post"
        time.sleep(0.5)


def test_the_console_shows_a_unit_s_live_video_to_two_viewers_over_one_uplink(
    streaming: Streaming, browser: Browser, tmp_path: Path
) -> None:
    post, unit, token = streaming.post, streaming.unit, streaming.token
    _wait_stream(post, unit, token)
    assert _webrtc(post, token)["viewers"] == 0

    first = browser.new_page(viewport={"width": 1280, "height": 900})
    first.goto(f"{post.api}/#token={token}")  # the unit's SOS request: a strip, not an alarm
    expect(first.locator(f'#video-sos .sos-call[data-node="{unit}"]')).to_contain_text(
        "Responder 1", timeout=30_000
    )
    expect(first.locator(f'#video-streams li.sos[data-node="{unit}"] .session-state')).to_have_text(
        "connected"
    )
    expect(first.locator("#alarm-count")).to_have_text("0")
    numbers = _watch(first, post, unit, token)
    assert numbers[1] > numbers[0], f"frames must advance in the tile, read {numbers}"
    expect(first.locator("#video-sos")).to_be_hidden()  # a tile shows the unit now
    second = browser.new_page(viewport={"width": 1280, "height": 900})
    later = _watch(second, post, unit, token)
    assert later[0] > numbers[0]
    listed = _webrtc(post, token)
    assert listed["viewers"] == 2 and listed["streams"] == [unit] and listed["peers_up"] == [unit], listed

    first.locator("#video-lane").scroll_into_view_if_needed()
    first.wait_for_timeout(500)
    first.screenshot(path=str(Path(SHOTS or tmp_path) / "console-video.png"))
    first.locator(f'.video-tile[data-node="{unit}"] .video-close').click()
    assert first.locator(".video-tile").count() == 0
    deadline = time.monotonic() + 15
    while _webrtc(post, token)["viewers"] != 1:
        assert time.monotonic() < deadline, "a closed tile must leave the command post's viewers"
        time.sleep(0.3)

    # The unit dies (kill -9) and comes back: a new stream, and the open tile plays it with no click.
    tile = f'.video-tile[data-node="{unit}"] video'
    second.evaluate(f"window.oldPc = window.mesh112video.get('{unit}').pc")
    streaming.kill_unit()
    streaming.start_unit()
    second.wait_for_function(
        f"window.mesh112video.get('{unit}')?.pc !== window.oldPc"
        f" && document.querySelector('{tile}')?.currentTime > 0.5",
        timeout=60_000,
    )
    before = second.evaluate(TILE_PIXELS_JS, unit)
    second.wait_for_timeout(1500)
    after = second.evaluate(TILE_PIXELS_JS, unit)
    stamps = [_stamp(before), _stamp(after)]
    assert None not in stamps and stamps[1] > stamps[0], f"the reopened tile must play, read {stamps}"  # type: ignore[operator]
    assert _webrtc(post, token)["streams"] == [unit]


async def _offer(unit: FieldNode, post_id: bytes, *, sos: bool = False, age: float = 0.0) -> bytes:
    """A real offer signed by ``unit``'s identity for the command post, made ``age`` seconds ago."""
    identity = load_node_keys(unit.directory, int(time.time())).identity
    link = WebRtcLink(
        WebRtcLinkOptions(), identity, lambda node, now: identity.public, clock=lambda: time.time() - age
    )
    try:
        return await link.offer(post_id, sos=sos)
    finally:
        await link.stop()


async def _originate(unit: FieldNode, post_id: bytes, bundles: list[tuple[int, bytes, Priority]]) -> None:
    """Bundles (kind, payload, priority) to the command post, originated in the stopped unit's store."""
    async with stopped_node_engine(unit) as engine:
        register_kinds(engine.kinds)
        engine.kinds.register(CLIP, "evidence_clip")  # no validator: a clip the command post refuses
        for kind, payload, priority in bundles:
            destination = Destination.to_node(post_id)
            await engine.send(
                destination, payload, kind=kind, priority=priority, lifetime=300, now=to_epoch(time.time())
            )


def _preload(units: dict[str, FieldNode], post_id: bytes) -> None:
    async def preload() -> None:
        signal_kind = int(Kind.WEBRTC_SIGNAL)
        await _originate(
            units["relay-1"],
            post_id,
            [
                (signal_kind, await _offer(units["relay-1"], post_id), Priority.IMMEDIATE),  # answered
                (CLIP, b"not a clip", Priority.IMMEDIATE),  # another application's IMMEDIATE record
            ],
        )
        sos = encode_sos(SosRecord(1, int(time.time()), text="trapped on the 2nd floor"))
        sos_video = await _offer(units["responder-1"], post_id, sos=True)
        await _originate(
            units["responder-1"],
            post_id,
            [(SOS, sos, Priority.FLASH), (signal_kind, sos_video, Priority.FLASH)],  # an alarm, an SOS video
        )
        stale = await _offer(units["relay-2"], post_id, age=1000)  # refused: older than signal_max_age
        await _originate(units["relay-2"], post_id, [(signal_kind, stale, Priority.IMMEDIATE)])

    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API holds this thread's event loop
        pool.submit(asyncio.run, preload()).result()


def _expect_sessions_apart_from_alarms(page: Page, ids: dict[str, str]) -> None:
    alarms = page.locator("#alarms li.card")
    expect(alarms.filter(has_text="SOS from Responder 1: trapped on the 2nd floor")).to_have_count(
        1, timeout=30_000
    )
    expect(alarms.filter(has_text="clip · Field Relay 1")).to_have_count(1, timeout=30_000)  # not its raw id
    expect(alarms).to_have_count(2)
    expect(page.locator("#alarm-count")).to_have_text("2")
    rows = page.locator("#video-streams li")
    sos = page.locator(f'#video-streams li[data-node="{ids["responder-1"]}"]')
    expect(sos).to_contain_text("Responder 1", timeout=30_000)
    expect(sos).to_have_class("sos")
    expect(sos.locator(".badge")).to_have_text("SOS video")
    expect(rows.filter(has_text="Field Relay 1")).to_contain_text(re.compile("connecting…|not connected"))
    expect(rows.filter(has_text="Field Relay 2")).to_contain_text("refused: signal from node")
    expect(rows).to_have_count(3)
    expect(page.locator("#video-sos")).to_be_visible()
    expect(page.locator("#video-sos .sos-call")).to_have_text(re.compile("^SOS videoResponder 1: "))
    assert "webrtc-" not in page.inner_text("body")


def test_video_sessions_show_in_the_video_panel_by_unit_never_as_alarms_live_or_after_a_reload(
    tmp_path: Path, browser: Browser
) -> None:
    chain = ["command-post", "relay-1", "relay-2", "responder-1"]
    with running_field(tmp_path / "field", chain, started=[]) as field:
        with field.node("command-post").config.open("a") as config:
            config.write('\n[[links]]\ntype = "webrtc"\n')
        post_id = bytes.fromhex(field.node_id("command-post"))
        _preload({slug: field.node(slug) for slug in chain[1:]}, post_id)
        field.start_healthy("command-post")
        token = operator_token(field.deployment, frozenset({"dispatcher"}), "Dispatcher Jana")
        ids = {slug: field.node_id(slug) for slug in chain}
        live = browser.new_page(viewport={"width": 1280, "height": 900})
        live.goto(f"{field.node('command-post').api}/#token={token}")
        expect(live.locator("#stream-state")).to_have_class("state up", timeout=15_000)
        for slug in chain[1:]:  # everything arrives while the page is open
            field.start(slug)
        _expect_sessions_apart_from_alarms(live, ids)
        reloaded = browser.new_page(viewport={"width": 1280, "height": 900})
        reloaded.goto(f"{field.node('command-post').api}/#token={token}")
        _expect_sessions_apart_from_alarms(reloaded, ids)  # the first load places them alike
        reloaded.screenshot(path=str(Path(SHOTS or tmp_path) / "console-sessions.png"), full_page=True)
        reloaded.select_option("#lang", "cs")
        expect(reloaded.locator("#video-lane h2")).to_have_text("Živé video", timeout=15_000)
        expect(reloaded.locator("#video-streams")).to_contain_text("odmítnuto", timeout=15_000)
