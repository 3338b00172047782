"""Tracking across frames, so events are about objects, not about frames.

Detections are matched to tracks by IoU against each track's predicted box (greedy, best overlap
first, same label only). Each track smooths its box with an alpha-beta filter (constant velocity,
the cheap cousin of a Kalman filter), which carries it through a missed detection or two.

A track has a lifecycle, reported as :class:`TrackEvent`: ``START`` once it has been seen
``min_hits`` times (one stray detection is not an object), ``UPDATE`` at most every
``update_interval_s`` while it lives, ``END`` when it has gone unseen for ``max_missing_s``.
Sans-I/O: :meth:`Tracker.update` takes detections and ``now`` and returns events.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from analytics_edge.detectors.base import Detection, iou

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels


class Phase(IntEnum):
    START = 0
    UPDATE = 1
    END = 2


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    iou_threshold: float = 0.25
    min_hits: int = 2
    max_missing_s: float = 1.5
    update_interval_s: float = 5.0
    alpha: float = 0.6  # how much a new detection moves the box (1: no smoothing)
    beta: float = 0.2  # how much it corrects the velocity


@dataclass(frozen=True, slots=True)
class TrackedObject:
    """A confirmed track as rules see it in one frame."""

    track_id: int
    label: str
    label_id: int
    box: Box
    score: float
    first_seen: float
    last_seen: float

    @property
    def foot(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, self.box[3])


@dataclass(frozen=True, slots=True)
class TrackEvent:
    phase: Phase
    obj: TrackedObject
    time: float


class _Track:
    """Mutable filter state of one track; lives only inside a Tracker."""

    def __init__(self, track_id: int, detection: Detection, now: float) -> None:
        self.track_id = track_id
        self.label, self.label_id = detection.label, detection.label_id
        self.state = np.array(_to_cxcywh(detection), dtype=np.float64)  # cx, cy, w, h
        self.velocity = np.zeros(2)  # px/s of the centre
        self.score = detection.score
        self.first_seen = self.last_seen = self.updated = now
        self.hits = 1
        self.confirmed = False
        self.last_reported = now

    def predicted(self, now: float) -> np.ndarray:
        cx, cy, w, h = self.state
        dt = now - self.updated
        cx, cy = cx + self.velocity[0] * dt, cy + self.velocity[1] * dt
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])

    def correct(self, detection: Detection, now: float, config: TrackerConfig) -> None:
        dt = max(now - self.updated, 1e-3)
        predicted = self.state.copy()
        predicted[:2] += self.velocity * dt
        residual = np.array(_to_cxcywh(detection)) - predicted
        self.state = predicted + config.alpha * residual
        self.velocity += config.beta * residual[:2] / dt
        self.updated = self.last_seen = now
        self.score = detection.score
        self.hits += 1

    def view(self) -> TrackedObject:
        cx, cy, w, h = (float(v) for v in self.state)
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        return TrackedObject(
            self.track_id, self.label, self.label_id, box, self.score, self.first_seen, self.last_seen
        )


class Tracker:
    def __init__(self, config: TrackerConfig | None = None, *, first_id: int = 1) -> None:
        """``first_id``: the first object's id. A camera starts from its start time, so after a
        restart its new objects do not take the ids of objects it tracked before (the command post
        shows one card per camera and object)."""
        self.config = config or TrackerConfig()
        self._tracks: list[_Track] = []
        self._next_id = first_id

    @property
    def objects(self) -> list[TrackedObject]:
        """Confirmed tracks, as of the last update."""
        return [t.view() for t in self._tracks if t.confirmed]

    def update(self, detections: list[Detection], now: float) -> list[TrackEvent]:
        cfg = self.config
        events: list[TrackEvent] = []
        unmatched = self._match(detections, now)
        for detection in unmatched:
            self._tracks.append(_Track(self._next_id, detection, now))
            self._next_id += 1
        for track in self._tracks:
            if track.last_seen != now:
                continue
            if not track.confirmed and track.hits >= cfg.min_hits:
                track.confirmed = True
                track.last_reported = now
                events.append(TrackEvent(Phase.START, track.view(), now))
            elif track.confirmed and now - track.last_reported >= cfg.update_interval_s:
                track.last_reported = now
                events.append(TrackEvent(Phase.UPDATE, track.view(), now))
        alive = []
        for track in self._tracks:
            if now - track.last_seen <= cfg.max_missing_s:
                alive.append(track)
            elif track.confirmed:
                events.append(TrackEvent(Phase.END, track.view(), now))
        self._tracks = alive
        return events

    def _match(self, detections: list[Detection], now: float) -> list[Detection]:
        """Correct matched tracks; return the detections no track claimed."""
        if not self._tracks or not detections:
            return list(detections)
        predicted = np.array([t.predicted(now) for t in self._tracks])
        boxes = np.array([(d.x1, d.y1, d.x2, d.y2) for d in detections])
        overlaps = iou(predicted, boxes)
        same_label = np.array([[t.label == d.label for d in detections] for t in self._tracks])
        overlaps = np.where(same_label, overlaps, 0.0)
        taken_tracks: set[int] = set()
        taken_detections: set[int] = set()
        for flat in np.argsort(-overlaps, axis=None):
            ti, di = divmod(int(flat), len(detections))
            if overlaps[ti, di] < self.config.iou_threshold:
                break
            if ti in taken_tracks or di in taken_detections:
                continue
            self._tracks[ti].correct(detections[di], now, self.config)
            taken_tracks.add(ti)
            taken_detections.add(di)
        return [d for i, d in enumerate(detections) if i not in taken_detections]


def _to_cxcywh(d: Detection) -> tuple[float, float, float, float]:
    return ((d.x1 + d.x2) / 2, (d.y1 + d.y2) / 2, d.x2 - d.x1, d.y2 - d.y1)
