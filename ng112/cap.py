"""CAP (OASIS Common Alerting Protocol) 1.0/1.1/1.2 in, canonical CAP 1.2 out.

Input is read leniently (RFC 8876 §5.1: do not reject what is usable): any element order, the
1.0/1.1/1.2 namespaces, ``Z`` or missing time-zone offsets, CAP 1.0's ``Very Likely``, unknown enum
values mapped to ``Unknown``/``Other``. Each leniency adds a warning. What makes an alert unusable
raises :class:`CapError` carrying the RFC 8876 AlertMsg-Error code (100 not a CAP alert or a
required value unreadable, 102 required elements missing, 103 payload corrupted).

Output is strict: :func:`build_cap_xml` writes elements in XSD order with ``±hh:mm`` times and
:func:`validate_cap12` checks it against the OASIS ``cap12.xsd`` shipped in ``ng112/schema``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from lxml import etree

from ng112.errors import CapError, CapSchemaError, XmlError
from ng112.xml import local_name, namespace, parse_xml, text_of

CAP12_NS = "urn:oasis:names:tc:emergency:cap:1.2"
CAP_NAMESPACES = {
    "urn:oasis:names:tc:emergency:cap:1.0": "1.0",
    "http://www.incident.com/cap/1.0": "1.0",
    "urn:oasis:names:tc:emergency:cap:1.1": "1.1",
    CAP12_NS: "1.2",
}
MAX_CAP = 64 * 1024
MAX_INFOS = 16
XSD_PATH = Path(__file__).parent / "schema" / "cap12.xsd"

STATUSES = ("Actual", "Exercise", "System", "Test", "Draft")
MSG_TYPES = ("Alert", "Update", "Cancel", "Ack", "Error")
SCOPES = ("Public", "Restricted", "Private")
CATEGORIES: tuple[str, ...] = ("Geo", "Met", "Safety", "Security", "Rescue", "Fire", "Health", "Env")
CATEGORIES += ("Transport", "Infra", "CBRNE", "Other")
RESPONSE_TYPES: tuple[str, ...] = ("Shelter", "Evacuate", "Prepare", "Execute", "Avoid", "Monitor")
RESPONSE_TYPES += ("Assess", "AllClear", "None")
URGENCIES = ("Immediate", "Expected", "Future", "Past", "Unknown")
SEVERITIES = ("Extreme", "Severe", "Moderate", "Minor", "Unknown")
CERTAINTIES = ("Observed", "Likely", "Possible", "Unlikely", "Unknown")

_DATETIME = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$")


@dataclass(frozen=True, slots=True)
class CapReference:
    sender: str
    identifier: str
    sent: str  # as written in the referencing alert


@dataclass(frozen=True, slots=True)
class CapArea:
    description: str
    polygons: tuple[str, ...] = ()
    circles: tuple[str, ...] = ()
    geocodes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class CapResource:
    description: str
    mime_type: str
    uri: str | None = None


@dataclass(frozen=True, slots=True)
class CapInfo:
    categories: tuple[str, ...]
    event: str
    urgency: str
    severity: str
    certainty: str
    language: str = "en-US"
    response_types: tuple[str, ...] = ()
    event_codes: tuple[tuple[str, str], ...] = ()
    effective: datetime | None = None
    onset: datetime | None = None
    expires: datetime | None = None
    sender_name: str | None = None
    headline: str | None = None
    description: str | None = None
    instruction: str | None = None
    web: str | None = None
    contact: str | None = None
    parameters: tuple[tuple[str, str], ...] = ()
    resources: tuple[CapResource, ...] = ()
    areas: tuple[CapArea, ...] = ()


@dataclass(frozen=True, slots=True)
class CapAlert:
    identifier: str
    sender: str
    sent: datetime  # always time-zone aware
    status: str
    msg_type: str
    scope: str
    source: str | None = None
    restriction: str | None = None
    addresses: str | None = None
    codes: tuple[str, ...] = ()
    note: str | None = None
    references: tuple[CapReference, ...] = ()
    incidents: tuple[str, ...] = ()
    infos: tuple[CapInfo, ...] = ()
    version: str = "1.2"


def parse_datetime(value: str, field_name: str, warnings: list[str]) -> datetime:
    """A CAP date-time; ``Z`` and missing offsets are accepted with a warning (read as UTC)."""
    match = _DATETIME.match(value.strip())
    if match is None:
        raise CapError(f"<{field_name}> is not a date-time: {value[:40]!r}", 100)
    zone = match.group(8)
    text = value.strip()
    if zone is None:
        warnings.append(f"<{field_name}> has no time-zone offset; read as UTC")
        text += "+00:00"
    elif zone == "Z":
        warnings.append(f"<{field_name}> uses 'Z' (CAP 1.2 wants +00:00)")
        text = text[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise CapError(f"<{field_name}> is not a valid date-time: {value[:40]!r}", 100) from None


def format_datetime(value: datetime) -> str:
    """CAP 1.2 form: whole seconds with a ``±hh:mm`` offset (never ``Z``)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.replace(microsecond=0).isoformat()


