"""How the command post journals camera records (entry-point group ``mesh112.records``).

Detection events and snapshots become JSON records in the command post's journal and on its live
stream, per camera; a snapshot names the event it illustrates (``event_seq``), so the dashboard
attaches the picture when it arrives, usually well after the event.
"""

from __future__ import annotations

import base64
from typing import Any

from analytics_edge.events import decode_event, decode_snapshot_record
from analytics_edge.kinds import DETECTION_EVENT, SNAPSHOT
from relay.daemon import RecordKind


def event_body(payload: bytes) -> dict[str, Any]:
    r = decode_event(payload)
    return {
        "camera": r.camera,
        "event": r.type.name.lower(),
        "phase": r.phase.name.lower(),
        "priority": r.priority.name,
        "rule": r.rule,
        "seq": r.seq,
        "subject": r.subject,
        "time": r.time,
        "box": list(r.box),
        "label_id": r.label_id,
        "score": round(r.score, 3),
        "count": r.count,
        "dwell_s": r.dwell_s,
        "density": r.density,
        "trend": r.trend.name.lower(),
        "snapshot_follows": r.snapshot_follows,
    }


def snapshot_body(payload: bytes) -> dict[str, Any]:
    s = decode_snapshot_record(payload)
    return {
        "camera": s.camera,
        "event_seq": s.event_seq,
        "time": s.time,
        "width": s.width,
        "height": s.height,
        "jpeg_base64": base64.b64encode(s.jpeg).decode("ascii"),
    }


def record_kinds() -> list[RecordKind]:
    return [
        RecordKind(DETECTION_EVENT, "detection_event", "detection", event_body),
        RecordKind(SNAPSHOT, "camera_snapshot", "camera_snapshot", snapshot_body),
    ]
