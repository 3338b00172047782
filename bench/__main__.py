"""Run the benchmarks and write one JSON file per area under ``bench/results/``.

Usage: ``python -m bench [AREA ...]`` (default: every ``bench/<area>.py`` that defines ``run()``).
Each result carries the date, the git commit and the machine's CPU count, so figures from
different runs are never mistaken for each other.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _areas() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.iter_modules([str(Path(__file__).parent)])
        if not info.name.startswith("_")
    )


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("areas", nargs="*", help=f"areas to run (default: all of {', '.join(_areas())})")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    failed = []
    for area in args.areas or _areas():
        module = importlib.import_module(f"bench.{area}")
        if not hasattr(module, "run"):
            continue
        print(f"bench {area} ...", flush=True)
        started = time.perf_counter()
        try:
            figures = module.run()
        except Exception:
            traceback.print_exc()
            failed.append(area)
            continue
        result = {
            "area": area,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "commit": _commit(),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "seconds": round(time.perf_counter() - started, 2),
            "results": figures,
        }
        path = RESULTS / f"{area}.json"
        path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(f"  -> {path}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
