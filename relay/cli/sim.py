"""``mesh112 sim SCENARIO``: play a scenario in the deterministic simulator and print its figures."""

from __future__ import annotations

import argparse
import json
import time
from importlib import resources
from pathlib import Path
from typing import Any

from relay.errors import ConfigError
from relay.sim.scenario import load_scenario
from relay.sim.world import simulate


def packaged_scenarios() -> list[str]:
    folder = resources.files("relay.sim") / "scenarios"
    return sorted(
        entry.name.removesuffix(".toml") for entry in folder.iterdir() if entry.name.endswith(".toml")
    )


def scenario_path(name: str) -> Path:
    """A scenario file, or the name of one shipped with Mesh112 (e.g. ``reference``)."""
    path = Path(name)
    if path.exists():
        return path
    if name in packaged_scenarios():
        return Path(str(resources.files("relay.sim") / "scenarios" / f"{name}.toml"))
    raise ConfigError(f"{name}: no such scenario file; shipped scenarios: {', '.join(packaged_scenarios())}")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="run a network scenario in the deterministic simulator",
        description="Play SCENARIO (a TOML file, or a shipped one: "
        f"{', '.join(packaged_scenarios())}) with real node engines on a simulated clock, "
        "then print delivery, latency against the best possible, overhead and store figures.",
    )
    parser.add_argument("scenario", metavar="SCENARIO", help="scenario file or shipped scenario name")
    parser.add_argument("--seed", type=int, help="override the scenario's seed")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the report as JSON to OUT")
    parser.add_argument(
        "--dir", type=Path, metavar="DIR", help="keep the node stores in DIR (default: temporary)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    scenario = load_scenario(scenario_path(args.scenario), seed=args.seed)
    started = time.perf_counter()
    report = simulate(scenario, args.dir)
    wall = time.perf_counter() - started
    print(report.format_text())
    print(f"\n{report.simulated_s / 60:.0f} simulated minutes in {wall:.1f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n")
    return 0
