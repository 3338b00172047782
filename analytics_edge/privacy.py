"""Anonymisation of every image before it leaves the camera box.

Faces are found with MediaPipe's BlazeFace short-range model (Apache-2.0, ONNX, see
``models/NOTICE.md``) and washed out beyond recognition: the face region, grown by a quarter,
becomes a smooth gradient of its own four mean colours (no texture, no features). BlazeFace is made
for faces that fill a good part of its 128x128 input, so it is run on the whole frame (large faces),
on overlapping square tiles of two thirds of the frame's short side (the faces of people a few metres
away: 35-55 px in a 640x360 frame, too small for the whole-frame pass once it is shrunk to 128x128)
and on the upper part of every person box, where a face is large. Where a person was detected but no face was
found, the top third of their box (where the head is) is washed out anyway: when unsure, blur.
Whole persons can be masked by config.

Snapshots are JPEG, re-encoded here from the anonymised pixels (no EXIF, no metadata) and capped
in size so they fit the ``BULK`` budget.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from analytics_edge.detectors.base import Detection, check_frame, nms, resize_rgb
from analytics_edge.detectors.ssdlite import MODELS_DIR, open_session
from analytics_edge.tracking import Box

FACE_INPUT = 128
TILE_SHARE = 2 / 3  # tile side as a share of the frame's short side; tiles overlap by half


class SnapshotError(Exception):
    """A snapshot cannot be made within its size budget."""


@dataclass(frozen=True, slots=True)
class PrivacyConfig:
    face_model: Path = MODELS_DIR / "blazeface_short.onnx"
    min_face_score: float = 0.5
    blur_heads_without_face: bool = True  # fail closed when the face model misses
    mask_persons: bool = False  # paint whole persons over (stricter sites)
    threads: int = 1


def _anchors() -> np.ndarray:
    """BlazeFace short-range anchor centres (896 x 2): 16x16 cells x 2, then 8x8 cells x 6."""
    centres = []
    for grid, per_cell in ((16, 2), (8, 6)):
        for y in range(grid):
            for x in range(grid):
                centres += [((x + 0.5) / grid, (y + 0.5) / grid)] * per_cell
    return np.array(centres, dtype=np.float32)


class FaceDetector:
    def __init__(self, config: PrivacyConfig | None = None) -> None:
        self.config = config or PrivacyConfig()
        self._session = open_session(self.config.face_model, self.config.threads)
        self._anchors = _anchors()

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in ``image`` (RGB), boxes in its pixels."""
        check_frame(image)
        height, width = image.shape[:2]
        side = max(height, width)  # pad to a square, as the model was trained
        square = np.zeros((side, side, 3), dtype=np.uint8)
        square[:height, :width] = image
        tensor = resize_rgb(square, FACE_INPUT, FACE_INPUT).astype(np.float32) / 127.5 - 1.0
        regressors, logits = self._session.run(None, {"input": tensor.transpose(2, 0, 1)[None]})
        scores = 1 / (1 + np.exp(-np.clip(logits[0, :, 0].astype(np.float64), -100, 100)))
        wanted = scores >= self.config.min_face_score
        if not wanted.any():
            return []
        raw, anchors, scores = regressors[0][wanted], self._anchors[wanted], scores[wanted]
        cx = raw[:, 0] / FACE_INPUT + anchors[:, 0]
        cy = raw[:, 1] / FACE_INPUT + anchors[:, 1]
        w, h = raw[:, 2] / FACE_INPUT, raw[:, 3] / FACE_INPUT
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1) * side
        found = []
        for i in nms(boxes, scores, 0.3):
            x1, y1, x2, y2 = (float(v) for v in boxes[i])
            found.append(Detection(x1, y1, x2, y2, float(scores[i]), "face"))
        return found

    def scan(self, image: np.ndarray) -> list[Detection]:
        """Faces in ``image`` at every size: the whole frame, then overlapping square tiles."""
        found = self.detect(image)
        height, width = image.shape[:2]
        side = math.ceil(min(height, width) * TILE_SHARE)
        for y in _starts(height, side):
            for x in _starts(width, side):
                tile = np.ascontiguousarray(image[y : y + side, x : x + side])
                found += [
                    Detection(f.x1 + x, f.y1 + y, f.x2 + x, f.y2 + y, f.score, f.label)
                    for f in self.detect(tile)
                ]
        return found


