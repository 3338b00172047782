"""Scenario files for the simulator: a TOML description parsed into frozen dataclasses.

A scenario names its nodes, the links between them (a link is a medium such as a LoRa channel or
a cellular network, joining listed pairs of nodes), partitions, node crashes and restarts, and
traffic. Every mistake is reported as a :class:`ConfigError` naming the file and the field, so a
scenario author can fix it without reading the simulator. See ``docs/simulator.md``.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.bundle import Priority
from relay.errors import ConfigError
from relay.links.base import LinkProfile
from relay.sim.links import ScheduleSpec, SimLinkSpec
from relay.sim.phy import lora_frame_overhead, modem

MAX_NODES = 2000  # a region (1,000 nodes) with room to spare
MAX_SCENARIO_BYTES = 1 << 20
MAX_DURATION_S = 30 * 24 * 3600.0
MAX_PAYLOAD_SIZE = 1 << 20
MIN_PAYLOAD_SIZE = 8  # the simulator tags each payload with its 8-byte serial number


@dataclass(frozen=True, slots=True)
class NodeSpec:
    name: str
    role: str
    quota_bytes: int


@dataclass(frozen=True, slots=True)
class PartitionSpec:
    """Between ``start_s`` and ``end_s`` no link joins a node of ``side`` to a node outside it."""

    side: frozenset[str]
    start_s: float
    end_s: float


@dataclass(frozen=True, slots=True)
class CrashSpec:
    node: str
    at_s: float
    restart_s: float | None  # None: the node stays down


@dataclass(frozen=True, slots=True)
class TrafficSpec:
    """Each source sends ``size``-byte payloads to a destination drawn from ``dst`` (never itself).

    Either a seeded Poisson process of ``rate_per_min`` between ``start_s`` and ``stop_s``, or
    ``count`` sends at each time in ``at_s``.
    """

    src: tuple[str, ...]
    dst: tuple[str, ...]
    priority: Priority
    size: int
    lifetime_s: int
    rate_per_min: float
    start_s: float
    stop_s: float
    at_s: tuple[float, ...]
    count: int


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    seed: int
    duration_s: float  # traffic is generated within [0, duration_s)
    drain_s: float  # the run continues this long after, so late bundles can still arrive
    nodes: tuple[NodeSpec, ...]
    links: tuple[SimLinkSpec, ...]
    partitions: tuple[PartitionSpec, ...]
    crashes: tuple[CrashSpec, ...]
    traffic: tuple[TrafficSpec, ...]

    @property
    def end_s(self) -> float:
        return self.duration_s + self.drain_s

    def node(self, name: str) -> NodeSpec:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)


class _Table:
    """One TOML table being read: typed getters that say where a bad value is."""

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a table")
        self.data = data
        self.where = where
        self.used: set[str] = set()

    def _get(self, key: str, default: Any) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                raise ConfigError(f"{self.where}: missing required key {key!r}")
            return default
        return self.data[key]

    def number(self, key: str, default: Any = None, *, low: float = 0.0, high: float = math.inf) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"{self.where}: {key} must be a number, got {value!r:.40}")
        if not low <= value <= high:
            raise ConfigError(f"{self.where}: {key} must be between {low:g} and {high:g}, got {value:g}")
        return float(value)

    def integer(self, key: str, default: Any = None, *, low: int = 0, high: int = 2**62) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.where}: {key} must be an integer, got {value!r:.40}")
        if not low <= value <= high:
            raise ConfigError(f"{self.where}: {key} must be between {low} and {high}, got {value}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{self.where}: {key} must be true or false, got {value!r:.40}")
        return value

    def text(self, key: str, default: Any = None) -> str:
        value = self._get(key, default)
        if not isinstance(value, str) or not value or len(value) > 64:
            raise ConfigError(f"{self.where}: {key} must be a name of 1-64 characters, got {value!r:.40}")
        return value

    def names(self, key: str, known: Mapping[str, NodeSpec]) -> tuple[str, ...]:
        value = self._get(key, _REQUIRED)
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            raise ConfigError(f"{self.where}: {key} must be a node name or a non-empty list of them")
        for item in items:
            if not isinstance(item, str) or item not in known:
                raise ConfigError(f"{self.where}: {key} names unknown node {item!r:.40}")
        return tuple(items)

    def table(self, key: str) -> _Table:
        return _Table(self._get(key, {}), f"{self.where}.{key}")

    def list_of_tables(self, key: str) -> list[_Table]:
        value = self._get(key, [])
        if not isinstance(value, list):
            raise ConfigError(f"{self.where}: {key} must be an array of tables ([[{key}]])")
        return [_Table(item, f"{self.where}: {key} #{i + 1}") for i, item in enumerate(value)]

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(f"{self.where}: unknown key(s) {', '.join(map(repr, unknown))}")


_REQUIRED = object()


def load_scenario(path: Path, *, seed: int | None = None) -> Scenario:
    """Read and validate a scenario file; ``seed`` overrides the file's seed."""
    if path.stat().st_size > MAX_SCENARIO_BYTES:
        raise ConfigError(f"{path}: a scenario file is at most {MAX_SCENARIO_BYTES} bytes")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return parse_scenario(data, where=str(path), seed=seed)


