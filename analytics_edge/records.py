"""How the command post journals camera records (entry-point group ``mesh112.command_post``).

Detection events and snapshots become JSON records in the command post's journal and on its live
stream, per camera; a snapshot names the event it illustrates (``event_seq``), so the dashboard
attaches the picture when it arrives, usually well after the event.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, ClassVar

from analytics_edge.events import decode_event, decode_snapshot_record
from analytics_edge.kinds import DETECTION_EVENT, SNAPSHOT
from relay.apps import RecordUpdate
from relay.engine import Delivery
from relay.node import Node


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


class CameraRecords:
    """The command post side of analytics_edge: one journal record per event, one per snapshot."""

    record_type = "detection"
    kinds: ClassVar[Mapping[int, str]] = {DETECTION_EVENT: "detection_event", SNAPSHOT: "camera_snapshot"}

    async def handle(self, delivery: Delivery) -> list[RecordUpdate]:
        """A record id names the event's camera, its sequence number and its whole second: a camera
        numbers its events from 1 again after a restart, so the sequence number alone would file a
        new intrusion under an old event's record (and its old time) at the command post."""
        origin = delivery.origin.hex()[:8]
        try:
            if delivery.kind == DETECTION_EVENT:
                body = event_body(delivery.payload)
                return [RecordUpdate(f"{origin}-{body['camera']}-{body['seq']}-{int(body['time'])}", body)]
            body = snapshot_body(delivery.payload)  # its time is the illustrated event's whole second
            event = f"{origin}-{body['camera']}-{body['event_seq']}-{int(body['time'])}"
            return [RecordUpdate(f"{event}-snapshot", body)]
        except ValueError:
            return []

    async def acknowledge(self, record_id: str, ack: dict[str, Any]) -> None:
        """Detections need no acknowledgement back to the camera; the journal keeps the operator's."""


def command_post_app(node: Node) -> CameraRecords:
    return CameraRecords()
