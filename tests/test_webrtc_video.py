"""Live video from a field unit to the command post over the WebRTC link, through the UDP shaper:
faces blurred before encoding, VP8 below aiortc's 250 kbit/s floor, the frame number and capture
time read back from the decoded pixels, the stream recorded at the command post."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from aiortc.codecs import vpx
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics_edge.live import LADDER, LiveVideoTrack, allow_low_bitrates, read_stamp, stamp, step_for
from analytics_edge.privacy import Anonymiser
from analytics_edge.synthetic import render, walking_past
from bench.video import video_case


async def test_usable_video_at_64_kbits_with_5_percent_loss() -> None:
    figures = await video_case(64, 0.05, seconds=5.0)
    print(figures)
    assert figures["fps"] >= 4.0  # read back from the pixels, not the sender's counter
    assert figures["ladder_rung"] == "160x120@6"  # resolution and frame rate gave way, not the picture
    assert figures["latency_ms_p95"] <= 2000  # goal 400 ms, measured by the bench; loose on a busy host
    assert figures["shaper_dropped"] > 0  # the path really lost packets
    assert figures["offer_bytes"] <= 200 and figures["answer_bytes"] <= 200
    assert figures["time_to_first_frame_s"] <= 5.0  # no STUN server to wait for
    assert vpx.MIN_BITRATE == 30_000


async def test_the_command_post_records_the_stream(tmp_path: Path) -> None:
    figures = await video_case(256, 0.0, seconds=3.0, record_to=tmp_path)
    [recording] = tmp_path.glob("*.webm")
    with av.open(str(recording)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames >= min(10, figures["frames_decoded"] // 2), f"{recording.name} holds {frames} frames"


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 0xFFFF), st.integers(0, (1 << 24) - 1), st.sampled_from(LADDER))
def test_a_stamp_reads_back_through_pixel_noise(number: int, sent_ms: int, step: object) -> None:
    assert step in LADDER
    frame = np.full((step.height, step.width, 3), 90, dtype=np.uint8)  # type: ignore[attr-defined]
    stamp(frame, number, sent_ms)
    assert read_stamp(frame) == (number, sent_ms)
    noisy = np.clip(frame.astype(int) + np.random.default_rng(number).integers(-40, 40, frame.shape), 0, 255)
    assert read_stamp(noisy.astype(np.uint8)) == (number, sent_ms)


def test_an_unstamped_frame_reads_as_none() -> None:
    frame = render(walking_past(), 2.0)
    assert read_stamp(frame) is None


async def test_faces_are_blurred_before_the_encoder_sees_them() -> None:
    scene = walking_past()
    moment = next(t for t in np.arange(0.0, 8.0, 0.25) if Anonymiser().faces.detect(render(scene, t)))
    picture = render(scene, moment)
    anonymiser = Anonymiser()
    faces = anonymiser.faces.detect(picture)
    allow_low_bitrates(start_bps=1_000_000)
    blurred = await LiveVideoTrack(lambda t: picture, anonymiser).recv()
    plain = await LiveVideoTrack(lambda t: picture, None).recv()
    assert (blurred.width, blurred.height) == (640, 480) == (plain.width, plain.height)
    sx, sy = 640 / picture.shape[1], 480 / picture.shape[0]
    face = faces[0]
    box = (slice(int(face.y1 * sy), int(face.y2 * sy)), slice(int(face.x1 * sx), int(face.x2 * sx)))
    a, b = blurred.to_ndarray(format="rgb24")[box], plain.to_ndarray(format="rgb24")[box]
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 5, "the face region must have changed"
    assert a.astype(float).std() < b.astype(float).std()  # features washed out


def test_the_ladder_degrades_resolution_and_rate_with_the_bitrate() -> None:
    assert step_for(1_000_000).width == 640 and step_for(64_000) == LADDER[-1]
    assert step_for(64_000).fps >= 4
    rates = [step_for(b) for b in (40_000, 150_000, 300_000, 800_000)]
    assert [s.width for s in rates] == sorted(s.width for s in rates)