def parse_scenario(data: Mapping[str, Any], *, where: str = "scenario", seed: int | None = None) -> Scenario:
    top = _Table(data, where)
    name = top.text("name", "scenario")
    file_seed = top.integer("seed", 1)
    duration = top.number("duration_s", _REQUIRED, low=1.0, high=MAX_DURATION_S)
    drain = top.number("drain_s", 0.0, high=MAX_DURATION_S)
    nodes = _parse_nodes(top)
    by_name = {node.name: node for node in nodes}
    links = tuple(_parse_link(t, by_name) for t in top.list_of_tables("link"))
    if len({link.name for link in links}) != len(links):
        raise ConfigError(f"{where}: two links share a name; each [[link]] needs its own name")
    partitions = tuple(_parse_partition(t, by_name) for t in top.list_of_tables("partition"))
    crashes = tuple(_parse_crash(t, by_name) for t in top.list_of_tables("crash"))
    traffic = tuple(_parse_traffic(t, by_name, duration) for t in top.list_of_tables("traffic"))
    top.done()
    return Scenario(
        name,
        file_seed if seed is None else seed,
        duration,
        drain,
        nodes,
        links,
        partitions,
        crashes,
        traffic,
    )


def _parse_nodes(top: _Table) -> tuple[NodeSpec, ...]:
    nodes: list[NodeSpec] = []
    for t in top.list_of_tables("node"):
        name = t.text("name", _REQUIRED)
        role = t.text("role", "relay")
        quota = t.integer("quota_bytes", 64 << 20, low=1 << 16)
        count = t.integer("count", 0, high=MAX_NODES)
        t.done()
        names = [f"{name}{i}" for i in range(1, count + 1)] if count else [name]
        nodes.extend(NodeSpec(n, role, quota) for n in names)
    if not nodes:
        raise ConfigError(f"{top.where}: a scenario needs at least one [[node]]")
    if len(nodes) > MAX_NODES:
        raise ConfigError(f"{top.where}: at most {MAX_NODES} nodes, got {len(nodes)}")
    seen: set[str] = set()
    for node in nodes:
        if node.name in seen:
            raise ConfigError(f"{top.where}: node name {node.name!r} is used twice")
        seen.add(node.name)
    return tuple(nodes)


def _parse_schedule(t: _Table) -> ScheduleSpec:
    kind = t.text("type", "always")
    if kind == "always":
        spec = ScheduleSpec("always")
    elif kind == "random":
        spec = ScheduleSpec(
            "random",
            up_fraction=t.number("up_fraction", _REQUIRED, high=1.0),
            mean_cycle_s=t.number("mean_cycle_s", 600.0, low=1.0),
        )
    elif kind == "intervals":
        spec = ScheduleSpec("intervals", up=_intervals(t, "up"))
    else:
        raise ConfigError(f"{t.where}: type must be 'always', 'random' or 'intervals', got {kind!r}")
    t.done()
    return spec


def _intervals(t: _Table, key: str) -> tuple[tuple[float, float], ...]:
    value = t._get(key, _REQUIRED)
    out: list[tuple[float, float]] = []
    if not isinstance(value, list):
        raise ConfigError(f"{t.where}: {key} must be a list of [start_s, end_s] pairs")
    for item in value:
        ok = isinstance(item, list) and len(item) == 2
        ok = ok and all(isinstance(x, int | float) and not isinstance(x, bool) for x in item)
        if not ok or not 0 <= item[0] < item[1]:
            raise ConfigError(f"{t.where}: {key} entry {item!r:.40} is not [start_s, end_s] with start < end")
        out.append((float(item[0]), float(item[1])))
    return tuple(out)


