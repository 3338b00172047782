"""FLASH over routes LoRa beacons cannot keep fresh (issue 15): a small field with real engines.

A responder ``s`` reaches relay ``r`` over LoRa; ``r`` reaches two responders ``a`` and ``b`` over
LoRa, and each of them has cellular to the command post (``b``'s costs more, so ``a`` is the best
route). ``a``'s cellular comes back for 3 s and goes again just before the alarm at 1,200 s, so the
beacon ``r`` heard last says ``a`` reaches the post: the route is stale, and LoRa's rate-limited
beacons cannot say so for another minute and a half. Before the fix,
``r`` handed the alarm to ``a`` alone, a dead end, and it waited there (tens of seconds, or until
``a``'s cellular returned); now a FLASH takes its two best routes, so it arrives through ``b`` one
frame later than the alarms at 600 s and 700 s, whose routes are fresh.
"""

from __future__ import annotations

from typing import Any

from relay.bundle import Priority
from relay.sim.scenario import parse_scenario
from relay.sim.world import simulate

LORA_FRAME_S = 1.2  # one LongFast frame of a small alarm, about


def _field() -> dict[str, Any]:
    return {
        "name": "stale-route",
        "seed": 3,
        "duration_s": 1300.0,
        "drain_s": 200.0,
        "node": [
            {"name": "cp", "role": "command_post"},
            {"name": "r", "role": "relay"},
            {"name": "s", "role": "responder"},
            {"name": "a", "role": "responder"},
            {"name": "b", "role": "responder"},
        ],
        "link": [
            {
                "name": "cell_a",
                "kind": "ip",
                "bitrate": 50000.0,
                "latency_s": 0.08,
                "schedule": {"type": "intervals", "up": [[0.0, 1100.0], [1195.0, 1198.0]]},
                "pairs": [["a", "cp"]],
            },
            {
                "name": "cell_b",
                "kind": "ip",
                "bitrate": 50000.0,
                "cost": 3.0,
                "latency_s": 0.08,
                "pairs": [["b", "cp"]],
            },
            {
                "name": "lora",
                "kind": "lora",
                "preset": "LONG_FAST",
                "duty_cycle": 0.1,
                "pairs": [["s", "r"], ["r", "a"], ["r", "b"]],
            },
        ],
        "traffic": [
            {
                "src": "s",
                "dst": "cp",
                "priority": "FLASH",
                "size": 60,
                "lifetime_s": 3600,
                "at_s": [600.0, 700.0, 1200.0],
            }
        ],
    }


def test_flash_over_a_stale_route_arrives_a_frame_later_not_when_the_route_heals() -> None:
    report = simulate(parse_scenario(_field()))
    flash = report.by_class(Priority.FLASH)
    assert flash.deliverable == 3 and flash.delivered == 3, f"missing serials {flash.missing}"
    assert flash.latency_max_s is not None and flash.latency_p50_s is not None
    assert flash.oracle_p95_s is not None
    # the stale route costs the one frame the second path waits behind, not the wait for a beacon
    assert flash.latency_max_s <= flash.latency_p50_s + LORA_FRAME_S, (
        f"FLASH took up to {flash.latency_max_s} s, {flash.latency_p50_s} s over fresh routes"
    )
    assert flash.latency_max_s <= 2.5 * flash.oracle_p95_s  # 86.8 s (45 times) with one route
    assert report.flash_max_wait_frames <= 1.0 + 1e-6
