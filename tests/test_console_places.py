"""Buildings from enrolment and cameras on the console's map, in Debian's Chromium (Playwright).

Real relay processes on loopback: the command post (with the demo's ``buildings.toml`` in its data
directory, as ``mesh112 demo`` writes it), the demo's building gateway dialling it over IP, and the
demo camera (``mesh112 camera run`` with the demo's ``camera.toml``, which carries its position)
dialling the gateway. The page draws the building and the camera on the map by name, lists the
camera with its position among the units, and the alarm's detail shows the building's contacts.
``MESH112_SCREENSHOTS=docs/img`` writes docs/img/console-map.png (the map with the building's popup).
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from playwright.sync_api import expect
from system_tools import require_tool
from test_console import SHOTS, browser, free_port, open_console  # noqa: F401 (fixture)

from field.camera import write_camera
from field.harness import running_field
from field.processes import operator_token
from field.radio import PANEL_SECRET, buildings_toml, demo_alarm_message, start_gateway

CHAIN = ["command-post", "building-gateway", "camera-1"]  # each dials the one before


def test_building_and_camera_on_the_map_and_the_alarm_shows_enrolment(tmp_path: Path, browser) -> None:  # noqa: F811
    root = tmp_path / "field"
    with running_field(root, CHAIN, started=[]) as field:
        post, gateway, camera = (field.node(slug) for slug in CHAIN)
        for node in (post, gateway):  # as the demo writes it: the gateway and the command post
            (node.directory / "buildings.toml").write_text(buildings_toml(free_port(socket.SOCK_DGRAM)))
        field.start_healthy("command-post")
        logs = root / "logs"
        sip_port = free_port(socket.SOCK_DGRAM)
        field.processes["gateway"] = start_gateway(
            gateway.config, gateway.directory / "buildings.toml", sip_port, logs / "gateway.log",
            bytes.fromhex(field.node_id("command-post")),
        )  # fmt: skip
        config, clip = write_camera(camera.directory, logs / "camera.log")
        command = [
            sys.executable,
            "-m",
            "relay",
            "camera",
            "run",
            "--source",
            str(clip),
            "--config",
            str(config),
        ]
        command += ["--node", str(camera.config), "--to", field.node_id("command-post")]
        command += ["--max-frames", "10", "--linger", "120"]  # up long enough to hand its bundles on
        field.processes["camera"] = subprocess.Popen(
            command, stdout=(logs / "camera.log").open("ab"), stderr=subprocess.STDOUT, start_new_session=True
        )

        buildings = httpx.get(
            f"{post.api}/api/v1/apps/alarm/buildings", headers={"Authorization": f"Bearer {field.token}"}
        ).json()
        assert [b["name"] for b in buildings] == ["Example Office Tower"]
        assert buildings[0]["contacts"] == ["Facility desk +43 1 555 0100"]
        assert "digest_secret" not in buildings[0] and "demo-panel-secret" not in str(buildings)

        token = operator_token(field.deployment, frozenset({"dispatcher"}), "Dispatcher Jana")
        page = open_console(browser, post.api, token)
        markers = page.locator(".leaflet-marker-pane .place")
        expect(markers.filter(has_text="Example Office Tower")).to_have_class(
            re.compile(r"\bplace building\b"), timeout=15_000
        )
        markers.filter(has_text="Example Office Tower").click()  # the popup: what enrolment says
        expect(page.locator(".leaflet-popup-content")).to_contain_text("Diesel tank in basement")
        expect(page.locator(".leaflet-popup-content")).to_contain_text("Facility desk +43 1 555 0100")

        camera_marker = markers.filter(has_text="Camera 1")
        expect(camera_marker).to_have_count(1, timeout=90_000)  # its position crossed two IP hops
        expect(camera_marker).to_have_class(re.compile(r"\bplace camera\b"))
        expect(page.locator("#units .row", has_text="Camera 1")).to_contain_text("48.20832, 16.37245")

        deadline = time.monotonic() + 30
        while "ng112 gateway listening" not in (logs / "gateway.log").read_text():
            assert time.monotonic() < deadline, (logs / "gateway.log").read_text()[-2000:]
            time.sleep(0.3)
        message = tmp_path / "alarm.sip"  # the demo's Exercise fire alarm, sent as its panel does
        message.write_bytes(demo_alarm_message(time.time()))
        target, listen = f"sip:ng112@127.0.0.1:{sip_port}", str(free_port(socket.SOCK_DGRAM))
        panel = ["-E", "udp", "-l", listen, "-u", "fire-panel-17", "-a", PANEL_SECRET]
        sent = subprocess.run(
            [require_tool("sipsak", "sipsak"), "-vv", "-f", str(message), "-s", target, *panel],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert sent.returncode == 0 and "200 OK" in sent.stdout, sent.stdout[-2000:]
        card = page.locator("#alarms li.card.alarm", has_text="Example Office Tower")
        expect(card).to_have_count(1, timeout=60_000)
        card.locator("button.details").click()
        section = page.locator("#detail .building-data")
        expect(section).to_contain_text("Building data from enrolment")
        expect(section).to_contain_text("Facility desk +43 1 555 0100")
        expect(section).to_contain_text("Diesel tank in basement")
        expect(section).to_contain_text("-2..12")
        page.screenshot(path=str(Path(SHOTS or tmp_path) / "console-detail.png"))
        page.click("#detail form button")
        page.locator("#map-lane").screenshot(path=str(Path(SHOTS or tmp_path) / "console-map.png"))
