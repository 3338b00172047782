"""Tracker lifecycle: start after min_hits, rate-limited updates, end after max_missing_s."""

from __future__ import annotations

from analytics_edge.detectors.base import Detection
from analytics_edge.tracking import Phase, Tracker, TrackerConfig


def _person(x: float, y: float = 100.0, size: float = 100.0) -> Detection:
    return Detection(x, y, x + size / 2, y + size, 0.9, "person")


def test_lifecycle_start_update_end() -> None:
    tracker = Tracker(TrackerConfig(min_hits=2, update_interval_s=1.0, max_missing_s=0.5))
    phases = []
    for step in range(16):  # 0.2 s apart, moving 10 px a frame
        now = step * 0.2
        for event in tracker.update([_person(10 + 10 * step)], now):
            phases.append((round(now, 1), event.phase, event.obj.track_id))
    for step in range(16, 21):  # then it is gone
        for event in tracker.update([], step * 0.2):
            phases.append((round(step * 0.2, 1), event.phase, event.obj.track_id))
    assert phases[0] == (0.2, Phase.START, 1)  # confirmed at its second sighting
    updates = [p for p in phases if p[1] is Phase.UPDATE]
    assert [p[0] for p in updates] == [1.2, 2.2]  # at most one a second
    assert phases[-1][1] is Phase.END and phases[-1][0] > 3.0 + 0.5
    assert {p[2] for p in phases} == {1}


def test_single_stray_detection_is_not_an_object() -> None:
    tracker = Tracker(TrackerConfig(min_hits=2))
    assert tracker.update([_person(10)], 0.0) == []
    assert tracker.update([], 0.2) == []
    assert tracker.update([], 5.0) == []  # dropped silently: it never started
    assert tracker.objects == []


def test_two_people_keep_their_ids_and_a_gap_is_bridged() -> None:
    tracker = Tracker(TrackerConfig(min_hits=1, max_missing_s=1.0))
    starts = tracker.update([_person(0), _person(300)], 0.0)
    assert sorted(e.obj.track_id for e in starts) == [1, 2]
    for step in range(1, 10):
        seen = [_person(300 - 8 * step)] if step % 3 == 0 else [_person(8 * step), _person(300 - 8 * step)]
        assert [e for e in tracker.update(seen, step * 0.2) if e.phase is not Phase.UPDATE] == []
    by_id = {o.track_id: o for o in tracker.objects}
    assert by_id[1].box[0] < by_id[2].box[0]  # still left and right


def test_labels_never_mix() -> None:
    tracker = Tracker(TrackerConfig(min_hits=1))
    tracker.update([_person(10)], 0.0)
    bag = Detection(10, 100, 60, 200, 0.9, "bag", 1)
    events = tracker.update([bag], 0.2)
    assert [(e.phase, e.obj.label) for e in events] == [(Phase.START, "bag")]
