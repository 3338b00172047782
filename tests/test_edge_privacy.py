"""Faces are blurred before any image leaves the device, checked with the face detector itself."""

from __future__ import annotations

import asyncio
import io
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from analytics_edge import synthetic
from analytics_edge.detectors.base import Detection, resize_rgb
from analytics_edge.live import LADDER, LiveVideoTrack, Step, step_for
from analytics_edge.live_cli import _source as clip_source
from analytics_edge.privacy import Anonymiser, FaceDetector, PrivacyConfig, SnapshotError, encode_snapshot
from field.camera import CLIP_SCENE

ASTRONAUT_PERSON = (3.0, 34.0, 377.0, 509.0)  # the person model's box on astronaut()
CAMERAMAN_PERSON = (0.0, 68.0, 300.0, 512.0)


def _cameraman() -> np.ndarray:
    return np.stack([skimage.data.camera()] * 3, axis=-1)


@pytest.fixture(scope="module")
def faces() -> FaceDetector:
    return FaceDetector()


@pytest.fixture(scope="module")
def anonymiser() -> Anonymiser:
    return Anonymiser()


def test_face_model_finds_the_faces(faces: FaceDetector) -> None:
    for image in (skimage.data.astronaut(), _cameraman()):
        found = faces.detect(image)
        assert len(found) == 1 and found[0].score > 0.7
    assert faces.detect(skimage.data.coffee()) == []


@pytest.mark.parametrize(("name", "person"), [("astronaut", ASTRONAUT_PERSON), ("camera", CAMERAMAN_PERSON)])
def test_snapshot_has_no_recognisable_face(
    faces: FaceDetector, anonymiser: Anonymiser, name: str, person: tuple[float, float, float, float]
) -> None:
    image = skimage.data.astronaut() if name == "astronaut" else _cameraman()
    (face,) = faces.detect(image)
    out = anonymiser.anonymise(image, [person])
    x1, y1, x2, y2 = (round(v) for v in (face.x1, face.y1, face.x2, face.y2))
    before = image[y1:y2, x1:x2].astype(np.float32)
    after = out[y1:y2, x1:x2].astype(np.float32)
    # the face region changed and lost its detail (high-frequency energy)
    assert np.abs(before - after).mean() > 10
    assert np.abs(np.diff(after, axis=1)).mean() < 0.3 * np.abs(np.diff(before, axis=1)).mean()
    # the JPEG that would leave the device: the face detector no longer finds that face
    jpeg = encode_snapshot(out, max_bytes=24_000)
    decoded = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    assert faces.detect(decoded) == [], "a face survived anonymisation"
    # away from the face the picture is untouched
    assert np.array_equal(out[-40:, -40:], image[-40:, -40:])


