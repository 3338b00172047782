"""PIDF-LO (RFC 4119, RFC 5491 shapes, RFC 5139 civic addresses) into typed locations.

Every ``location-info`` anywhere in the document is read (under ``tuple``, ``dm:device``,
``dm:person``, with or without a ``gml:location`` wrapper). A shape whose numbers cannot be read is
skipped with a warning; a document with no usable shape and no civic address raises
:class:`PidfError` (the request layer answers 424 only when location is required). Coordinates are
``lat lon`` (EPSG 4326/4979) as RFC 5491 says.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from lxml import etree

from ng112.errors import PidfError, XmlError
from ng112.xml import local_name, namespace, parse_xml, text_of

PIDF_NS = "urn:ietf:params:xml:ns:pidf"
GEOPRIV_NS = "urn:ietf:params:xml:ns:pidf:geopriv10"
CIVIC_NS = "urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr"
GML_NS = "http://www.opengis.net/gml"
GML3_LEGACY_NS = "urn:opengis:specification:gml:schema-xsd:feature:v3.0"  # RFC 4119 examples
GS_NS = "http://www.opengis.net/pidflo/1.0"
MAX_PIDF = 32 * 1024
MAX_VERTICES = 64

SHAPES = ("Point", "Circle", "Ellipse", "ArcBand", "Polygon", "Sphere", "Ellipsoid", "Prism")


@dataclass(frozen=True, slots=True)
class Shape:
    """One RFC 5491 shape. ``points`` holds (lat, lon) pairs: one centre, or a polygon's vertices.

    ``radius_m`` is the radius of a circle/sphere, the semi-major axis of an ellipse/ellipsoid, the
    outer radius of an arc band; 0 for a point or polygon.
    """

    kind: str
    points: tuple[tuple[float, float], ...]
    radius_m: float = 0.0
    altitude_m: float | None = None

    def centre(self) -> tuple[float, float]:
        lats = [p[0] for p in self.points]
        lons = [p[1] for p in self.points]
        return sum(lats) / len(lats), sum(lons) / len(lons)

    def uncertainty_m(self) -> float:
        """Radius of a circle around :meth:`centre` that covers the shape."""
        if self.kind in ("Polygon", "Prism"):
            lat0, lon0 = self.centre()
            return max(_distance_m(lat0, lon0, lat, lon) for lat, lon in self.points)
        return self.radius_m


@dataclass(frozen=True, slots=True)
class CivicAddress:
    fields: tuple[tuple[str, str], ...]  # RFC 5139 element name -> value, document order

    def get(self, name: str) -> str | None:
        for key, value in self.fields:
            if key == name:
                return value
        return None

    @property
    def floor(self) -> str | None:
        return self.get("FLR")

    @property
    def room(self) -> str | None:
        return self.get("ROOM")


@dataclass(frozen=True, slots=True)
class PidfLocation:
    entity: str
    shapes: tuple[Shape, ...]
    civic: tuple[CivicAddress, ...]
    method: str | None = None

    def best_point(self) -> tuple[float, float, float] | None:
        """(lat, lon, uncertainty in metres) of the most precise shape, or None."""
        if not self.shapes:
            return None
        best = min(self.shapes, key=lambda s: s.uncertainty_m())
        lat, lon = best.centre()
        return lat, lon, best.uncertainty_m()


def _distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlmb = phi2 - phi1, math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * 6_371_000 * math.asin(min(1.0, math.sqrt(a)))


def _numbers(text: str, what: str) -> list[float]:
    try:
        values = [float(x) for x in text.split()]
    except ValueError:
        raise PidfError(f"{what} is not a list of numbers: {text[:40]!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise PidfError(f"{what} has a non-finite number")
    return values


def _position(values: list[float], what: str) -> tuple[tuple[float, float], float | None]:
    if len(values) not in (2, 3):
        raise PidfError(f"{what} needs 2 or 3 coordinates, got {len(values)}")
    lat, lon = values[0], values[1]
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise PidfError(f"{what} is outside lat -90..90 / lon -180..180")
    return (lat, lon), (values[2] if len(values) == 3 else None)


_DMS = re.compile(r"^(\d{1,3}):(\d{1,2}):(\d{1,2}(?:\.\d+)?)([NSEW])$")


def _legacy_point(element: etree._Element) -> Shape:
    """RFC 4119's GML 3.0 ``gml:coordinates`` in degrees:minutes:seconds, e.g. ``37:46:30N 122:25:10W``."""
    coordinates = _first(element, GML3_LEGACY_NS, "coordinates")
    parts = text_of(coordinates).split()
    if len(parts) != 2:
        raise PidfError("gml:coordinates needs a latitude and a longitude")
    values = []
    for part, hemispheres in zip(parts, ("NS", "EW"), strict=True):
        match = _DMS.match(part)
        if match is None or match.group(4) not in hemispheres:
            raise PidfError(f"gml:coordinates value {part[:20]!r} is not d:m:sH")
        degrees = int(match.group(1)) + int(match.group(2)) / 60 + float(match.group(3)) / 3600
        values.append(-degrees if match.group(4) in "SW" else degrees)
    point, _ = _position(values, "gml:coordinates")
    return Shape("Point", (point,))


