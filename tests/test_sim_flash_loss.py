"""FLASH over LoRa hops that lose frames (issue 15): a small field with real engines.

Five responders reach the command post only through relay ``r``: LoRa (LongFast, one frame in ten
lost, as in the reference scenario) to ``r``, always-on cellular from ``r``. Each responder first
sends a message a minute, so it sees custody timeouts on its LoRa hop and learns its loss; from then
on each of its alarm frames goes twice at once, and a lost one costs one frame time instead of a
custody timeout (8-16 s on LongFast). Without the repeat one alarm in ten waits for a timeout (two
of these 20 before the change: 9.3 and 25.4 s, so the p95 was 10.1 s); with it, only one whose two
copies are both lost (one in a hundred). Over seeds 1-8 of this field the p95 stays within FAST_S
on 7 (on seed 1 two alarms lost both copies); before the change on 1.

A relay forwarding an alarm on LoRa to a neighbour it has sent no copy to yet repeats it too when
the link lost a copy to another neighbour lately (the second test): judged only by that
neighbour's own history, the forward went once and a lost one waited for a custody timeout.
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
TWO_HOPS_S = 1.0 + 4 * LORA_FRAME_S  # two hops, the relay's ACK and one repeat: short of a timeout


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


def _fresh_neighbour_field(seed: int) -> dict[str, Any]:
    """The responders reach the command post through relay ``r`` and gateway ``g``, two LoRa hops,
    then cellular. Before the alarms, responders and ``r`` only exchange messages with each other,
    so ``r`` has seen its LoRa link lose copies, but never sent one to ``g``."""
    field = _field()
    field["seed"] = seed
    field["node"].append({"name": "g", "role": "relay"})
    field["link"][0]["pairs"] = [["g", "cp"]]
    field["link"][1]["pairs"].append(["r", "g"])
    for spec in field["traffic"]:
        if spec["priority"] == "PRIORITY":
            spec["dst"] = "r"
    field["traffic"] += [
        {
            "src": "r",
            "dst": name,
            "priority": "PRIORITY",
            "size": 80,
            "lifetime_s": 3600,
            "at_s": [float(t) + 3 + 7 * i for t in range(60, 1200, 240)],
        }
        for i, name in enumerate(RESPONDERS)
    ]
    return field


def test_a_relays_first_forward_to_a_neighbour_is_repeated_on_a_lossy_link() -> None:
    """Seed 1: p95 10.98 s before (a lost forward to ``g`` waited a custody timeout), 4.04 s now
    (the worst alarm lost one frame and its repeat went one frame later). Over seeds 1-6 the p95 is
    within TWO_HOPS_S on 5 (seed 3: an alarm lost both copies), before on 2."""
    report = simulate(parse_scenario(_fresh_neighbour_field(1)))
    flash = report.by_class(Priority.FLASH)
    alarms = len(RESPONDERS) * len(ALARMS_AT)
    assert flash.delivered == flash.deliverable == alarms and report.duplicates == 0, flash
    assert flash.latency_p95_s is not None
    print(f"\n{alarms} alarms over two hops losing 10 %: p95 {flash.latency_p95_s:.2f} s")
    assert flash.latency_p95_s <= TWO_HOPS_S, "a forward whose frame was lost waited for a custody timeout"
