"""The protocol's own lower bound (relay.sim.bound): real frames and the relay's ACK before its
forward, nothing lost or queued. The core must never beat it, and must meet it where nothing is
lost or queued; on the reference scenario it shows how much of the FLASH p95 against the oracle is
the protocol's shape rather than scheduling (docs/simulator.md, "Fourth pass")."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from relay.bundle import Priority
from relay.sim import bound
from relay.sim.report import percentile
from relay.sim.scenario import parse_scenario
from relay.sim.world import simulate

ALARMS_AT = [600.0 + 300.0 * k for k in range(4)]  # after the contacts' first exchanges


def _line(implicit_ack: bool = False) -> dict[str, Any]:
    """A responder, two LoRa hops (relay ``r``, gateway ``g``) that lose nothing, then cellular;
    ``implicit_ack``: the relay's forward is the responder's custody ACK (without: an ACK frame)."""
    return {
        "name": "line",
        "seed": 3,
        "duration_s": 1800.0,
        "drain_s": 300.0,
        "node": [
            {"name": "cp", "role": "command_post"},
            {"name": "r", "role": "relay"},
            {"name": "g", "role": "relay"},
            {"name": "s", "role": "responder"},
        ],
        "link": [
            {"name": "cell", "kind": "ip", "bitrate": 50000.0, "latency_s": 0.08, "pairs": [["g", "cp"]]},
            {
                "name": "lora",
                "kind": "lora",
                "preset": "LONG_FAST",
                "duty_cycle": 0.1,
                "loss": 0.0,
                "implicit_ack": implicit_ack,
                "pairs": [["s", "r"], ["r", "g"]],
            },
        ],
        "traffic": [
            {"src": "s", "dst": "cp", "priority": "FLASH", "size": 60, "lifetime_s": 3600, "at_s": ALARMS_AT}
        ],
    }


def test_the_bound_charges_real_frames_and_the_relays_ack() -> None:
    scenario = parse_scenario(_line())
    oracle_s, bound_s = bound.latencies(scenario, Priority.FLASH)
    lora = next(link for link in scenario.links if link.name == "lora")
    data_len, ack_len = bound.frame_lengths(60, compact=True)
    assert data_len > 60 + 16, "the frame carries the seal and its type beyond the oracle's header"
    extra = 2 * (lora.frame_time(data_len) - lora.frame_time(60 + 16)) + lora.frame_time(ack_len)
    assert len(bound_s) == len(ALARMS_AT)
    for oracle, lower in zip(oracle_s, bound_s, strict=True):
        assert abs(lower - oracle - extra) < 0.01, (oracle, lower, extra)


def test_with_nothing_lost_or_queued_the_core_arrives_at_the_bound() -> None:
    """Two LoRa hops, no loss, no other traffic: each alarm arrives at the bound (within 1 ms), never
    before it."""
    scenario = parse_scenario(_line())
    _, bound_s = bound.latencies(scenario, Priority.FLASH)
    flash = simulate(scenario).by_class(Priority.FLASH)
    assert flash.delivered == len(ALARMS_AT), flash
    assert flash.latency_p50_s is not None and flash.latency_max_s is not None
    assert min(bound_s) - 1e-6 <= flash.latency_p50_s <= flash.latency_max_s <= max(bound_s) + 0.001


def test_the_reference_scenarios_flash_p95_is_no_better_than_the_bound() -> None:
    """Seed 112: the bound's p95 is 1.215 times the oracle's with the implicit ACK (1.605 with an
    ACK frame before each relay's forward: three LoRa hops); the simulated p95 lies above the
    bound, as every latency does."""
    path = Path(str(resources.files("relay.sim") / "scenarios" / "reference.toml"))
    scenario = parse_scenario(tomllib.loads(path.read_text(encoding="utf-8")), where=str(path))
    oracle_s, bound_s = bound.latencies(scenario, Priority.FLASH)
    flash = simulate(scenario).by_class(Priority.FLASH)
    bound_p95, oracle_p95 = percentile(bound_s, 0.95), percentile(oracle_s, 0.95)
    assert bound_p95 is not None and oracle_p95 and flash.latency_p95_s is not None
    simulated = flash.latency_p95_s
    print(f"\nseed 112: oracle p95 {oracle_p95:.2f} s, bound {bound_p95:.2f} s, simulated {simulated:.2f} s")
    assert flash.oracle_p95_s is not None and abs(flash.oracle_p95_s - oracle_p95) < 1e-3
    assert oracle_p95 < bound_p95 <= flash.latency_p95_s
    assert abs(bound_p95 / oracle_p95 - 1.215) < 0.001


def test_with_the_implicit_ack_the_relay_sends_no_ack_frame_and_the_core_meets_the_lower_bound() -> None:
    """The same line with ``implicit_ack``: the relay's forward on LoRa is the responder's custody
    ACK, so each alarm saves one ACK frame of air on its path, arrives at the variant's bound (within
    1 ms), and the relay sends one LoRa frame less per alarm."""
    plain, scenario = parse_scenario(_line()), parse_scenario(_line(implicit_ack=True))
    lora = next(link for link in scenario.links if link.name == "lora")
    _, ack_len = bound.frame_lengths(60, compact=True)
    _, before = bound.latencies(plain, Priority.FLASH)
    _, after = bound.latencies(scenario, Priority.FLASH)
    for slow, fast in zip(before, after, strict=True):
        assert abs(slow - fast - lora.frame_time(ack_len)) < 1e-6
    reports = {"plain": simulate(plain), "implicit": simulate(scenario)}
    flash = reports["implicit"].by_class(Priority.FLASH)
    assert flash.delivered == len(ALARMS_AT), flash
    assert flash.latency_p50_s is not None and flash.latency_max_s is not None
    assert min(after) - 1e-6 <= flash.latency_p50_s <= flash.latency_max_s <= max(after) + 0.001
    frames = {name: sum(f.frames for f in r.links if f.link == "lora") for name, r in reports.items()}
    assert frames["implicit"] <= frames["plain"] - len(ALARMS_AT), frames
