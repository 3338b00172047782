"""Bundle payload kinds owned by analytics_edge (the relay reserves 0-31 for its own).

``register_kinds`` adds them to a node's kind registry with validators, so a malformed record is
refused when it is sent, not when it arrives at the command post.
"""

from __future__ import annotations

from analytics_edge.clip_wire import decode_clip_bundle
from analytics_edge.events import decode_event, decode_snapshot_record
from relay.bundle import Kind
from relay.kinds import KindRegistry

DETECTION_EVENT = 40  # a compact :class:`analytics_edge.events.DetectionRecord`
SNAPSHOT = 41  # an anonymised JPEG: :class:`analytics_edge.events.SnapshotRecord`
CLIP = 42  # a signed evidence clip: :mod:`analytics_edge.clip_wire`

assert DETECTION_EVENT >= Kind.FIRST_APPLICATION_KIND


def _check_event(payload: bytes) -> None:
    decode_event(payload)  # raises EventDecodeError, a ValueError, as the registry expects


def _check_snapshot(payload: bytes) -> None:
    decode_snapshot_record(payload)


def _check_clip(payload: bytes) -> None:
    decode_clip_bundle(payload)


def register_kinds(registry: KindRegistry) -> None:
    registry.register(DETECTION_EVENT, "detection_event", _check_event)
    registry.register(SNAPSHOT, "camera_snapshot", _check_snapshot)
    registry.register(CLIP, "evidence_clip", _check_clip)
