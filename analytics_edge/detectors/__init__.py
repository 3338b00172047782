"""Detector plug-ins by name, each with a typed config (the Frigate way).

A camera's TOML names its detector and gives that plug-in's options::

    [detector]
    type = "yolo"
    model = "models/city.onnx"
    labels = ["person", "bicycle", "car"]
    layout = "boxes_columns"

``build_detector`` checks the options against the plug-in's config dataclass, so a typo is an
error naming the option, not a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from analytics_edge.detectors.base import Detection, Detector, DetectorError
from analytics_edge.detectors.ssdlite import SsdlitePersonConfig, SsdlitePersonDetector
from analytics_edge.detectors.yolo import YoloConfig, YoloDetector

__all__ = ["DETECTORS", "Detection", "Detector", "DetectorError", "build_detector"]

DETECTORS: Mapping[str, tuple[type[Any], Callable[[Any], Detector]]] = MappingProxyType(
    {
        "ssdlite_person": (SsdlitePersonConfig, SsdlitePersonDetector),
        "yolo": (YoloConfig, YoloDetector),
    }
)


def build_detector(name: str, options: Mapping[str, Any], base_dir: Path | None = None) -> Detector:
    """The plug-in ``name`` built from its options; relative model paths resolve from ``base_dir``."""
    if name not in DETECTORS:
        raise DetectorError(f"unknown detector {name!r}; known: {', '.join(sorted(DETECTORS))}")
    config_type, factory = DETECTORS[name]
    fields = {f.name: f for f in dataclasses.fields(config_type)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise DetectorError(f"detector {name!r} has no option(s) {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for key, value in options.items():
        if key == "model":
            path = Path(value)
            value = path if path.is_absolute() or base_dir is None else base_dir / path
        elif key == "labels":
            value = tuple(str(label) for label in value)
        values[key] = value
    try:
        config = config_type(**values)
    except TypeError as exc:
        raise DetectorError(f"detector {name!r}: {exc}") from exc
    return factory(config)
