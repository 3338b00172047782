"""A FLASH that meets a dead end (issue 15): a small field with real engines.

A responder ``s`` reaches relay ``r`` over LoRa; ``r`` reaches responder ``a`` on the same LoRa link
and responder ``b`` on a second LoRa link, and each of ``a`` and ``b`` has cellular to the command
post. ``b``'s radio link to ``r`` is down from 1,000 s to 1,330 s; ``a``'s cellular, down since
1,000 s, comes back for 3 s just before the alarm at 1,300 s, so the beacon ``r`` heard last says
``a`` reaches the post (LoRa beacons are rate limited). The alarm goes to ``a``, the only next hop
``r`` has then: a dead end. Before, ``a`` took custody and ``r`` dropped its copy, and the alarm
never arrived (``a`` had no way on, and ``r`` answers "seen" to a copy it passed on); now ``a`` says
"seen", ``r`` keeps it and sends it through ``b`` once that link is back (the oracle's path).
"""

from __future__ import annotations

from typing import Any

from relay.bundle import Priority
from relay.sim.scenario import parse_scenario
from relay.sim.world import simulate

ALARM_S = 1300.0
B_BACK_S = 1330.0  # when r's radio link to b comes back


def _field() -> dict[str, Any]:
    lora: dict[str, Any] = {"kind": "lora", "preset": "LONG_FAST", "duty_cycle": 0.1}
    return {
        "name": "dead-end",
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
                "name": "cell_a",
                "kind": "ip",
                "bitrate": 50000.0,
                "latency_s": 0.08,
                "schedule": {"type": "intervals", "up": [[0.0, 1000.0], [1295.0, 1298.0]]},
                "pairs": [["a", "cp"]],
            },
            {"name": "cell_b", "kind": "ip", "bitrate": 50000.0, "latency_s": 0.08, "pairs": [["b", "cp"]]},
            {**lora, "name": "lora", "pairs": [["s", "r"], ["r", "a"]]},
            {
                **lora,
                "name": "lora_b",
                "schedule": {"type": "intervals", "up": [[0.0, 1000.0], [B_BACK_S, 1600.0]]},
                "pairs": [["r", "b"]],
            },
        ],
        "traffic": [
            {"src": "s", "dst": "cp", "priority": "FLASH", "size": 60, "lifetime_s": 3600, "at_s": [ALARM_S]}
        ],
    }


def test_a_dead_end_does_not_take_the_alarm_from_the_relay() -> None:
    report = simulate(parse_scenario(_field()))
    flash = report.by_class(Priority.FLASH)
    assert flash.deliverable == 1 and flash.delivered == 1, f"missing serials {flash.missing}"
    assert flash.latency_max_s is not None and flash.oracle_p95_s is not None
    # through b as soon as its link is back: its beacon, then the alarm and cellular, a few frames
    assert flash.latency_max_s <= B_BACK_S - ALARM_S + 10.0, f"FLASH took {flash.latency_max_s} s"
    assert report.duplicates == 0
