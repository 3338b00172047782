"""The demo field's helmet camera: responder-2 streams live video to the command post over WebRTC.

Responder 2's node runs ``mesh112 video stream`` (from ``analytics_edge``, started as a process, so
``relay`` imports nothing above it) on the demo camera's generated clip, looped: faces blurred on
the device, frame numbers and times stamped into the pixels. The offer and answer
travel as bundles over the IP chain; the video then goes over a ``webrtc`` link straight to the
command post, which records it and shows it in the console's "Live video" panel. The encoder is
capped at :data:`HELMET_MAX_KBPS` (240x180 at 8 fps) so the demo stays light on a small machine: the
command post decodes the stream, records it and encodes it again for each viewer.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HELMET_SLUG = "responder-2"
HELMET_KBPS = 128  # what the stream starts at
HELMET_MAX_KBPS = 200  # the ladder's 240x180 at 8 fps rung


def add_webrtc_link(config: Path, peers: tuple[bytes, ...] = ()) -> None:
    """Append a ``webrtc`` link to a node.toml: offering to ``peers``, answering everyone else."""
    listed = ", ".join(f'"{peer.hex()}"' for peer in peers)
    with config.open("a") as out:
        out.write(f'\n[[links]]\ntype = "webrtc"\nname = "webrtc0"\npeers = [{listed}]\n')


def start_helmet(directory: Path, command_post: bytes, clip: Path, log: Path) -> subprocess.Popen[bytes]:
    """The helmet's process: its node (``node.toml`` in ``directory``, without an API: the stream's
    own inbox loop takes the answer) with a webrtc link to ``command_post``, streaming ``clip``."""
    node_config = directory / "node.toml"
    node_config.write_text(node_config.read_text().replace("[api]\nenabled = true", "[api]\nenabled = false"))
    add_webrtc_link(node_config, (command_post,))
    command = [sys.executable, "-m", "relay", "video", "stream", "--node", str(node_config)]
    command += ["--to", command_post.hex(), "--clip", str(clip)]
    command += ["--kbps", str(HELMET_KBPS), "--max-kbps", str(HELMET_MAX_KBPS)]
    command += ["--fallback-after", "0"]  # loopback: the channel comes up; no snapshots meanwhile
    return subprocess.Popen(command, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
