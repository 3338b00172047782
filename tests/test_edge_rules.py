"""Every rule on synthetic scenes built from the skimage photos, with the real person detector.

Each scene is encoded to a real video file, decoded by the camera source, and run through
detector → tracker → rules → compact records; the tests read the decoded records, so the wire
format is in the loop too.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from analytics_edge import synthetic
from analytics_edge.detectors.ssdlite import SsdlitePersonConfig, SsdlitePersonDetector
from analytics_edge.events import DetectionRecord, decode_event
from analytics_edge.kinds import DETECTION_EVENT
from analytics_edge.pipeline import CameraPipeline, PipelineConfig
from analytics_edge.rules import (
    AbandonedObjectRule,
    CrowdRule,
    EventType,
    IntrusionRule,
    LoiteringRule,
    PersonDownRule,
    Rule,
    Trend,
    Zone,
)
from analytics_edge.sources import SourceConfig, VideoSource
from analytics_edge.tracking import Phase
from relay.bundle import EPOCH_UNIX, Priority

RunScene = Callable[[str], list[DetectionRecord]]

W, H = synthetic.WIDTH, synthetic.HEIGHT
RESTRICTED = Zone("restricted", ((400, 0), (W, 0), (W, H), (400, H)))  # right of x = 400
CENTRE = Zone("centre", ((200, 0), (440, 0), (440, H), (200, H)))
PLAZA = Zone("plaza", ((0, 0), (W, 0), (W, H), (0, H)), area_m2=60.0)


def _rules() -> list[Rule]:
    return [
        IntrusionRule(0, RESTRICTED),
        LoiteringRule(1, CENTRE, dwell_s=5.0),
        CrowdRule(2, PLAZA, min_count=3),
        AbandonedObjectRule(3, update_interval_s=2.0),
        PersonDownRule(4),
    ]


@pytest.fixture(scope="module")
def detector() -> SsdlitePersonDetector:
    return SsdlitePersonDetector(SsdlitePersonConfig())


@pytest.fixture(scope="module")
def run_scene(detector: SsdlitePersonDetector, tmp_path_factory: pytest.TempPathFactory) -> RunScene:
    """Records produced by a scene, computed once per scene for the whole module."""
    cache: dict[str, list[DetectionRecord]] = {}
    folder = tmp_path_factory.mktemp("scenes")

    def run(name: str) -> list[DetectionRecord]:
        if name not in cache:
            clip = synthetic.write_clip(synthetic.SCENES[name], folder / f"{name}.mp4")
            pipeline = CameraPipeline(
                detector, _rules(), PipelineConfig(snapshots=False), start_time=EPOCH_UNIX
            )
            records = []
            for frame in VideoSource(SourceConfig(str(clip), target_fps=5)).frames():
                for out in pipeline.process(frame):
                    assert out.kind == DETECTION_EVENT and len(out.payload) <= 48
                    records.append(decode_event(out.payload))
            cache[name] = records
        return cache[name]

    return run


def _of(records: list[DetectionRecord], kind: EventType, phase: Phase | None = None) -> list[DetectionRecord]:
    return [r for r in records if r.type is kind and (phase is None or r.phase is phase)]


def _t(record: DetectionRecord) -> float:
    return record.time - EPOCH_UNIX  # stream time: the pipeline started at the epoch


def test_intrusion_when_entering_the_restricted_zone(run_scene: RunScene) -> None:
    starts = _of(run_scene("entering_zone"), EventType.INTRUSION, Phase.START)
    assert len(starts) == 1
    # her feet (box bottom centre) cross x = 400 at about t = 2.9 s
    assert 2.4 <= _t(starts[0]) <= 4.0
    assert starts[0].priority is Priority.IMMEDIATE and starts[0].box[2] > 400 / W
    assert _of(run_scene("standing_still"), EventType.INTRUSION) == []


def test_loitering_only_after_the_dwell_time(run_scene: RunScene) -> None:
    starts = _of(run_scene("standing_still"), EventType.LOITERING, Phase.START)
    assert len(starts) == 1 and starts[0].dwell_s >= 5 and 5.0 <= _t(starts[0]) <= 6.5
    assert starts[0].priority is Priority.PRIORITY
    # walking through the centre takes about four seconds: passing by is not loitering
    assert _of(run_scene("walking_past"), EventType.LOITERING) == []


def test_crowd_count_density_and_trend(run_scene: RunScene) -> None:
    records = run_scene("crowd_gathering")
    starts = _of(records, EventType.CROWD, Phase.START)
    assert len(starts) == 1
    crowd = starts[0]
    assert crowd.count == 3 and 6.0 <= _t(crowd) <= 7.5  # the third person arrives at t = 6 s
    assert crowd.density == pytest.approx(3 / 60, abs=0.01)
    assert crowd.trend is Trend.RISING
    assert _of(run_scene("walking_past"), EventType.CROWD) == []


def test_abandoned_bag_found_after_its_owner_left(run_scene: RunScene) -> None:
    starts = _of(run_scene("bag_left_behind"), EventType.ABANDONED_OBJECT, Phase.START)
    assert len(starts) == 1, starts
    bag = starts[0]
    assert _t(bag) >= 8.0  # the owner is gone at t = 8 s
    x1, y1, x2, y2 = synthetic.BAG_BOX
    cx, cy = (bag.box[0] + bag.box[2]) / 2 * W, (bag.box[1] + bag.box[3]) / 2 * H
    assert x1 <= cx <= x2 and y1 <= cy <= y2
    # later updates carry the whole bag
    updates = _of(run_scene("bag_left_behind"), EventType.ABANDONED_OBJECT)
    last = updates[-1].box
    assert last[0] * W <= x1 + 10 and last[2] * W >= x2 - 10


@pytest.mark.parametrize("scene", ["standing_still", "walking_past", "crowd_gathering", "entering_zone"])
def test_people_are_never_abandoned_objects(run_scene: RunScene, scene: str) -> None:
    assert _of(run_scene(scene), EventType.ABANDONED_OBJECT) == []


def test_person_down(run_scene: RunScene) -> None:
    starts = _of(run_scene("person_falls"), EventType.PERSON_DOWN, Phase.START)
    assert len(starts) == 1 and _t(starts[0]) >= 5.0  # lying from t = 3 s, reported after 2 s
    for upright in ("standing_still", "walking_past", "crowd_gathering"):
        assert _of(run_scene(upright), EventType.PERSON_DOWN) == []
