"""A CAP 1.2 feed of the command post's active alarms, for other systems (an Atom feed of alerts).

Each entry carries the canonical CAP 1.2 alert of the alarm's current state (the panel's own CAP
once its follow-up arrived, else rebuilt from the first frame and the building enrolment,
XSD-valid); cancelled alarms leave the feed. The relay API serves the bytes of :func:`cap_feed_xml`
as ``application/atom+xml``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from lxml import etree

from ng112.alarmbook import AlarmBook, AlarmView
from ng112.buildings import BuildingRegistry
from ng112.canonical import record_to_cap
from ng112.cap import CapAlert, build_cap_xml, format_datetime

ATOM_NS = "http://www.w3.org/2005/Atom"


def current_alert(view: AlarmView, registry: BuildingRegistry, original: CapAlert | None = None) -> CapAlert:
    """The panel's own CAP once its follow-up arrived (``original``); until then the provisional CAP
    rebuilt from the first frame."""
    if original is not None:
        return original
    current = view.current
    reference_sent = None
    if current.reference is not None:
        for record in view.history:
            if (record.key_id, record.seq) == current.reference:
                reference_sent = record.sent_datetime
    return record_to_cap(current, registry.by_key(current.key_id), reference_sent)


def cap_feed_xml(
    book: AlarmBook,
    registry: BuildingRegistry,
    now: float,
    feed_id: str,
    original: Callable[[AlarmView], CapAlert | None] = lambda view: None,
) -> bytes:
    feed = etree.Element(f"{{{ATOM_NS}}}feed", nsmap={None: ATOM_NS})
    etree.SubElement(feed, f"{{{ATOM_NS}}}id").text = feed_id
    etree.SubElement(feed, f"{{{ATOM_NS}}}title").text = "Mesh112 active NG112 building alarms"
    etree.SubElement(feed, f"{{{ATOM_NS}}}updated").text = format_datetime(datetime.fromtimestamp(now, UTC))
    for view in sorted(book.active(), key=lambda v: v.current.sent, reverse=True):
        alert = current_alert(view, registry, original(view))
        entry = etree.SubElement(feed, f"{{{ATOM_NS}}}entry")
        etree.SubElement(entry, f"{{{ATOM_NS}}}id").text = f"{feed_id}:{alert.identifier}"
        title = alert.infos[0].headline if alert.infos else alert.msg_type
        prefix = "" if view.actual else f"[{view.first.status.upper()}] "
        etree.SubElement(entry, f"{{{ATOM_NS}}}title").text = f"{prefix}{title}"
        etree.SubElement(entry, f"{{{ATOM_NS}}}updated").text = format_datetime(alert.sent)
        content = etree.SubElement(entry, f"{{{ATOM_NS}}}content", type="application/cap+xml")
        content.append(etree.fromstring(build_cap_xml(alert)))
    return bytes(etree.tostring(feed, xml_declaration=True, encoding="UTF-8", pretty_print=True))