def _first(element: etree._Element, ns: str, name: str) -> etree._Element | None:
    for child in element.iter(f"{{{ns}}}{name}"):
        return child
    return None


def _length(element: etree._Element, ns: str, name: str) -> float:
    found = _first(element, ns, name)
    if found is None:
        raise PidfError(f"{local_name(element)} without {name}")
    values = _numbers(text_of(found), name)
    if len(values) != 1 or values[0] < 0:
        raise PidfError(f"{name} must be one non-negative number")
    return values[0]


def _parse_shape(element: etree._Element) -> Shape:
    kind = local_name(element)
    if kind in ("Polygon", "Prism"):
        pos_list = _first(element, GML_NS, "posList")
        dim = 3 if kind == "Prism" or "4979" in element.get("srsName", "") else 2
        if pos_list is not None:
            flat = _numbers(text_of(pos_list), "posList")
            if not flat or len(flat) % dim:
                raise PidfError(f"posList length {len(flat)} is not a multiple of {dim}")
            raw = [flat[i : i + dim] for i in range(0, len(flat), dim)]
        else:
            raw = [_numbers(text_of(p), "pos") for p in element.iter(f"{{{GML_NS}}}pos")]
        if len(raw) < 3 or len(raw) > MAX_VERTICES:
            raise PidfError(f"polygon needs 3..{MAX_VERTICES} vertices, got {len(raw)}")
        points = tuple(_position(v, "polygon vertex")[0] for v in raw)
        if len(points) > 3 and points[0] == points[-1]:
            points = points[:-1]  # the closing vertex repeats the first
        return Shape(kind, points)
    pos = _first(element, GML_NS, "pos")
    if pos is None:
        raise PidfError(f"{kind} without gml:pos")
    point, altitude = _position(_numbers(text_of(pos), "pos"), f"{kind} position")
    radius = 0.0
    if kind in ("Circle", "Sphere"):
        radius = _length(element, GS_NS, "radius")
    elif kind in ("Ellipse", "Ellipsoid"):
        radius = _length(element, GS_NS, "semiMajorAxis")
    elif kind == "ArcBand":
        radius = _length(element, GS_NS, "outerRadius")
    return Shape(kind, (point,), radius, altitude)


def _civic(element: etree._Element) -> CivicAddress:
    fields = []
    for child in element:
        name = local_name(child)
        value = text_of(child)
        if name and value:
            prefix = "" if namespace(child) == CIVIC_NS else "ext:"
            fields.append((prefix + name, value[:200]))
    return CivicAddress(tuple(fields[:64]))


def parse_pidf(data: bytes) -> tuple[PidfLocation, list[str]]:
    """Parse untrusted PIDF-LO bytes; returns the location and warnings, or raises PidfError."""
    try:
        root = parse_xml(data, max_bytes=MAX_PIDF)
    except XmlError as exc:
        raise PidfError(f"PIDF-LO unreadable: {exc}") from None
    if local_name(root) != "presence":
        raise PidfError(f"not a PIDF document: root element {root.tag!r}")
    warnings: list[str] = []
    if namespace(root) != PIDF_NS:
        warnings.append(f"PIDF root in namespace {namespace(root)!r}")
    shapes: list[Shape] = []
    civic: list[CivicAddress] = []
    infos = list(root.iter(f"{{{GEOPRIV_NS}}}location-info"))
    for info in infos:
        for element in info.iter():
            name = local_name(element)
            known_ns = namespace(element) in (GML_NS, GS_NS, GML3_LEGACY_NS)
            if known_ns and name in SHAPES and _is_outermost(element, info):
                try:
                    legacy = namespace(element) == GML3_LEGACY_NS
                    shapes.append(_legacy_point(element) if legacy else _parse_shape(element))
                except PidfError as exc:
                    warnings.append(f"{name} skipped: {exc}")
            elif name == "civicAddress":
                address = _civic(element)
                if address.fields:
                    civic.append(address)
    if not shapes and not civic:
        detail = f" ({'; '.join(warnings)})" if warnings else ""
        raise PidfError(f"PIDF-LO has no usable location (no readable shape or civic address){detail}")
    if len(infos) > 1:
        warnings.append(f"{len(infos)} location-info elements")
    method = _first(root, GEOPRIV_NS, "method")
    location = PidfLocation(root.get("entity", ""), tuple(shapes), tuple(civic), text_of(method) or None)
    return location, warnings


def _is_outermost(element: etree._Element, info: etree._Element) -> bool:
    """True unless the shape is nested in another shape (a Prism's base gml:Polygon)."""
    parent = element.getparent()
    while parent is not None and parent is not info:
        if local_name(parent) in SHAPES:
            return False
        parent = parent.getparent()
    return True