def _enum(value: str, allowed: tuple[str, ...], fallback: str, name: str, warnings: list[str]) -> str:
    for option in allowed:
        if option.lower() == value.strip().lower():
            return option
    if name == "certainty" and value.strip().lower() == "very likely":
        warnings.append("CAP 1.0 certainty 'Very Likely' read as 'Likely'")
        return "Likely"
    warnings.append(f"<{name}> value {value[:30]!r} unknown; read as {fallback!r}")
    return fallback


def _children(element: etree._Element) -> dict[str, list[etree._Element]]:
    out: dict[str, list[etree._Element]] = {}
    for child in element:
        out.setdefault(local_name(child), []).append(child)
    return out


def _one(kids: dict[str, list[etree._Element]], name: str) -> str | None:
    found = kids.get(name)
    return text_of(found[0]) if found else None


def _pairs(elements: list[etree._Element]) -> tuple[tuple[str, str], ...]:
    out = []
    for element in elements:
        kids = _children(element)
        out.append((_one(kids, "valueName") or "", _one(kids, "value") or ""))
    return tuple(out)


def parse_references(text: str, warnings: list[str]) -> tuple[CapReference, ...]:
    refs = []
    for item in text.split():
        fields = item.split(",")
        if len(fields) != 3 or not all(fields):
            warnings.append(f"unreadable reference {item[:60]!r} ignored")
            continue
        refs.append(CapReference(fields[0], fields[1], fields[2]))
    if not refs:
        warnings.append("<references> is empty")
    return tuple(refs)


