"""Scenario files: the shipped ones parse, and every kind of mistake gives a ConfigError naming it."""

from __future__ import annotations

import contextlib
import copy
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.bundle import Priority
from relay.errors import ConfigError
from relay.sim.scenario import load_scenario, parse_scenario
from relay.sim.topology import build_contacts, build_oracle, node_alive
from relay.sim.traffic import plan_traffic, serial_of

SCENARIOS = Path(str(resources.files("relay.sim") / "scenarios"))

MINIMAL: dict[str, Any] = {
    "name": "tiny",
    "duration_s": 600.0,
    "node": [{"name": "a"}, {"name": "b", "role": "command_post"}],
    "link": [{"name": "ip", "kind": "ip", "pairs": [["a", "b"]]}],
    "traffic": [{"src": "a", "dst": "b", "priority": "FLASH", "size": 20, "at_s": [10.0], "count": 2}],
}


def _with(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(MINIMAL)
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


def test_shipped_scenarios_parse() -> None:
    reference = load_scenario(SCENARIOS / "reference.toml")
    assert [n.name for n in reference.nodes][:6] == ["cp", "r1", "r2", "r3", "r4", "resp1"]
    assert len(reference.nodes) == 17
    assert {link.name: link.profile.kind for link in reference.links} == {"cell": "ip", "lora": "lora"}
    assert len(reference.crashes) == 2 and len(reference.partitions) == 1
    flood = load_scenario(SCENARIOS / "bulk_flood.toml", seed=99)
    assert flood.seed == 99


def test_minimal_scenario_plans_and_tags_traffic() -> None:
    scenario = parse_scenario(MINIMAL)
    sends = plan_traffic(scenario)
    assert [(s.serial, s.src, s.dst, s.priority) for s in sends] == [
        (1, "a", "b", Priority.FLASH),
        (2, "a", "b", Priority.FLASH),
    ]
    assert serial_of(sends[1].payload()) == 2 and len(sends[1].payload()) == 20
    oracle = build_oracle(scenario, build_contacts(scenario))
    assert oracle.earliest_arrival("a", "b", 10.0, 20) == pytest.approx(10.0 + 36 / 125_000 + 0.05)


def test_partitions_cut_contacts_and_crashes_cut_the_oracle() -> None:
    data = copy.deepcopy(MINIMAL)
    data["partition"] = [{"side": ["a"], "start_s": 5.0, "end_s": 50.0}]
    data["crash"] = [{"node": "b", "at_s": 50.0, "restart_s": 100.0}]
    scenario = parse_scenario(data)
    (contact,) = build_contacts(scenario)
    assert contact.schedule.up == ((0.0, 5.0), (50.0, 600.0))
    assert node_alive(scenario, "b").up == ((0.0, 50.0), (100.0, 600.0))
    oracle = build_oracle(scenario, (contact,))
    assert oracle.earliest_arrival("a", "b", 10.0, 20) == pytest.approx(100.0 + 36 / 125_000 + 0.05)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("duration_s",), -5, "duration_s must be between"),
        (("node", 0, "name"), "b", "used twice"),
        (("node", 0, "colour"), "red", "unknown key"),
        (("link", 0, "kind"), "carrier-pigeon", "kind must be"),
        (("link", 0, "loss"), 1.5, "loss must be between"),
        (("link", 0, "pairs"), [["a", "zz"]], "unknown node 'zz'"),
        (("link", 0, "pairs"), [["a", "a"]], "joins a node to itself"),
        (("link", 0, "pairs"), [["a", "b"], ["b", "a"]], "listed twice"),
        (("link", 0, "schedule"), {"type": "random"}, "missing required key 'up_fraction'"),
        (("link", 0, "schedule"), {"type": "sometimes"}, "type must be"),
        (("link", 0, "schedule"), {"type": "intervals", "up": [[5, 1]]}, "start < end"),
        (("traffic", 0, "priority"), "URGENT", "priority must be one of"),
        (("traffic", 0, "size"), 4, "size must be between 8"),
        (("traffic", 0, "rate_per_min"), 2.0, "either rate_per_min"),
        (("traffic", 0, "dst"), "a", "cannot send to itself"),
        (("traffic", 0, "at_s"), [10.0, 9999.0], "must be a time between"),
        (("crash",), [{"node": "a", "at_s": 50.0, "restart_s": 10.0}], "restart_s must be after"),
        (("partition",), [{"side": ["nobody"], "start_s": 1.0, "end_s": 2.0}], "unknown node"),
    ],
)
def test_mistakes_are_config_errors_naming_the_field(path: tuple[Any, ...], value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_scenario(_with(path, value))


def test_lora_link_needs_a_known_preset(tmp_path: Path) -> None:
    data = _with(("link", 0), {"name": "l", "kind": "lora", "preset": "ULTRA", "pairs": [["a", "b"]]})
    with pytest.raises(ConfigError, match="unknown LoRa preset 'ULTRA'"):
        parse_scenario(data)


def test_bad_files_are_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("name = [unclosed")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_scenario(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_scenario(path)


def test_oversized_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.toml"
    path.write_text("# " + "x" * (1 << 20))
    with pytest.raises(ConfigError, match="at most"):
        load_scenario(path)


_values = st.recursive(
    st.none().map(lambda _: "x")
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["a", "b", "FLASH", "lora", "ip", "random", "intervals"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=8,
)


_TABLES = [(), ("node", 0), ("link", 0), ("link", 0, "schedule"), ("traffic", 0)]
_KEYS = ["name", "kind", "pairs", "loss", "src", "dst", "size", "at_s", "type", "up", "count", "seed", "zzz"]


def _parse_edited(edits: list[tuple[tuple[Any, ...], str, Any]]) -> None:
    data = copy.deepcopy(MINIMAL)
    data["link"][0]["schedule"] = {"type": "always"}
    for table, key, value in edits:
        target: Any = data
        for step in table:
            target = target[step]
        target[key] = value
    with contextlib.suppress(ConfigError):
        parse_scenario(data)


_EDITS = st.lists(st.tuples(st.sampled_from(_TABLES), st.sampled_from(_KEYS), _values), max_size=4)


@settings(max_examples=150, deadline=None)
@given(_EDITS)
def test_fuzzed_scenarios_parse_or_raise_config_error(edits: list[tuple[tuple[Any, ...], str, Any]]) -> None:
    _parse_edited(edits)


@pytest.mark.long
@settings(max_examples=5000, deadline=None)
@given(_EDITS)
def test_fuzz_scenarios_long(edits: list[tuple[tuple[Any, ...], str, Any]]) -> None:
    _parse_edited(edits)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzzed_bytes_parse_or_raise_config_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "s.toml"
    path.write_bytes(data)
    with contextlib.suppress(ConfigError):
        load_scenario(path)
