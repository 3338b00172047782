"""A camera's TOML configuration, checked with errors that name the file, section and key.

::

    [camera]
    number = 0                  # camera number on this node (0-255)
    fps = 5                     # detection rate
    destination = "9f0c...e1"   # command post node id (hex), for `camera run --node`
    lat = 49.7475               # where the camera stands (both or neither): reported to the
    lon = 13.3776               #   command post as a position when `camera run --node` starts

    [detector]                  # a plug-in by name and its options (see analytics_edge.detectors)
    type = "ssdlite_person"
    threads = 1

    [privacy]
    mask_persons = false

    [snapshots]
    enabled = true
    max_bytes = 24000
    interval_s = 10
    min_priority = "IMMEDIATE"

    [[zones]]
    name = "restricted"
    points = [[400, 0], [640, 0], [640, 360], [400, 360]]
    area_m2 = 40

    [[rules]]
    type = "intrusion"          # intrusion | loitering | crowd | abandoned_object | person_down
    zone = "restricted"
    priority = "IMMEDIATE"      # optional: each rule has a sensible default
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analytics_edge.background import BackgroundConfig
from analytics_edge.pipeline import PipelineConfig
from analytics_edge.privacy import PrivacyConfig
from analytics_edge.rules import (
    AbandonedObjectRule,
    CrowdRule,
    IntrusionRule,
    LoiteringRule,
    PersonDownRule,
    Rule,
    RuleConfigError,
    Zone,
)
from relay.bundle import NODE_ID_LEN, Priority
from relay.errors import ConfigError

RULE_TYPES: Mapping[str, Any] = {
    "intrusion": IntrusionRule,
    "loitering": LoiteringRule,
    "crowd": CrowdRule,
    "abandoned_object": AbandonedObjectRule,
    "person_down": PersonDownRule,
}


class CameraConfigError(ConfigError):
    """A camera configuration file that cannot be used; the message names the key."""


@dataclass(frozen=True, slots=True)
class CameraConfig:
    fps: float
    pipeline: PipelineConfig
    privacy: PrivacyConfig
    detector: str
    detector_options: Mapping[str, Any]
    zones: Mapping[str, Zone]
    rule_tables: tuple[Mapping[str, Any], ...]
    destination: bytes | None
    base_dir: Path
    position: tuple[float, float] | None = None  # (lat, lon) in degrees, for the command post's map

    def build_rules(self) -> list[Rule]:
        """Fresh rule objects (they keep per-camera state), numbered in file order."""
        return [_rule(index, table, self.zones) for index, table in enumerate(self.rule_tables)]


def load_camera_config(path: Path) -> CameraConfig:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise CameraConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return _parse(data, path.resolve().parent)
    except (CameraConfigError, RuleConfigError, ValueError, TypeError) as exc:
        raise CameraConfigError(f"{path}: {exc}") from None


def _parse(data: dict[str, Any], base_dir: Path) -> CameraConfig:
    unknown = set(data) - {"camera", "detector", "privacy", "snapshots", "zones", "rules"}
    if unknown:
        raise CameraConfigError(f"unknown section(s) {', '.join(sorted(unknown))}")
    camera = dict(data.get("camera", {}))
    number = _pop(camera, "camera", "number", int, 0)
    fps = float(_pop(camera, "camera", "fps", (int, float), 5))
    destination_hex = _pop(camera, "camera", "destination", str, None)
    lat = _pop(camera, "camera", "lat", (int, float), None)
    lon = _pop(camera, "camera", "lon", (int, float), None)
    _no_more(camera, "camera")
    if (lat is None) != (lon is None):
        raise CameraConfigError("[camera] give both lat and lon (degrees), or neither")
    if lat is not None and not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise CameraConfigError(f"[camera] lat {lat}, lon {lon} is not a place on Earth (degrees)")
    position = (float(lat), float(lon)) if lat is not None else None
    destination = None
    if destination_hex is not None:
        try:
            destination = bytes.fromhex(destination_hex)
        except ValueError:
            destination = b""
        if len(destination) != NODE_ID_LEN:
            raise CameraConfigError(f"[camera] destination must be a {NODE_ID_LEN}-byte node id in hex")

    snaps = dict(data.get("snapshots", {}))
    pipeline = PipelineConfig(
        camera=number,
        snapshots=_pop(snaps, "snapshots", "enabled", bool, True),
        snapshot_max_bytes=_pop(snaps, "snapshots", "max_bytes", int, 24_000),
        snapshot_interval_s=float(_pop(snaps, "snapshots", "interval_s", (int, float), 10.0)),
        snapshot_min_priority=_priority(_pop(snaps, "snapshots", "min_priority", str, "IMMEDIATE")),
    )
    _no_more(snaps, "snapshots")
    if not 0 <= number <= 255:
        raise CameraConfigError("[camera] number must be 0-255")

    privacy_table = dict(data.get("privacy", {}))
    privacy = PrivacyConfig(
        mask_persons=_pop(privacy_table, "privacy", "mask_persons", bool, False),
        blur_heads_without_face=_pop(privacy_table, "privacy", "blur_heads_without_face", bool, True),
    )
    _no_more(privacy_table, "privacy")

    detector = dict(data.get("detector", {"type": "ssdlite_person"}))
    name = _pop(detector, "detector", "type", str, "ssdlite_person")

    zones: dict[str, Zone] = {}
    for table in data.get("zones", []):
        table = dict(table)
        zone_name = _pop(table, "zones", "name", str, None)
        if not zone_name or zone_name in zones:
            raise CameraConfigError(f"[[zones]] needs a unique name, got {zone_name!r}")
        points = tuple((float(x), float(y)) for x, y in _pop(table, "zones", "points", list, []))
        area = _pop(table, "zones", "area_m2", (int, float), None)
        _no_more(table, f"zone {zone_name}")
        zones[zone_name] = Zone(zone_name, points, float(area) if area is not None else None)

    rules = tuple(dict(table) for table in data.get("rules", []))
    for index, table in enumerate(rules):
        _rule(index, table, zones)  # check now, build later
    return CameraConfig(fps, pipeline, privacy, name, detector, zones, rules, destination, base_dir, position)


def _rule(index: int, table: Mapping[str, Any], zones: Mapping[str, Zone]) -> Rule:
    options = dict(table)
    kind = options.pop("type", None)
    if kind not in RULE_TYPES:
        raise CameraConfigError(f"[[rules]] #{index + 1}: type must be one of {', '.join(RULE_TYPES)}")
    rule_type = RULE_TYPES[kind]
    fields = {f.name for f in dataclasses.fields(rule_type)} - {"index"}
    unknown = sorted(set(options) - fields - {"min_static_s"})
    if unknown:
        raise CameraConfigError(f"[[rules]] #{index + 1} ({kind}): unknown option(s) {', '.join(unknown)}")
    if "zone" in options:
        if options["zone"] not in zones:
            raise CameraConfigError(f"[[rules]] #{index + 1} ({kind}): no zone named {options['zone']!r}")
        options["zone"] = zones[options["zone"]]
    if "priority" in options:
        options["priority"] = _priority(options["priority"])
    if "labels" in options:
        options["labels"] = frozenset(options["labels"])
    if "min_static_s" in options:
        options["background"] = BackgroundConfig(min_static_s=float(options.pop("min_static_s")))
    try:
        rule: Rule = rule_type(index, **options)
    except TypeError as exc:
        raise CameraConfigError(f"[[rules]] #{index + 1} ({kind}): {exc}") from None
    return rule


def _priority(name: str) -> Priority:
    try:
        return Priority[name.upper()]
    except KeyError:
        raise CameraConfigError(f"priority must be one of {', '.join(p.name for p in Priority)}") from None


def _pop(table: dict[str, Any], section: str, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = table.pop(key, default)
    if value is not None and not isinstance(value, kind):
        raise CameraConfigError(f"[{section}] {key} has the wrong type ({type(value).__name__})")
    return value


def _no_more(table: dict[str, Any], section: str) -> None:
    if table:
        raise CameraConfigError(f"[{section}] unknown key(s) {', '.join(sorted(table))}")