def _parse_link(t: _Table, nodes: Mapping[str, NodeSpec]) -> SimLinkSpec:
    name = t.text("name", _REQUIRED)
    kind = t.text("kind", "ip")
    t.where = f"{t.where} ({name})"
    if kind == "lora":
        try:
            preset = modem(t.text("preset", "LONG_FAST"))
        except ValueError as exc:
            raise ConfigError(f"{t.where}: {exc}") from None
        radio_arq = t.flag("radio_arq", False)
        profile = LinkProfile(
            name=name,
            kind="lora",
            mtu=t.integer("mtu", 219, low=32, high=233),
            bitrate=preset.bitrate_bps / 8,
            cost=t.number("cost", 10.0),
            duty_cycle=t.number("duty_cycle", 0.1, low=0.001, high=1.0),
            compact=True,
            per_frame_overhead_s=lora_frame_overhead(preset, preset.bitrate_bps / 8),
            implicit_ack=t.flag("implicit_ack", True),
            retransmits=radio_arq,
        )
        lora = preset
    elif kind in ("ip", "webrtc", "sim"):
        profile = LinkProfile(
            name=name,
            kind=kind,
            mtu=t.integer("mtu", 1200, low=64, high=1 << 20),
            bitrate=t.number("bitrate", 125_000.0, low=1.0),
            cost=t.number("cost", 1.0),
            duty_cycle=1.0,
            compact=False,
            per_frame_overhead_s=t.number("per_frame_overhead_s", 0.0, high=10.0),
        )
        lora = None
        radio_arq = False
    else:
        raise ConfigError(f"{t.where}: kind must be 'ip', 'lora', 'webrtc' or 'sim', got {kind!r}")
    latency = t.number("latency_s", 0.05 if kind != "lora" else 0.0, high=3600.0)
    loss = t.number("loss", 0.0, high=0.99)
    schedule = _parse_schedule(t.table("schedule"))
    pairs = _pairs(t, nodes)
    t.done()
    return SimLinkSpec(profile, latency, loss, schedule, pairs, lora, radio_arq)


def _pairs(t: _Table, nodes: Mapping[str, NodeSpec]) -> tuple[tuple[str, str], ...]:
    value = t._get("pairs", _REQUIRED)
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{t.where}: pairs must be a non-empty list of [node, node]")
    seen: set[frozenset[str]] = set()
    out: list[tuple[str, str]] = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            raise ConfigError(f"{t.where}: pair {item!r:.40} must be [node, node]")
        a, b = item
        for n in (a, b):
            if n not in nodes:
                raise ConfigError(f"{t.where}: pair names unknown node {n!r:.40}")
        if a == b:
            raise ConfigError(f"{t.where}: pair [{a!r}, {b!r}] joins a node to itself")
        key = frozenset((a, b))
        if key in seen:
            raise ConfigError(f"{t.where}: pair [{a!r}, {b!r}] is listed twice")
        seen.add(key)
        out.append((a, b))
    return tuple(out)


def _parse_partition(t: _Table, nodes: Mapping[str, NodeSpec]) -> PartitionSpec:
    side = frozenset(t.names("side", nodes))
    start = t.number("start_s", _REQUIRED, high=MAX_DURATION_S)
    end = t.number("end_s", _REQUIRED, high=MAX_DURATION_S)
    t.done()
    if end <= start:
        raise ConfigError(f"{t.where}: end_s must be after start_s")
    return PartitionSpec(side, start, end)


def _parse_crash(t: _Table, nodes: Mapping[str, NodeSpec]) -> CrashSpec:
    (node,) = t.names("node", nodes)[:1]
    at = t.number("at_s", _REQUIRED, high=MAX_DURATION_S)
    restart = t.number("restart_s", math.inf, high=math.inf)
    t.done()
    if restart <= at:
        raise ConfigError(f"{t.where}: restart_s must be after at_s")
    return CrashSpec(node, at, None if math.isinf(restart) else restart)


def _parse_traffic(t: _Table, nodes: Mapping[str, NodeSpec], duration: float) -> TrafficSpec:
    src = t.names("src", nodes)
    dst = t.names("dst", nodes)
    priority_name = t.text("priority", "ROUTINE").upper()
    if priority_name not in Priority.__members__:
        raise ConfigError(f"{t.where}: priority must be one of {', '.join(Priority.__members__)}")
    size = t.integer("size", 64, low=MIN_PAYLOAD_SIZE, high=MAX_PAYLOAD_SIZE)
    lifetime = t.integer("lifetime_s", 3600, low=60, high=30 * 24 * 3600)
    rate = t.number("rate_per_min", 0.0, high=600.0)
    start = t.number("start_s", 0.0, high=duration)
    stop = t.number("stop_s", duration, high=duration)
    at = _times(t, "at_s", duration)
    count = t.integer("count", 1, low=1, high=10_000)
    t.done()
    if (rate > 0) == bool(at):
        raise ConfigError(f"{t.where}: give either rate_per_min (Poisson) or at_s (explicit times)")
    if set(src) == set(dst) and len(dst) == 1:
        raise ConfigError(f"{t.where}: a node cannot send to itself; src and dst are both {dst[0]!r}")
    if stop < start:
        raise ConfigError(f"{t.where}: stop_s must not be before start_s")
    return TrafficSpec(src, dst, Priority[priority_name], size, lifetime, rate, start, stop, at, count)


def _times(t: _Table, key: str, high: float) -> tuple[float, ...]:
    value = t._get(key, [])
    if not isinstance(value, list):
        raise ConfigError(f"{t.where}: {key} must be a list of times in seconds")
    for x in value:
        if isinstance(x, bool) or not isinstance(x, int | float) or not 0 <= x <= high:
            raise ConfigError(f"{t.where}: {key} entry {x!r:.40} must be a time between 0 and {high:g} s")
    return tuple(sorted(float(x) for x in value))
