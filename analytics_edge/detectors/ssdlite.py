"""The shipped person detector: SSDLite-MobileNetV2 (MIT, see ``models/NOTICE.md``) on onnxruntime.

The ONNX graph keeps the TensorFlow Object Detection API signature: it takes uint8 RGB of any
size, resizes to 300x300 itself, runs its own non-maximum suppression and returns normalised
``(ymin, xmin, ymax, xmax)`` boxes with scores. Class 1 is "person".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from analytics_edge.detectors.base import Detection, DetectorError, check_frame, resize_rgb

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


@dataclass(frozen=True, slots=True)
class SsdlitePersonConfig:
    model: Path = MODELS_DIR / "ssdlite_person.onnx"
    threads: int = 1  # onnxruntime intra-op threads; the camera box shares its cores with the relay
    min_score: float = 0.5
    input_size: int = 300  # frames are shrunk to this before inference: less to copy, same result


def open_session(model: Path, threads: int) -> ort.InferenceSession:
    """An onnxruntime CPU session with a fixed thread budget."""
    if not model.is_file():
        raise DetectorError(f"model file {model} not found")
    if threads < 1:
        raise DetectorError(f"threads must be at least 1, got {threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for unreadable models
        raise DetectorError(f"cannot load model {model}: {exc}") from exc


class SsdlitePersonDetector:
    labels: tuple[str, ...] = ("person",)

    def __init__(self, config: SsdlitePersonConfig) -> None:
        self.config = config
        self._session = open_session(config.model, config.threads)
        self._input = self._session.get_inputs()[0].name

    def detect(self, frame: np.ndarray) -> list[Detection]:
        check_frame(frame)
        height, width = frame.shape[:2]
        size = self.config.input_size
        small = resize_rgb(frame, size, size) if (height, width) != (size, size) else frame
        outputs = self._session.run(None, {self._input: small[None]})
        by_name = dict(zip([o.name for o in self._session.get_outputs()], outputs, strict=True))
        count = int(by_name["num_detections:0"][0])
        boxes = by_name["detection_boxes:0"][0][:count]
        scores = by_name["detection_scores:0"][0][:count]
        classes = by_name["detection_classes:0"][0][:count]
        found = []
        for (ymin, xmin, ymax, xmax), score, cls in zip(boxes, scores, classes, strict=True):
            if score < self.config.min_score or int(cls) != 1:
                continue
            found.append(
                Detection(
                    x1=float(xmin) * width,
                    y1=float(ymin) * height,
                    x2=float(xmax) * width,
                    y2=float(ymax) * height,
                    score=float(score),
                    label="person",
                )
            )
        return found
