"""Detector plug-ins: the shipped person model on real photos, the YOLO decoder on a built graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import skimage.data
from onnx import TensorProto, helper, numpy_helper

from analytics_edge.detectors import DetectorError, build_detector
from analytics_edge.detectors.ssdlite import SsdlitePersonConfig, SsdlitePersonDetector
from analytics_edge.detectors.yolo import YoloConfig, YoloDetector


@pytest.fixture(scope="module")
def person_detector() -> SsdlitePersonDetector:
    return SsdlitePersonDetector(SsdlitePersonConfig())


def test_person_found_on_astronaut(person_detector: SsdlitePersonDetector) -> None:
    found = person_detector.detect(skimage.data.astronaut())
    assert len(found) == 1
    person = found[0]
    assert person.label == "person" and person.score > 0.8
    # she fills most of the portrait: the box covers the centre and most of the height
    assert person.x1 < 256 < person.x2 and person.height > 350


def test_person_found_on_cameraman(person_detector: SsdlitePersonDetector) -> None:
    camera = np.stack([skimage.data.camera()] * 3, axis=-1)
    found = person_detector.detect(camera)
    assert len(found) == 1 and found[0].score > 0.9


def test_no_person_in_coffee(person_detector: SsdlitePersonDetector) -> None:
    assert person_detector.detect(skimage.data.coffee()) == []


def test_bad_frame_refused(person_detector: SsdlitePersonDetector) -> None:
    with pytest.raises(DetectorError, match="RGB frame"):
        person_detector.detect(np.zeros((100, 100), dtype=np.uint8))


def test_registry_builds_by_name_and_names_unknown_options() -> None:
    detector = build_detector("ssdlite_person", {"threads": 2, "min_score": 0.6})
    assert isinstance(detector, SsdlitePersonDetector) and detector.config.threads == 2
    with pytest.raises(DetectorError, match="no option"):
        build_detector("ssdlite_person", {"treshold": 0.5})
    with pytest.raises(DetectorError, match="unknown detector"):
        build_detector("hog", {})
    with pytest.raises(DetectorError, match="not found"):
        build_detector("yolo", {"model": "missing.onnx", "labels": ["person"]}, base_dir=Path("/nonexistent"))


# --- YOLO-style decoder on a small ONNX graph that always emits known candidates -----------------

INPUT = 640
LABELS = ("person", "bag")


def _candidates(objectness: bool) -> np.ndarray:
    """Rows of (cx, cy, w, h, [obj], person, bag) in 640x640 input pixels."""
    rows = [
        (160, 280, 160, 160, 0.9, 0.05),  # person: frame box (40, 20, 120, 100) after letterbox
        (165, 282, 160, 160, 0.7, 0.05),  # same person, weaker: suppressed by NMS
        (160, 280, 150, 150, 0.05, 0.8),  # a bag on top of the person: other class, kept
        (500, 300, 40, 40, 0.2, 0.1),  # too weak: dropped
    ]
    table = np.array(rows, dtype=np.float32)
    if objectness:
        table = np.concatenate([table[:, :4], np.ones((len(rows), 1), np.float32), table[:, 4:]], axis=1)
    return table


def _constant_model(path: Path, output: np.ndarray) -> Path:
    """A graph whose output is ``output`` plus 0 x mean(input): real onnxruntime, known answer."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
            helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
            helper.make_node("Add", ["table", "nothing"], ["output0"]),
        ],
        "constant_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, INPUT, INPUT])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(output.shape))],
        initializer=[
            numpy_helper.from_array(output.astype(np.float32), "table"),
            numpy_helper.from_array(np.array(0, dtype=np.float32), "zero"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    ("layout", "objectness"),
    [("boxes_rows", False), ("boxes_columns", False), ("boxes_rows", True)],
)
def test_yolo_decoder_on_built_graph(tmp_path: Path, layout: str, objectness: bool) -> None:
    table = _candidates(objectness)
    output = table[None] if layout == "boxes_rows" else table.T[None]
    model = _constant_model(tmp_path / "yolo.onnx", output)
    detector = YoloDetector(
        YoloConfig(model=model, labels=LABELS, layout=layout, objectness=objectness)  # type: ignore[arg-type]
    )
    frame = np.zeros((160, 320, 3), dtype=np.uint8)  # letterboxed: scale 2, 160 px pad top
    found = detector.detect(frame)
    assert [d.label for d in found] == ["person", "bag"]
    person = found[0]
    assert (person.x1, person.y1, person.x2, person.y2) == pytest.approx((40, 20, 120, 100), abs=1e-3)
    assert person.score == pytest.approx(0.9)


def test_yolo_output_that_does_not_match_config_is_refused(tmp_path: Path) -> None:
    model = _constant_model(tmp_path / "yolo.onnx", _candidates(False)[None])
    detector = YoloDetector(YoloConfig(model=model, labels=("person", "bag", "car"), layout="boxes_rows"))
    with pytest.raises(DetectorError, match="values per box"):
        detector.detect(np.zeros((64, 64, 3), dtype=np.uint8))
