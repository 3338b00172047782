"""Rules turn tracked objects into the few events a command post cares about.

Each camera has zones drawn in image coordinates (polygons) and a list of rules. A person is in a
zone when the bottom centre of their box (where they stand) is inside it. Every rule reports its
incidents with the same lifecycle as tracks: ``START`` when it begins, ``UPDATE`` at most every
``update_interval_s``, ``END`` when it is over (after ``hold_s`` of absence, so a flickering
detection does not open and close the incident every frame). Each rule carries the priority class
its events travel with.

Sans-I/O: :meth:`Rule.evaluate` takes an :class:`Observation` (time, tracked objects, the frame)
and returns :class:`RuleEvent` values.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Protocol

import numpy as np

from analytics_edge.background import BackgroundConfig, StaticObjectModel
from analytics_edge.detectors.base import Detection
from analytics_edge.tracking import Box, Phase, TrackedObject
from relay.bundle import Priority


class RuleConfigError(ValueError):
    """A zone or rule setting that cannot work (the message names it)."""


class EventType(IntEnum):
    INTRUSION = 1
    LOITERING = 2
    CROWD = 3
    ABANDONED_OBJECT = 4
    PERSON_DOWN = 5


class Trend(IntEnum):
    STEADY = 0
    RISING = 1
    FALLING = 2


@dataclass(frozen=True, slots=True)
class Zone:
    name: str
    points: tuple[tuple[float, float], ...]  # polygon in image pixels
    area_m2: float | None = None  # real ground area, for crowd density

    def __post_init__(self) -> None:
        if len(self.points) < 3:
            raise RuleConfigError(f"zone {self.name!r} needs at least 3 points")
        if self.area_m2 is not None and self.area_m2 <= 0:
            raise RuleConfigError(f"zone {self.name!r}: area_m2 must be positive")

    def contains(self, x: float, y: float) -> bool:
        """Even-odd ray casting."""
        inside = False
        pts = self.points
        for (x1, y1), (x2, y2) in zip(pts, pts[1:] + pts[:1], strict=True):
            if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
                inside = not inside
        return inside

    @property
    def box(self) -> Box:
        xs, ys = [p[0] for p in self.points], [p[1] for p in self.points]
        return (min(xs), min(ys), max(xs), max(ys))


@dataclass(frozen=True, slots=True)
class Observation:
    time: float
    objects: tuple[TrackedObject, ...]
    frame: np.ndarray
    detections: tuple[Detection, ...] = ()  # this frame's raw detections, confirmed or not


@dataclass(frozen=True, slots=True)
class RuleEvent:
    type: EventType
    phase: Phase
    priority: Priority
    rule_index: int
    time: float
    subject_id: int  # track id, or an incident number for crowds and objects
    box: Box
    label_id: int = 0
    score: float = 0.0
    count: int = 0
    dwell_s: float = 0.0
    density: float = 0.0  # persons per m², when the zone's area is known
    trend: Trend = Trend.STEADY


class Rule(Protocol):
    def evaluate(self, observation: Observation) -> list[RuleEvent]: ...


@dataclass
class _Lifecycle:
    """START / rate-limited UPDATE / END for the incidents a rule sees active in each frame."""

    update_interval_s: float
    hold_s: float = 0.0
    _open: dict[int, tuple[RuleEvent, float, float]] = field(default_factory=dict)  # latest, seen, sent

    def step(self, active: dict[int, RuleEvent], now: float) -> list[RuleEvent]:
        events = []
        for key, event in active.items():
            if key not in self._open:
                events.append(replace(event, phase=Phase.START))
                self._open[key] = (event, now, now)
                continue
            _, _, sent = self._open[key]
            if now - sent >= self.update_interval_s:
                events.append(replace(event, phase=Phase.UPDATE))
                sent = now
            self._open[key] = (event, now, sent)
        for key, (latest, seen, _) in list(self._open.items()):
            if key not in active and now - seen >= self.hold_s:
                events.append(replace(latest, phase=Phase.END, time=now))
                del self._open[key]
        return events


def _people(objects: tuple[TrackedObject, ...], labels: frozenset[str]) -> list[TrackedObject]:
    return [o for o in objects if o.label in labels]


PERSON = frozenset({"person"})


@dataclass
class IntrusionRule:
    """Someone is inside a zone where nobody should be."""

    index: int
    zone: Zone
    labels: frozenset[str] = PERSON
    priority: Priority = Priority.IMMEDIATE
    update_interval_s: float = 10.0

    def __post_init__(self) -> None:
        self._life = _Lifecycle(self.update_interval_s)

    def evaluate(self, observation: Observation) -> list[RuleEvent]:
        active = {
            o.track_id: RuleEvent(
                EventType.INTRUSION, Phase.START, self.priority, self.index, observation.time,
                o.track_id, o.box, o.label_id, o.score, count=1,
            )
            for o in _people(observation.objects, self.labels)
            if self.zone.contains(*o.foot)
        }  # fmt: skip
        return self._life.step(active, observation.time)


@dataclass
class LoiteringRule:
    """Someone has stayed in a zone longer than ``dwell_s``."""

    index: int
    zone: Zone
    dwell_s: float
    labels: frozenset[str] = PERSON
    priority: Priority = Priority.PRIORITY
    update_interval_s: float = 30.0

    def __post_init__(self) -> None:
        if self.dwell_s <= 0:
            raise RuleConfigError("loitering dwell_s must be positive")
        self._life = _Lifecycle(self.update_interval_s)
        self._entered: dict[int, float] = {}

    def evaluate(self, observation: Observation) -> list[RuleEvent]:
        now = observation.time
        inside = [o for o in _people(observation.objects, self.labels) if self.zone.contains(*o.foot)]
        self._entered = {o.track_id: self._entered.get(o.track_id, now) for o in inside}
        active = {
            o.track_id: RuleEvent(
                EventType.LOITERING, Phase.START, self.priority, self.index, now, o.track_id, o.box,
                o.label_id, o.score, count=1, dwell_s=now - self._entered[o.track_id],
            )
            for o in inside
            if now - self._entered[o.track_id] >= self.dwell_s
        }  # fmt: skip
        return self._life.step(active, now)


@dataclass
class CrowdRule:
    """Too many people in a zone (count or density), with the trend of the count."""

    index: int
    zone: Zone
    min_count: int
    min_density: float | None = None  # persons per m²; needs the zone's area_m2
    trend_window_s: float = 5.0
    priority: Priority = Priority.IMMEDIATE
    update_interval_s: float = 5.0
    hold_s: float = 3.0

    def __post_init__(self) -> None:
        if self.min_count < 1:
            raise RuleConfigError("crowd min_count must be at least 1")
        if self.min_density is not None and self.zone.area_m2 is None:
            raise RuleConfigError(f"crowd min_density needs area_m2 on zone {self.zone.name!r}")
        self._life = _Lifecycle(self.update_interval_s, self.hold_s)
        self._history: deque[tuple[float, int]] = deque(maxlen=10_000)

    def trend(self, now: float) -> Trend:
        """Mean count over the last window against the window before it."""
        recent = [c for t, c in self._history if now - t < self.trend_window_s]
        earlier = [c for t, c in self._history if self.trend_window_s <= now - t < 2 * self.trend_window_s]
        if not recent or not earlier:
            return Trend.STEADY
        change = sum(recent) / len(recent) - sum(earlier) / len(earlier)
        return Trend.RISING if change >= 0.5 else Trend.FALLING if change <= -0.5 else Trend.STEADY

    def evaluate(self, observation: Observation) -> list[RuleEvent]:
        now = observation.time
        count = sum(1 for o in _people(observation.objects, PERSON) if self.zone.contains(*o.foot))
        self._history.append((now, count))
        while self._history and now - self._history[0][0] >= 2 * self.trend_window_s:
            self._history.popleft()
        density = count / self.zone.area_m2 if self.zone.area_m2 else 0.0
        crowded = count >= self.min_count or (self.min_density is not None and density >= self.min_density)
        active = {}
        if crowded:
            active[0] = RuleEvent(
                EventType.CROWD, Phase.START, self.priority, self.index, now, 0, self.zone.box,
                count=count, density=density, trend=self.trend(now),
            )  # fmt: skip
        return self._life.step(active, now)


@dataclass
class AbandonedObjectRule:
    """Something that is not a person appeared, stayed still and was left there."""

    index: int
    zone: Zone | None = None
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    priority: Priority = Priority.IMMEDIATE
    update_interval_s: float = 60.0
    hold_s: float = 3.0

    def __post_init__(self) -> None:
        self._model = StaticObjectModel(self.background)
        self._life = _Lifecycle(self.update_interval_s, self.hold_s)
        self._known: dict[int, Box] = {}  # incident number -> last box
        self._next = 1

    def evaluate(self, observation: Observation) -> list[RuleEvent]:
        now = observation.time
        people = [_widen(o.box) for o in observation.objects]
        people += [_widen((d.x1, d.y1, d.x2, d.y2)) for d in observation.detections]
        blobs = self._model.update(observation.frame, now, people)
        active = {}
        for box in blobs:
            if self.zone is not None and not self.zone.contains((box[0] + box[2]) / 2, box[3] - 1):
                continue
            key = self._identify(box)
            active[key] = RuleEvent(
                EventType.ABANDONED_OBJECT, Phase.START, self.priority, self.index, now, key, box
            )
        return self._life.step(active, now)

    def _identify(self, box: Box) -> int:
        """The same incident number for the same object seen again (overlapping its last box)."""
        for key, known in self._known.items():
            if _overlap_of_smaller(box, known) > 0.5:
                self._known[key] = box
                return key
        key, self._next = self._next, self._next + 1
        self._known[key] = box
        return key


def _overlap_of_smaller(a: Box, b: Box) -> float:
    """Intersection over the smaller area: a blob that grows as it is uncovered stays itself."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return width * height / smaller if smaller > 0 else 0.0


