"""Every screen of the real app under Xvfb with real content: an NG112 alarm and a message the
command post forwards to the responder, the offline map drawn from a test MBTiles file with no
network (and a grid without one), day and night, English and Czech. With ``MESH112_APP_SHOTS=DIR``
the screenshots are kept there (the README's come from this test)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mobile_display import Driven, xvfb
from mobile_tiles import TILE_COLOUR, make_mbtiles
from PIL import Image

from field.harness import running_field, stopped_node_engine
from field.processes import FieldNode
from ng112.hazards import Hazard
from ng112.kinds import NG112_ALARM, register_kinds
from ng112.record import AlarmRecord, encode_record
from relay.bundle import Destination, Kind, Priority, to_epoch

HERE = (50.0875, 14.4213)
SHOTS = ("sos", "incident", "messages", "map", "links", "confirm", "sos-delivered", "night", "cs")


@pytest.fixture
def display() -> Iterator[str]:
    with xvfb() as name:
        yield name


async def _forward_alarm(post: FieldNode, responder: bytes) -> None:
    """What the command post forwards to a crew, made by the (stopped) post's own engine."""
    alarm = AlarmRecord(
        msg_type="Alert",
        status="Actual",
        key_id=0x1F2E3D4C,
        seq=17,
        sent=int(time.time()) - 90,
        categories=("Fire",),
        code=Hazard.FIRE,
        urgency="Immediate",
        severity="Severe",
        certainty="Observed",
        lat_e7=round((HERE[0] + 0.0012) * 1e7),
        lon_e7=round((HERE[1] - 0.0015) * 1e7),
        floor=2,
        zone="B2-Z14",
        text="Evacuate floor 2; use stairwell B",
    )
    async with stopped_node_engine(post) as engine:
        register_kinds(engine.kinds)
        now = to_epoch(time.time())
        to = Destination.to_node(responder)
        await engine.send(
            to, encode_record(alarm), kind=NG112_ALARM, priority=Priority.FLASH, lifetime=3600, now=now
        )
        text = b"Crew 2 is 5 min out; meet at gate A"
        await engine.send(to, text, kind=Kind.TEXT, priority=Priority.PRIORITY, lifetime=3600, now=now)


def _tile_share(path: Path) -> float:
    """The share of the map's pixels painted in the test tiles' paper colour."""
    image = Image.open(path).convert("RGB")
    width, height = image.size
    box = image.crop((0, int(height * 0.15), width, int(height * 0.75))).resize((90, 100))
    raw = box.tobytes()
    pixels = [raw[i : i + 3] for i in range(0, len(raw), 3)]
    paper = sum(1 for p in pixels if all(abs(a - b) < 8 for a, b in zip(p, TILE_COLOUR, strict=True)))
    return paper / len(pixels)


def test_every_screen_with_real_content(tmp_path: Path, display: str) -> None:
    shots = tmp_path / "shots"
    shots.mkdir()
    with running_field(tmp_path, ("command-post", "responder-1"), started=()) as field:
        node = field.node("responder-1").directory
        tiles = make_mbtiles(node / "map.mbtiles", *HERE)
        (node / "app.toml").write_text(f'position = [{HERE[0]}, {HERE[1]}]\nmbtiles = "map.mbtiles"\n')
        asyncio.run(_forward_alarm(field.node("command-post"), bytes.fromhex(field.node_id("responder-1"))))
        field.start_healthy("command-post")
        shot = {name: str(shots / f"app-{name}.png") for name in SHOTS}
        actions = [
            "wait:alarms=1",
            "wait:message=received",
            f"shot:{shot['sos']}",
            "show:incident",
            f"shot:{shot['incident']}",
            "show:messages",
            "tap:messages.canned_on_scene",
            "wait:message=delivered",
            f"shot:{shot['messages']}",
            "show:map",
            "map",
            f"shot:{shot['map']}",
            "show:links",
            f"shot:{shot['links']}",
            "show:sos",
            "hold:sos.hold:1.8",
            f"shot:{shot['confirm']}",
            "tap:confirm.send",
            "wait:sos=delivered",
            f"shot:{shot['sos-delivered']}",
            "night",
            f"shot:{shot['night']}",
            "night",
            "targets",
            "language",
            "show:incident",
            "targets",
            f"shot:{shot['cs']}",
            "quit",
        ]
        app = Driven(display, node, actions, tmp_path / "kivy", tmp_path / "logs" / "app.log")
        try:
            app.expect(60, done=True)
            assert app.stop() == 0
        finally:
            app.stop()
    english, czech = [line for line in app.lines if "smallest_target_dp" in line]
    assert english["smallest_target_dp"] >= 48 and czech["smallest_target_dp"] >= 48, (english, czech)
    assert english["tabs"][1:3] == ["Incident (1)", "Messages"] and czech["tabs"][1:3] == [
        "Zásah (1)",
        "Zprávy",
    ]
    (map_line,) = [line for line in app.lines if "map_tiles" in line]
    assert tiles == 50 and map_line["map_tiles"] >= 4 and map_line["map_note"] == "", map_line
    assert _tile_share(Path(shot["map"])) > 0.3  # the tiles, not a grid on the background
    assert _tile_share(Path(shot["sos"])) < 0.01
    for path in shot.values():
        assert Image.open(path).size == (540, 960)
    keep = os.environ.get("MESH112_APP_SHOTS")
    if keep:
        for path in shot.values():
            shutil.copy(path, Path(keep) / Path(path).name)


def test_map_without_tiles_draws_a_grid(tmp_path: Path, display: str) -> None:
    with running_field(tmp_path, ("command-post", "responder-1"), started=()) as field:
        node = field.node("responder-1").directory
        (node / "app.toml").write_text(f"position = [{HERE[0]}, {HERE[1]}]\n")
        shot = tmp_path / "grid.png"
        app = Driven(
            display,
            node,
            ["show:map", "map", f"shot:{shot}", "quit"],
            tmp_path / "kivy",
            tmp_path / "app.log",
        )
        try:
            line = app.expect(60, action="map")
            line = app.expect(10, map_note="grid")
            assert line["map_tiles"] == 0
            app.expect(30, done=True)
        finally:
            app.stop()
    assert _tile_share(shot) == 0
