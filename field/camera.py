"""The demo field's camera box: a node that watches a generated clip and sends events, not video.

The camera runs ``mesh112 camera run`` (from ``analytics_edge``, started as a process, so ``relay``
imports nothing above it) on a synthetic clip of a person entering a restricted zone, looped in real
time. Its intrusion events (32 bytes each) and face-blurred snapshots travel through the relays to
the command post, where the dashboard lists them as detection records. The camera reports its
configured position once at start, so the console lists and maps it beside the demo building.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CAMERA_SLUG = "camera-1"
CLIP_SCENE = "entering_zone"

CAMERA_TOML = """# Written by mesh112 demo: the demo camera watching a generated clip.
[camera]
number = 1
fps = 5
lat = 48.20832  # on Stephansplatz, facing the demo building: reported once at start, for the map
lon = 16.37245

[snapshots]
enabled = true

[[zones]]
name = "restricted"
points = [[400, 0], [640, 0], [640, 360], [400, 360]]

[[rules]]
type = "intrusion"
zone = "restricted"
"""


def write_camera(directory: Path, log: Path) -> tuple[Path, Path]:
    """The camera's config and its clip (generated once; about 8 s of video)."""
    config = directory / "camera.toml"
    config.write_text(CAMERA_TOML)
    clip = directory / "clip.mkv"
    if not clip.exists():
        with log.open("ab") as out:
            subprocess.run(
                [sys.executable, "-m", "relay", "camera", "clip", CLIP_SCENE, str(clip)],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=120,
            )
    return config, clip


def start_camera(directory: Path, command_post: bytes, log: Path) -> subprocess.Popen[bytes]:
    """The camera process; its node (``node.toml`` in ``directory``) runs without an API."""
    node_config = directory / "node.toml"
    node_config.write_text(node_config.read_text().replace("[api]\nenabled = true", "[api]\nenabled = false"))
    config, clip = write_camera(directory, log)
    command = [sys.executable, "-m", "relay", "camera", "run", "--source", str(clip), "--config", str(config)]
    command += ["--node", str(node_config), "--to", command_post.hex(), "--loop", "--realtime"]
    return subprocess.Popen(command, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