class Anonymiser:
    """Blurs faces (and masks persons if configured) on a copy of a frame."""

    def __init__(self, config: PrivacyConfig | None = None) -> None:
        self.config = config or PrivacyConfig()
        self.faces = FaceDetector(self.config)

    def anonymise(self, frame: np.ndarray, persons: list[Box]) -> np.ndarray:
        height, width = frame.shape[:2]
        regions = [(f.x1, f.y1, f.x2, f.y2) for f in self.faces.scan(frame)]
        for box in persons:
            head = _head_square(box, width, height)
            if head is None:
                continue
            x1, y1, x2, y2 = head
            found = self.faces.detect(np.ascontiguousarray(frame[y1:y2, x1:x2]))
            regions += [(f.x1 + x1, f.y1 + y1, f.x2 + x1, f.y2 + y1) for f in found]
            if not found and self.config.blur_heads_without_face:
                bx1, by1, bx2, by2 = box
                regions.append((bx1, by1, bx2, by1 + (by2 - by1) / 3))
        image = Image.fromarray(frame)
        for region in regions:
            _blur(image, _grow(region, 0.25, width, height))
        out = np.asarray(image).copy()
        if self.config.mask_persons:
            for box in persons:
                x1, y1, x2, y2 = _grow(box, 0.05, width, height)
                out[y1:y2, x1:x2] = (128, 128, 128)
        return out


def encode_snapshot(image: np.ndarray, max_bytes: int, max_side: int = 640) -> bytes:
    """JPEG of ``image`` no bigger than ``max_bytes``: lower quality first, then smaller size."""
    picture = Image.fromarray(image)
    if max(picture.size) > max_side:
        picture.thumbnail((max_side, max_side))
    for _ in range(8):  # each round shrinks by 3/4; 8 rounds reach 1/10 of the side
        for quality in (80, 65, 50, 35, 25):
            buffer = io.BytesIO()
            picture.save(buffer, format="JPEG", quality=quality, optimize=True)
            if buffer.tell() <= max_bytes:
                return buffer.getvalue()
        if min(picture.size) < 32:
            break
        picture = picture.resize((picture.width * 3 // 4, picture.height * 3 // 4))
    raise SnapshotError(f"cannot fit a snapshot into {max_bytes} bytes")


def _head_square(box: Box, width: int, height: int) -> tuple[int, int, int, int] | None:
    """The square at the top of a person box, where a face would be, clipped to the frame."""
    x1, y1, x2, _ = box
    side = x2 - x1
    region = _grow((x1, y1 - side * 0.1, x2, y1 + side * 0.9), 0.0, width, height)
    if region[2] - region[0] < 8 or region[3] - region[1] < 8:
        return None
    return region


def _starts(length: int, side: int) -> list[int]:
    """Offsets of tiles of ``side`` overlapping by half that cover ``length``, the last flush with its end."""
    if length <= side:
        return [0]
    stride = side // 2
    return sorted({*range(0, length - side, stride), length - side})


def _grow(box: Box, share: float, width: int, height: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * share, (y2 - y1) * share
    return (
        max(0, math.floor(x1 - dx)),
        max(0, math.floor(y1 - dy)),
        min(width, math.ceil(x2 + dx)),
        min(height, math.ceil(y2 + dy)),
    )


def _blur(image: Image.Image, region: tuple[int, int, int, int]) -> None:
    """Replace the region by a smooth wash of its own colours: nothing of a face survives."""
    x1, y1, x2, y2 = region
    if x2 - x1 < 2 or y2 - y1 < 2:
        return
    patch = image.crop(region)
    cells = patch.resize((2, 2), Image.Resampling.BOX)
    image.paste(cells.resize(patch.size, Image.Resampling.BILINEAR), (x1, y1))