def test_head_blurred_even_when_no_face_is_found() -> None:
    blind = Anonymiser(PrivacyConfig(min_face_score=0.9999))  # a face model that sees nothing
    image = skimage.data.astronaut()
    out = blind.anonymise(image, [ASTRONAUT_PERSON])
    top = slice(34, 34 + (509 - 34) // 3)
    assert np.abs(out[top, 3:377].astype(int) - image[top, 3:377].astype(int)).mean() > 10


def test_whole_person_masking() -> None:
    masker = Anonymiser(PrivacyConfig(mask_persons=True))
    out = masker.anonymise(_cameraman(), [CAMERAMAN_PERSON])
    assert (out[100:500, 10:290] == 128).all()


def test_snapshot_size_cap() -> None:
    noise = np.random.default_rng(1).integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    for cap in (40_000, 8_000, 2_000):
        jpeg = encode_snapshot(noise, max_bytes=cap)
        assert len(jpeg) <= cap and jpeg.startswith(b"\xff\xd8")
    with pytest.raises(SnapshotError):
        encode_snapshot(noise, max_bytes=200)


# --- live video: every frame the sender hands to the encoder, at every rung of the ladder ----------


def _face_in_photo(photo: np.ndarray) -> tuple[float, float, float, float]:
    (face,) = FaceDetector().detect(photo)
    return face.x1, face.y1, face.x2, face.y2


@pytest.fixture(scope="module")
def sprite_faces() -> dict[str, tuple[float, float, float, float]]:
    """Where each actor's face is in the photo its sprite is cut from (x shifted by the cut)."""
    x1, y1, x2, y2 = _face_in_photo(skimage.data.astronaut())
    c1, d1, c2, d2 = _face_in_photo(_cameraman())
    return {"astronaut": (x1, y1, x2, y2), "cameraman": (c1 - 40, d1, c2 - 40, d2)}


def _known_faces(
    scene: synthetic.Scene, t: float, sprite_faces: dict[str, tuple[float, float, float, float]]
) -> list[tuple[float, float, float, float]]:
    """The scene's faces at ``t`` in its pixels, from the actors' paths (ground truth, no model)."""
    boxes = []
    for actor in scene.actors:
        where = actor.position(t)
        if where is None or actor.sprite not in sprite_faces:
            continue
        scale = actor.height / 512  # both photos are 512 px tall
        x1, y1, x2, y2 = (v * scale for v in sprite_faces[actor.sprite])
        box = (x1 + where[0], y1 + where[1], x2 + where[0], y2 + where[1])
        if box[0] >= 0 and box[2] <= scene.width:  # wholly in the picture
            boxes.append(box)
    return boxes


def _send(
    source: Callable[[float], np.ndarray], step: Step, count: int
) -> tuple[list[np.ndarray], LiveVideoTrack]:
    """``count`` frames from the real live sender track at ``step`` (what goes to the VP8 encoder)."""

    async def run() -> tuple[list[np.ndarray], LiveVideoTrack]:
        track = LiveVideoTrack(source, Anonymiser(), bitrate=lambda: step.min_bps)
        frames = [(await track.recv()).to_ndarray(format="rgb24") for _ in range(count)]
        track.stop()
        return frames, track

    return asyncio.run(run())


def _check_no_face_left(
    sent: np.ndarray,
    original: np.ndarray,
    faces_at: list[tuple[float, float, float, float]],
    detector: FaceDetector,
) -> int:
    """Pixel check of every known face in ``sent`` against the same frame unblurred, and the face
    model on ``sent`` scaled back to the capture size; returns how many faces were checked."""
    height, width = sent.shape[:2]
    sx, sy = width / original.shape[1], height / original.shape[0]
    plain = np.asarray(resize_rgb(original, width, height)).astype(np.float32)
    back = np.asarray(resize_rgb(sent, original.shape[1], original.shape[0]))
    found = detector.scan(back)
    checked = 0
    for x1, y1, x2, y2 in faces_at:
        # the face's inner 80 %, in the sent frame's pixels
        mx, my = (x2 - x1) * 0.1, (y2 - y1) * 0.1
        a1, b1 = math.floor((x1 + mx) * sx), math.floor((y1 + my) * sy)
        a2, b2 = math.ceil((x2 - mx) * sx), math.ceil((y2 - my) * sy)
        before, after = plain[b1:b2, a1:a2], sent[b1:b2, a1:a2].astype(np.float32)
        detail_before = np.abs(np.diff(before, axis=1)).mean() + np.abs(np.diff(before, axis=0)).mean()
        detail_after = np.abs(np.diff(after, axis=1)).mean() + np.abs(np.diff(after, axis=0)).mean()
        assert detail_after < 0.35 * detail_before, f"face at {(x1, y1, x2, y2)} sent with its detail"
        for face in found:
            # a washed-out head can still give a weak, much larger box; the face itself must be gone
            assert _iou((x1, y1, x2, y2), face) < 0.3, (
                f"the face model still finds the face at {(x1, y1, x2, y2)}"
            )
        checked += 1
    return checked


def _iou(box: tuple[float, float, float, float], face: Detection) -> float:
    x1, y1, x2, y2 = box
    w, h = min(x2, face.x2) - max(x1, face.x1), min(y2, face.y2) - max(y1, face.y1)
    if w <= 0 or h <= 0:
        return 0.0
    union = (x2 - x1) * (y2 - y1) + (face.x2 - face.x1) * (face.y2 - face.y1) - w * h
    return w * h / union


@pytest.mark.parametrize("step", LADDER, ids=lambda s: f"{s.width}x{s.height}")
def test_live_frames_have_no_recognisable_face(
    faces: FaceDetector, sprite_faces: dict[str, tuple[float, float, float, float]], step: Step
) -> None:
    """The synthetic crowd (three actors) and walker, as the live sender sends them at each rung."""
    scenes = [synthetic.crowd_gathering(), synthetic.walking_past()]
    shown: list[tuple[synthetic.Scene, float]] = []

    def source(t: float) -> np.ndarray:
        scene = scenes[len(shown) % 2]
        shown.append((scene, 7.0 if scene.name == "crowd_gathering" else (len(shown) * 0.9) % 8))
        return synthetic.render(*shown[-1])

    frames, track = _send(source, step, 8)
    checked = 0
    for frame, (scene, t) in zip(frames, shown, strict=True):
        assert frame.shape == (step.height, step.width, 3)
        checked += _check_no_face_left(
            frame, synthetic.render(scene, t), _known_faces(scene, t, sprite_faces), faces
        )
    assert checked >= 12  # 3 faces in each crowd frame, 1 in most walker frames
    print(f"{step.width}x{step.height}: blur {np.median(track.blur_ms):.1f} ms/frame (median)")


def test_live_demo_clip_has_no_recognisable_face(
    tmp_path: Path, faces: FaceDetector, sprite_faces: dict[str, tuple[float, float, float, float]]
) -> None:
    """The demo camera's clip (field/camera.py's scene, encoded as ``make run`` does), read by
    ``mesh112 video stream --clip``'s own reader and sent at the demo's 240x180 rung and at 640x480."""
    scene = synthetic.SCENES[CLIP_SCENE]
    clip = synthetic.write_clip(scene, tmp_path / "clip.mkv")
    for step in (step_for(120_000), LADDER[0]):
        read = clip_source(clip)
        calls: list[int] = []

        def source(
            t: float, read: Callable[[float], np.ndarray] = read, calls: list[int] = calls
        ) -> np.ndarray:
            for _ in range(3):  # every third frame, to cover the clip in a few frames
                picture = read(t)
                calls.append(len(calls))
            return picture

        frames, _ = _send(source, step, 12)
        checked = 0
        for index, frame in enumerate(frames):
            number = 3 * index + 2
            t = number / scene.fps
            original = np.asarray(synthetic.render(scene, t))
            checked += _check_no_face_left(frame, original, _known_faces(scene, t, sprite_faces), faces)
        assert checked >= 10
