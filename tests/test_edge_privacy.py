"""Faces are blurred before any image leaves the device, checked with the face detector itself."""

from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.data
from PIL import Image

from analytics_edge.privacy import Anonymiser, FaceDetector, PrivacyConfig, SnapshotError, encode_snapshot

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
