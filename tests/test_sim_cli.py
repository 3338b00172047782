"""``mesh112 sim``: runs a scenario file, prints the figures, writes JSON; bad input is one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relay.cli import main

TINY = """
name = "tiny"
seed = 5
duration_s = 120.0
drain_s = 30.0

[[node]]
name = "field"

[[node]]
name = "cp"
role = "command_post"

[[link]]
name = "lora"
kind = "lora"
preset = "SHORT_FAST"
loss = 0.2
pairs = [["field", "cp"]]

[[traffic]]
src = "field"
dst = "cp"
priority = "FLASH"
size = 40
rate_per_min = 4.0
"""


def test_sim_prints_the_report_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(TINY)
    out = tmp_path / "report.json"
    assert (
        main(["sim", str(scenario), "--seed", "6", "--json", str(out), "--dir", str(tmp_path / "stores")])
        == 0
    )
    printed = capsys.readouterr().out
    assert "scenario tiny  seed 6" in printed and "FLASH" in printed and "simulated minutes in" in printed
    data = json.loads(out.read_text())
    assert data["seed"] == 6 and data["duplicates"] == 0
    flash = next(c for c in data["classes"] if c["priority"] == "FLASH")
    assert flash["sent"] > 0 and flash["delivered"] == flash["deliverable"]
    assert (tmp_path / "stores" / "cp.sqlite").exists()


def test_sim_names_a_missing_or_broken_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", str(tmp_path / "nope.toml")]) == 1
    assert "no such scenario file; shipped scenarios: bulk_flood, reference" in capsys.readouterr().err
    broken = tmp_path / "broken.toml"
    broken.write_text(TINY.replace('priority = "FLASH"', 'priority = "URGENT"'))
    assert main(["sim", str(broken)]) == 1
    assert "priority must be one of" in capsys.readouterr().err
