"""FLASH over LoRa hops that lose frames (issue 15): a small field with real engines.

Five responders reach the command post only through relay ``r``: LoRa (LongFast, one frame in ten
lost, as in the reference scenario) to ``r``, always-on cellular from ``r``. Each responder first
sends a message a minute, so it sees custody timeouts on its LoRa hop and learns its loss; from then
on each of its alarm frames goes twice at once, and a lost one costs one frame time instead of a
custody timeout (8-16 s on LongFast). Without the repeat one alarm in ten waits for a timeout (two
of these 20 before the change: 9.3 and 25.4 s, so the p95 was 10.1 s); with it, only one whose two
copies are both lost (one in a hundred). Over seeds 1-8 of this field the p95 stays within FAST_S
on 7 (on seed 1 two alarms lost both copies); before the change on 1.
"""

from __future__ import annotations

from typing import Any

from relay.bundle import Priority
from relay.sim.scenario import parse_scenario
from relay.sim.world import simulate

RESPONDERS = [f"s{i}" for i in range(1, 6)]
ALARMS_AT = [1200.0 + 600.0 * k for k in range(4)]  # per responder: within its FLASH share of the hour
LORA_FRAME_S = 1.2  # one LongFast frame of a small alarm, about
FAST_S = 1.0 + 2 * LORA_FRAME_S  # the alarm's frame, its repeat, cellular: well short of a timeout


def _field() -> dict[str, Any]:
    return {
        "name": "lossy-hops",
        "seed": 5,
        "duration_s": 3600.0,
        "drain_s": 600.0,
        "node": [
            {"name": "cp", "role": "command_post"},
            {"name": "r", "role": "relay"},
            {"name": "s", "count": len(RESPONDERS), "role": "responder"},
        ],
        "link": [
            {"name": "cell", "kind": "ip", "bitrate": 50000.0, "latency_s": 0.08, "pairs": [["r", "cp"]]},
            {
                "name": "lora",
                "kind": "lora",
                "preset": "LONG_FAST",
                "duty_cycle": 0.1,
                "loss": 0.1,
                "pairs": [["r", name] for name in RESPONDERS],
            },
        ],
        "traffic": [
            *(
                {
                    "src": name,
                    "dst": "cp",
                    "priority": "PRIORITY",
                    "size": 80,
                    "lifetime_s": 3600,
                    "at_s": [float(t) + 7 * i for t in range(60, 1200, 60)],
                }
                for i, name in enumerate(RESPONDERS)
            ),
            *(
                {
                    "src": name,
                    "dst": "cp",
                    "priority": "FLASH",
                    "size": 60,
                    "lifetime_s": 3600,
                    "at_s": [t + 97 * i for t in ALARMS_AT],
                }
                for i, name in enumerate(RESPONDERS)
            ),
        ],
    }


def test_alarms_over_lossy_hops_lose_a_frame_time_not_a_custody_timeout() -> None:
    report = simulate(parse_scenario(_field()))
    flash = report.by_class(Priority.FLASH)
    alarms = len(RESPONDERS) * len(ALARMS_AT)
    assert flash.delivered == flash.deliverable == alarms and report.duplicates == 0, flash
    assert flash.latency_p95_s is not None and flash.latency_max_s is not None
    p95, worst = flash.latency_p95_s, flash.latency_max_s
    print(f"\n{alarms} alarms over hops losing 10 %: p95 {p95:.2f} s, max {worst:.2f} s")
    assert p95 <= FAST_S, "an alarm whose frame was lost waited for a custody timeout"
