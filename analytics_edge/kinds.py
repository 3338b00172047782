"""Bundle payload kinds owned by analytics_edge (applications number theirs from 32 up)."""

from __future__ import annotations

DETECTION_EVENT = 40  # a compact :class:`analytics_edge.events.DetectionRecord`
SNAPSHOT = 41  # an anonymised JPEG: :class:`analytics_edge.events.SnapshotRecord`
