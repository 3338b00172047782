"""`mesh112 camera ...` and the camera TOML: a dry run end to end, and config errors that name the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import skimage.data
from PIL import Image

from analytics_edge import synthetic
from analytics_edge.config import CameraConfigError, load_camera_config
from analytics_edge.rules import CrowdRule, IntrusionRule
from relay.bundle import Priority
from relay.cli import main

CAMERA_TOML = """
[camera]
number = 1
fps = 5

[detector]
type = "ssdlite_person"
threads = 1

[snapshots]
max_bytes = 16000

[[zones]]
name = "restricted"
points = [[400, 0], [640, 0], [640, 360], [400, 360]]
area_m2 = 40

[[rules]]
type = "intrusion"
zone = "restricted"
priority = "flash"

[[rules]]
type = "crowd"
zone = "restricted"
min_count = 5
min_density = 0.5
"""


def test_config_builds_rules(tmp_path: Path) -> None:
    path = tmp_path / "camera.toml"
    path.write_text(CAMERA_TOML)
    config = load_camera_config(path)
    rules = config.build_rules()
    assert isinstance(rules[0], IntrusionRule) and rules[0].priority is Priority.FLASH
    assert isinstance(rules[1], CrowdRule) and rules[1].min_density == 0.5
    assert config.pipeline.camera == 1 and config.pipeline.snapshot_max_bytes == 16000
    assert config.position is None
    path.write_text(CAMERA_TOML.replace("fps = 5", "fps = 5\nlat = 49.7475\nlon = 13.3776", 1))
    assert load_camera_config(path).position == (49.7475, 13.3776)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("number = 1", "number = 300"), "number must be 0-255"),
        (('zone = "restricted"\npriority', 'zone = "nowhere"\npriority'), "no zone named 'nowhere'"),
        (('type = "crowd"', 'type = "riot"'), "type must be one of"),
        (("min_count = 5", "min_count = 5\nthreshold = 2"), "unknown option"),
        (('priority = "flash"', 'priority = "urgent"'), "priority must be one of"),
        (("[snapshots]", "[snapshot]"), "unknown section"),
        (("area_m2 = 40", "area_m2 = 40\n["), "not valid TOML"),
        (("fps = 5", 'fps = "fast"'), "fps has the wrong type"),
        (("fps = 5", "fps = 5\nlat = 49.7"), "both lat and lon"),
        (("fps = 5", "fps = 5\nlat = 91\nlon = 13"), "not a place on Earth"),
    ],
)
def test_config_errors_name_the_problem(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    path = tmp_path / "camera.toml"
    path.write_text(CAMERA_TOML.replace(*change, 1))
    with pytest.raises(CameraConfigError, match=message):
        load_camera_config(path)


def test_camera_run_dry_run_prints_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "camera.toml"
    config.write_text(CAMERA_TOML)
    clip = synthetic.write_clip(synthetic.entering_zone(duration_s=5.0), tmp_path / "clip.mkv")
    assert main(["camera", "run", "--source", str(clip), "--config", str(config)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    event = lines[0]
    assert event["kind"] == 40 and event["bytes"] == 32 and event["priority"] == "FLASH"
    assert event["event"]["event"] == "intrusion" and event["event"]["camera"] == 1
    assert lines[1]["kind"] == 41 and lines[1]["bytes"] <= 16000
    assert lines[-1]["summary"]["frames"] == 25


def test_camera_detect_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(image)
    assert main(["camera", "detect", str(image), "--snapshot", str(tmp_path / "s.jpg")]) == 0
    (found,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert found["label"] == "person" and (tmp_path / "s.jpg").read_bytes()[:2] == b"\xff\xd8"
    missing = ["camera", "run", "--source", str(tmp_path / "none.mp4"), "--config", str(tmp_path / "x")]
    assert main(missing) == 1  # a failure at run time, not a wrong command line
    assert "mesh112:" in capsys.readouterr().err
