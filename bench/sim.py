"""Simulator benchmark: the reference scenario's figures and how fast the simulator runs.

Figures: delivery ratio, latency p50/p95 and the oracle's for each priority class, bytes sent per
delivered byte, store high-water marks, and simulated minutes per wall-clock second (median of
three runs of the same seed, which give identical figures).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from importlib import resources
from pathlib import Path

from relay.sim.report import Report
from relay.sim.scenario import load_scenario
from relay.sim.world import run_scenario

RUNS = 3


def run() -> dict[str, object]:
    path = Path(str(resources.files("relay.sim") / "scenarios" / "reference.toml"))
    scenario = load_scenario(path)
    speeds: list[float] = []
    report: Report | None = None
    for _ in range(RUNS):
        started = time.perf_counter()
        report = asyncio.run(run_scenario(scenario))
        speeds.append(scenario.end_s / 60.0 / (time.perf_counter() - started))
    assert report is not None
    return {
        "scenario": report.scenario,
        "seed": report.seed,
        "nodes": report.nodes,
        "simulated_minutes": report.simulated_s / 60.0,
        "simulated_minutes_per_wall_second": round(statistics.median(speeds), 2),
        "classes": {
            c.priority: {
                "sent": c.sent,
                "deliverable": c.deliverable,
                "delivered": c.delivered,
                "delivery_ratio": c.delivery_ratio,
                "latency_p50_s": c.latency_p50_s,
                "latency_p95_s": c.latency_p95_s,
                "oracle_p50_s": c.oracle_p50_s,
                "oracle_p95_s": c.oracle_p95_s,
                "p50_vs_oracle": c.p50_vs_oracle,
            }
            for c in report.classes
        },
        "duplicates": report.duplicates,
        "bytes_per_delivered_byte": report.bytes_per_delivered_byte,
        "store_high_water_bytes": dict(report.store_high_water),
        "flash_max_wait_frames": report.flash_max_wait_frames,
        "engine_overdue_polls": dict(report.overdue_polls),
    }