def _widen(box: Box) -> Box:
    """A person's box grown by a fifth of its height: boxes cut heads, hands and shadows."""
    x1, y1, x2, y2 = box
    margin = (y2 - y1) / 5
    return (x1 - margin / 2, y1 - margin, x2 + margin / 2, y2 + margin / 2)


@dataclass
class PersonDownRule:
    """Optional heuristic: a person box much wider than tall for ``min_duration_s`` (lying down).

    The person model finds lying people only sometimes; treat this as a hint, never as the only
    way a fall is noticed.
    """

    index: int
    min_aspect: float = 1.3  # width / height
    min_duration_s: float = 2.0
    zone: Zone | None = None
    priority: Priority = Priority.IMMEDIATE
    update_interval_s: float = 30.0

    def __post_init__(self) -> None:
        self._life = _Lifecycle(self.update_interval_s)
        self._since: dict[int, float] = {}

    def evaluate(self, observation: Observation) -> list[RuleEvent]:
        now = observation.time
        lying = [
            o
            for o in _people(observation.objects, PERSON)
            if (o.box[2] - o.box[0]) >= self.min_aspect * (o.box[3] - o.box[1])
            and (self.zone is None or self.zone.contains(*o.foot))
        ]
        self._since = {o.track_id: self._since.get(o.track_id, now) for o in lying}
        active = {
            o.track_id: RuleEvent(
                EventType.PERSON_DOWN, Phase.START, self.priority, self.index, now, o.track_id, o.box,
                o.label_id, o.score, count=1, dwell_s=now - self._since[o.track_id],
            )
            for o in lying
            if now - self._since[o.track_id] >= self.min_duration_s
        }  # fmt: skip
        return self._life.step(active, now)
