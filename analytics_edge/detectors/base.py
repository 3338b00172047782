"""What every detector plug-in shares: the detection record, the interface, and box helpers.

A plug-in is a class with a frozen config dataclass; it turns one RGB frame into detections in
pixel coordinates of that frame. Nothing else in the pipeline knows which model produced them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image


class DetectorError(Exception):
    """A detector could not be built or run (missing model file, wrong tensor shape, bad config)."""


@dataclass(frozen=True, slots=True)
class Detection:
    """One object found in one frame: a box in pixels (x1, y1) top-left, (x2, y2) bottom-right."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    label: str
    label_id: int = 0

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def foot(self) -> tuple[float, float]:
        """Bottom centre: where a standing person touches the ground, used for zone membership."""
        return ((self.x1 + self.x2) / 2, self.y2)


class Detector(Protocol):
    labels: tuple[str, ...]

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """Detections in ``frame`` (H x W x 3 uint8 RGB), best first."""
        ...


def check_frame(frame: np.ndarray) -> None:
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise DetectorError(f"expected an H x W x 3 uint8 RGB frame, got {frame.shape} {frame.dtype}")
    if frame.shape[0] < 8 or frame.shape[1] < 8:
        raise DetectorError(f"frame of {frame.shape[1]}x{frame.shape[0]} is too small to search")


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes ``a`` (N x 4) against ``b`` (M x 4), as N x M."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    result: np.ndarray = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
    return result


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int = 100) -> list[int]:
    """Greedy non-maximum suppression; indices of the kept boxes, highest score first."""
    order = list(np.argsort(-scores, kind="stable"))
    keep: list[int] = []
    while order and len(keep) < max_keep:
        best = order.pop(0)
        keep.append(int(best))
        if not order:
            break
        overlaps = iou(boxes[best : best + 1], boxes[order])[0]
        order = [i for i, o in zip(order, overlaps, strict=True) if o <= iou_threshold]
    return keep


def resize_rgb(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of an RGB frame (Pillow: already needed for snapshots)."""
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BILINEAR))
