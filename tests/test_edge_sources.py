"""Camera sources and synthetic clips: sampling, looping, reconnect after stream loss over HTTP."""

from __future__ import annotations

import functools
import http.server
import itertools
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from analytics_edge import synthetic
from analytics_edge.sources import FrameSampler, SourceConfig, SourceError, VideoSource


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scene = synthetic.walking_past(duration_s=2.0)  # 10 frames at 5 fps
    return synthetic.write_clip(scene, tmp_path_factory.mktemp("clips") / "walk.mkv")


def test_file_frames_are_rgb_and_timed(clip: Path) -> None:
    frames = list(VideoSource(SourceConfig(str(clip), target_fps=5)).frames())
    assert len(frames) == 10
    assert frames[0].image.shape == (360, 640, 3) and frames[0].image.dtype == np.uint8
    assert [round(f.timestamp, 2) for f in frames[:3]] == [0.0, 0.2, 0.4]


def test_sampling_to_target_rate(clip: Path) -> None:
    frames = list(VideoSource(SourceConfig(str(clip), target_fps=2)).frames())
    assert len(frames) == 4  # 2 s at 2 fps
    gaps = np.diff([f.timestamp for f in frames])
    assert np.all(gaps >= 0.4 - 1e-6)


def test_sampler_does_not_burst_after_a_gap() -> None:
    sampler = FrameSampler(fps=2)
    kept = [t for t in (0.0, 0.1, 0.5, 0.6, 5.0, 5.1, 5.3, 5.5) if sampler.keep(t)]
    assert kept == [0.0, 0.5, 5.0, 5.5]


def test_file_loop_keeps_time_running(clip: Path) -> None:
    frames = list(VideoSource(SourceConfig(str(clip), target_fps=5, loop=True)).frames(max_frames=25))
    stamps = [f.timestamp for f in frames]
    assert len(frames) == 25 and all(b > a for a, b in itertools.pairwise(stamps))


def test_missing_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot open"):
        list(VideoSource(SourceConfig(str(tmp_path / "none.mp4"))).frames())


@pytest.fixture()
def http_clip(clip: Path) -> Iterator[tuple[str, list[int]]]:
    """The clip served over HTTP on 127.0.0.1; each request ends the stream (a camera that drops)."""
    requests: list[int] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(1)
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Handler, directory=str(clip.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{clip.name}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_live_stream_reconnects_after_loss(http_clip: tuple[str, list[int]]) -> None:
    url, requests = http_clip
    delays: list[float] = []
    source = VideoSource(SourceConfig(url, target_fps=5, backoff_initial_s=0.01), sleep=delays.append)
    frames = list(source.frames(max_frames=25))  # 10 frames per connection: needs 3 connections
    assert len(frames) == 25
    assert source.reconnects == 2 and len(requests) == 3
    stamps = [f.timestamp for f in frames]
    assert all(b > a for a, b in itertools.pairwise(stamps))


def test_live_source_gives_up_with_bounded_backoff() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    delays: list[float] = []
    config = SourceConfig(
        f"http://127.0.0.1:{port}/cam", max_reconnects=4, backoff_initial_s=0.5, backoff_max_s=2
    )
    with pytest.raises(SourceError, match="gave up after 4"):
        list(VideoSource(config, sleep=delays.append).frames())
    assert delays == [0.5, 1.0, 2.0, 2.0]


def test_scenes_are_deterministic() -> None:
    scene = synthetic.bag_left_behind()
    assert np.array_equal(synthetic.render(scene, 5.0), synthetic.render(scene, 5.0))
    assert not np.array_equal(synthetic.render(scene, 1.0), synthetic.render(scene, 5.0))
