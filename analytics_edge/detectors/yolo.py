"""YOLO-style ONNX models a city brings: one output tensor of boxes and per-class scores.

The config says where the model is, its class labels, its input size and how its output is laid
out, so models exported by different tools decode without code changes:

- ``layout = "boxes_rows"``: output ``[1, N, 4 + C]`` (one row per candidate box);
- ``layout = "boxes_columns"``: output ``[1, 4 + C, N]`` (YOLOv8 export default);
- ``objectness = true`` adds a column after the box (YOLOv5: ``[1, N, 5 + C]``) that multiplies
  the class scores.

Boxes are ``(cx, cy, w, h)`` in input pixels. Frames are letterboxed (scaled to fit, padded grey)
as these models were trained, and boxes are mapped back to frame pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from analytics_edge.detectors.base import Detection, DetectorError, check_frame, nms, resize_rgb
from analytics_edge.detectors.ssdlite import open_session

Layout = Literal["boxes_rows", "boxes_columns"]
PAD_VALUE = 114


@dataclass(frozen=True, slots=True)
class YoloConfig:
    model: Path
    labels: tuple[str, ...]
    input_width: int = 640
    input_height: int = 640
    layout: Layout = "boxes_columns"
    objectness: bool = False
    min_score: float = 0.4
    iou_threshold: float = 0.45
    max_detections: int = 100
    threads: int = 1

    def __post_init__(self) -> None:
        if not self.labels:
            raise DetectorError("a YOLO model needs its class labels")
        if self.layout not in ("boxes_rows", "boxes_columns"):
            raise DetectorError(f"layout must be boxes_rows or boxes_columns, not {self.layout!r}")
        if not (0 < self.min_score <= 1 and 0 < self.iou_threshold <= 1):
            raise DetectorError("min_score and iou_threshold must be in (0, 1]")


class YoloDetector:
    def __init__(self, config: YoloConfig) -> None:
        self.config = config
        self.labels = config.labels
        self._session = open_session(config.model, config.threads)
        self._input = self._session.get_inputs()[0].name
        self._columns = 4 + int(config.objectness) + len(config.labels)

    def detect(self, frame: np.ndarray) -> list[Detection]:
        check_frame(frame)
        tensor, scale, pad_x, pad_y = self._letterbox(frame)
        (raw,) = self._session.run(None, {self._input: tensor})[:1]
        return self.decode(np.asarray(raw, dtype=np.float32), scale, pad_x, pad_y, frame.shape[:2])

    def decode(
        self, raw: np.ndarray, scale: float, pad_x: float, pad_y: float, frame_hw: tuple[int, ...]
    ) -> list[Detection]:
        """Detections from the model's raw output tensor, in frame pixels."""
        rows = self._rows(raw)
        cfg = self.config
        class_scores = rows[:, 4 + int(cfg.objectness) :]
        if cfg.objectness:
            class_scores = class_scores * rows[:, 4:5]
        label_ids = np.argmax(class_scores, axis=1)
        scores = class_scores[np.arange(len(rows)), label_ids]
        wanted = scores >= cfg.min_score
        rows, scores, label_ids = rows[wanted], scores[wanted], label_ids[wanted]
        cx, cy, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        boxes = (boxes - np.array([pad_x, pad_y, pad_x, pad_y])) / scale
        height, width = frame_hw[0], frame_hw[1]
        boxes = np.clip(boxes, 0, [width, height, width, height])
        found = []
        # class-aware NMS: offset boxes per class so different classes never suppress each other
        offset = label_ids[:, None] * float(max(width, height) + 1)
        for i in nms(boxes + offset, scores, cfg.iou_threshold, cfg.max_detections):
            x1, y1, x2, y2 = (float(v) for v in boxes[i])
            label_id = int(label_ids[i])
            found.append(Detection(x1, y1, x2, y2, float(scores[i]), cfg.labels[label_id], label_id))
        return found

    def _rows(self, raw: np.ndarray) -> np.ndarray:
        if raw.ndim != 3 or raw.shape[0] != 1:
            raise DetectorError(f"expected a [1, ., .] output tensor, got shape {list(raw.shape)}")
        rows: np.ndarray = raw[0] if self.config.layout == "boxes_rows" else raw[0].T
        if rows.shape[1] != self._columns:
            raise DetectorError(
                f"output has {rows.shape[1]} values per box, config implies {self._columns} "
                f"(4 box + {int(self.config.objectness)} objectness + {len(self.config.labels)} labels): "
                "check labels, objectness and layout"
            )
        return rows

    def _letterbox(self, frame: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        cfg = self.config
        height, width = frame.shape[:2]
        scale = min(cfg.input_width / width, cfg.input_height / height)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        canvas = np.full((cfg.input_height, cfg.input_width, 3), PAD_VALUE, dtype=np.uint8)
        pad_x, pad_y = (cfg.input_width - new_w) // 2, (cfg.input_height - new_h) // 2
        canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resize_rgb(frame, new_w, new_h)
        tensor = canvas.astype(np.float32).transpose(2, 0, 1)[None] / 255.0
        return tensor, scale, float(pad_x), float(pad_y)
