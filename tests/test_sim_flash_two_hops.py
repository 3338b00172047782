"""A FLASH whose relay has two next hops on one LoRa link (issue 15): a small field with real engines.

A responder ``s`` reaches relay ``r`` over LoRa; ``r`` reaches responders ``a`` and ``b`` on the same
LoRa link, and each of them has cellular to the command post (``b``'s costs more). ``a``'s cellular,
down since 1,000 s, comes back for 3 s just before the alarm at 1,300 s, so the beacon ``r`` heard
last says ``a`` reaches the post (LoRa beacons are rate limited): ``r``'s first next hop is ``a``, a
dead end, and its second ``b``. Before, the copy to ``b`` went one LoRa frame after the copy to
``a`` (3.48 s against the oracle's 1.94 s); now one broadcast carries it to both, and ``b`` takes it
on as its addressee at once (2.43 s: the broadcast's second tag costs 0.08 s of air).
"""

from __future__ import annotations

from typing import Any

from relay.bundle import Priority
from relay.sim.scenario import parse_scenario
from relay.sim.world import simulate

ALARM_S = 1300.0


def _field() -> dict[str, Any]:
    lora: dict[str, Any] = {"kind": "lora", "preset": "LONG_FAST", "duty_cycle": 0.1}
    cell: dict[str, Any] = {"kind": "ip", "bitrate": 50000.0, "latency_s": 0.08}
    return {
        "name": "two-next-hops",
        "seed": 3,
        "duration_s": 1400.0,
        "drain_s": 300.0,
        "node": [
            {"name": "cp", "role": "command_post"},
            {"name": "r", "role": "relay"},
            {"name": "s", "role": "responder"},
            {"name": "a", "role": "responder"},
            {"name": "b", "role": "responder"},
        ],
        "link": [
            {
                **cell,
                "name": "cell_a",
                "schedule": {"type": "intervals", "up": [[0.0, 1000.0], [1295.0, 1298.0]]},
                "pairs": [["a", "cp"]],
            },
            {**cell, "name": "cell_b", "cost": 2.0, "pairs": [["b", "cp"]]},
            {**lora, "name": "lora", "pairs": [["s", "r"], ["r", "a"], ["r", "b"]]},
        ],
        "traffic": [
            {"src": "s", "dst": "cp", "priority": "FLASH", "size": 60, "lifetime_s": 3600, "at_s": [ALARM_S]}
        ],
    }


def test_one_broadcast_takes_the_alarm_to_both_next_hops() -> None:
    report = simulate(parse_scenario(_field()))
    flash = report.by_class(Priority.FLASH)
    assert flash.deliverable == 1 and flash.delivered == 1, f"missing serials {flash.missing}"
    assert flash.latency_max_s is not None and flash.oracle_p95_s is not None
    # two LoRa frames (s to r, r to a and b at once) and cellular, not a third frame
    assert flash.latency_max_s <= 1.5 * flash.oracle_p95_s, f"FLASH took {flash.latency_max_s} s"
    relay = next(f for f in report.links if f.node == "r" and f.link == "lora")
    assert relay.flash_frames == 2, "the alarm to a and b in one frame, and the receipt back to s"
    assert report.duplicates == 0