def _parse_info(element: etree._Element, warnings: list[str]) -> CapInfo:
    kids = _children(element)
    categories = tuple(
        _enum(text_of(e), CATEGORIES, "Other", "category", warnings) for e in kids.get("category", [])
    )
    if not categories:
        warnings.append("<info> without <category>; read as 'Other'")
        categories = ("Other",)
    event = _one(kids, "event")
    if not event:
        warnings.append("<info> without <event>")
    times = {}
    for name in ("effective", "onset", "expires"):
        raw = _one(kids, name)
        if raw:
            try:
                times[name] = parse_datetime(raw, name, warnings)
            except CapError as exc:
                warnings.append(f"{exc}; ignored")
    areas = tuple(
        CapArea(
            _one(_children(a), "areaDesc") or "",
            tuple(text_of(p) for p in _children(a).get("polygon", [])),
            tuple(text_of(c) for c in _children(a).get("circle", [])),
            _pairs(_children(a).get("geocode", [])),
        )
        for a in kids.get("area", [])
    )
    resources = tuple(
        CapResource(
            _one(_children(r), "resourceDesc") or "",
            _one(_children(r), "mimeType") or "application/octet-stream",
            _one(_children(r), "uri"),
        )
        for r in kids.get("resource", [])
    )
    return CapInfo(
        categories=categories,
        event=event or "Unknown event",
        urgency=_enum(_one(kids, "urgency") or "", URGENCIES, "Unknown", "urgency", warnings),
        severity=_enum(_one(kids, "severity") or "", SEVERITIES, "Unknown", "severity", warnings),
        certainty=_enum(_one(kids, "certainty") or "", CERTAINTIES, "Unknown", "certainty", warnings),
        language=_one(kids, "language") or "en-US",
        response_types=tuple(
            _enum(text_of(e), RESPONSE_TYPES, "None", "responseType", warnings)
            for e in kids.get("responseType", [])
        ),
        event_codes=_pairs(kids.get("eventCode", [])),
        effective=times.get("effective"),
        onset=times.get("onset"),
        expires=times.get("expires"),
        sender_name=_one(kids, "senderName"),
        headline=_one(kids, "headline"),
        description=_one(kids, "description"),
        instruction=_one(kids, "instruction"),
        web=_one(kids, "web"),
        contact=_one(kids, "contact"),
        parameters=_pairs(kids.get("parameter", [])),
        resources=resources,
        areas=areas,
    )


def parse_cap(data: bytes) -> tuple[CapAlert, list[str]]:
    """Parse untrusted CAP bytes into a :class:`CapAlert` and a list of warnings."""
    try:
        root = parse_xml(data, max_bytes=MAX_CAP)
    except XmlError as exc:
        raise CapError(f"CAP payload corrupted: {exc}", 103) from None
    return cap_from_element(root)


def cap_from_element(root: etree._Element) -> tuple[CapAlert, list[str]]:
    warnings: list[str] = []
    version = CAP_NAMESPACES.get(namespace(root))
    if local_name(root) != "alert" or version is None:
        raise CapError(f"not a CAP alert: root element {root.tag!r}", 100)
    if version != "1.2":
        warnings.append(f"CAP {version} read and mapped to CAP 1.2")
    kids = _children(root)
    missing = [n for n in ("identifier", "sender", "sent", "status", "msgType") if not _one(kids, n)]
    if missing:
        raise CapError(f"CAP alert lacks required element(s): {', '.join(missing)}", 102)
    scope = _one(kids, "scope")
    if not scope:
        warnings.append("<scope> missing; read as 'Private' (RFC 8876 §4.2)")
    infos = kids.get("info", [])
    if len(infos) > MAX_INFOS:
        raise CapError(f"CAP alert with more than {MAX_INFOS} <info> blocks", 100)
    msg_type = _enum(_one(kids, "msgType") or "", MSG_TYPES, "Alert", "msgType", warnings)
    references_text = _one(kids, "references")
    references: tuple[CapReference, ...] = ()
    if references_text is not None and "references" in kids:
        references = parse_references(references_text, warnings)
    if msg_type in ("Update", "Cancel", "Ack", "Error") and not references:
        warnings.append(f"{msg_type} without usable <references>")
    incidents = tuple((_one(kids, "incidents") or "").split())
    if not incidents:
        warnings.append("<incidents> missing (RFC 8876 §4.2 requires it)")
    alert = CapAlert(
        identifier=_one(kids, "identifier") or "",
        sender=_one(kids, "sender") or "",
        sent=parse_datetime(_one(kids, "sent") or "", "sent", warnings),
        status=_enum(_one(kids, "status") or "", STATUSES, "Actual", "status", warnings),
        msg_type=msg_type,
        scope=_enum(scope, SCOPES, "Private", "scope", warnings) if scope else "Private",
        source=_one(kids, "source"),
        restriction=_one(kids, "restriction") or None,
        addresses=_one(kids, "addresses") or None,
        codes=tuple(text_of(c) for c in kids.get("code", [])),
        note=_one(kids, "note"),
        references=references,
        incidents=incidents,
        infos=tuple(_parse_info(info, warnings) for info in infos),
        version=version,
    )
    if " " in alert.identifier or "," in alert.identifier:
        warnings.append("<identifier> contains spaces or commas (not allowed by CAP 1.2)")
    return alert, warnings


def _add(parent: etree._Element, name: str, value: str | None) -> None:
    if value:
        etree.SubElement(parent, f"{{{CAP12_NS}}}{name}").text = value


def _add_pairs(parent: etree._Element, name: str, pairs: tuple[tuple[str, str], ...]) -> None:
    for key, value in pairs:
        element = etree.SubElement(parent, f"{{{CAP12_NS}}}{name}")
        _add(element, "valueName", key or "unnamed")
        etree.SubElement(element, f"{{{CAP12_NS}}}value").text = value


def build_cap_xml(alert: CapAlert) -> bytes:
    """Canonical CAP 1.2 XML (XSD element order, ``±hh:mm`` times), UTF-8 with declaration."""
    root = etree.Element(f"{{{CAP12_NS}}}alert", nsmap={None: CAP12_NS})
    _add(root, "identifier", alert.identifier)
    _add(root, "sender", alert.sender)
    _add(root, "sent", format_datetime(alert.sent))
    for name, value in (("status", alert.status), ("msgType", alert.msg_type), ("source", alert.source)):
        _add(root, name, value)
    _add(root, "scope", alert.scope)
    _add(root, "restriction", alert.restriction)
    _add(root, "addresses", alert.addresses)
    for code in alert.codes:
        _add(root, "code", code)
    _add(root, "note", alert.note)
    refs = " ".join(f"{r.sender},{r.identifier},{r.sent}" for r in alert.references)
    _add(root, "references", refs)
    _add(root, "incidents", " ".join(alert.incidents))
    for info in alert.infos:
        element = etree.SubElement(root, f"{{{CAP12_NS}}}info")
        _add(element, "language", info.language)
        for category in info.categories:
            _add(element, "category", category)
        _add(element, "event", info.event)
        for response in info.response_types:
            _add(element, "responseType", response)
        for name in ("urgency", "severity", "certainty"):
            _add(element, name, getattr(info, name))
        _add_pairs(element, "eventCode", info.event_codes)
        for name in ("effective", "onset", "expires"):
            value = getattr(info, name)
            _add(element, name, format_datetime(value) if value else None)
        for name in ("sender_name", "headline", "description", "instruction", "web", "contact"):
            camel = "senderName" if name == "sender_name" else name
            _add(element, camel, getattr(info, name))
        _add_pairs(element, "parameter", info.parameters)
        for resource in info.resources:
            res = etree.SubElement(element, f"{{{CAP12_NS}}}resource")
            _add(res, "resourceDesc", resource.description or "resource")
            _add(res, "mimeType", resource.mime_type)
            _add(res, "uri", resource.uri)
        for area in info.areas:
            area_element = etree.SubElement(element, f"{{{CAP12_NS}}}area")
            _add(area_element, "areaDesc", area.description or "area")
            for polygon in area.polygons:
                _add(area_element, "polygon", polygon)
            for circle in area.circles:
                _add(area_element, "circle", circle)
            _add_pairs(area_element, "geocode", area.geocodes)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))


@cache
def _schema() -> etree.XMLSchema:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    return etree.XMLSchema(etree.parse(str(XSD_PATH), parser=parser))


def validate_cap12(xml: bytes) -> None:
    """Raise :class:`CapSchemaError` unless ``xml`` is valid against the OASIS CAP 1.2 XSD."""
    schema = _schema()
    document = etree.fromstring(xml, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    if not schema.validate(document):
        error = schema.error_log.last_error
        raise CapSchemaError(f"CAP 1.2 schema violation: {error.message if error else 'unknown'}", 100)
