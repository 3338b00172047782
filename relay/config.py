"""The node configuration: one TOML file per node, validated into frozen dataclasses.

Every problem raises :class:`ConfigError` naming the file, the key and what is wrong, so an
operator can fix it without reading code. Link tables keep their type-specific keys as a mapping;
each link type validates its own options when the link is built.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from relay.errors import ConfigError

LINK_TYPES = ("ip", "lora", "sim")
DEFAULT_API_LISTEN = "127.0.0.1:8112"
DEFAULT_QUOTA_MB = 1024
DEFAULT_RATE_PER_S = 20.0
DEFAULT_RATE_BURST = 60.0
MAX_RATE = 100_000.0
MAX_CONFIG_BYTES = 256 * 1024
_SECTIONS = {"node", "store", "api", "links"}


@dataclass(frozen=True, slots=True)
class NodeSection:
    name: str
    data_dir: Path
    roles: tuple[str, ...] = ()
    command_post: bytes | None = None  # node id where this node's position reports go by default


@dataclass(frozen=True, slots=True)
class StoreSection:
    quota_mb: int = DEFAULT_QUOTA_MB


@dataclass(frozen=True, slots=True)
class ApiSection:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8112
    rate_per_s: float = DEFAULT_RATE_PER_S  # requests per operator per second (token bucket)
    rate_burst: float = DEFAULT_RATE_BURST
    tiles: str | None = None  # MBTiles file for the console map (relative: to data_dir)


@dataclass(frozen=True, slots=True)
class LinkSection:
    type: str
    name: str
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class NodeConfig:
    path: Path
    node: NodeSection
    store: StoreSection
    api: ApiSection
    links: tuple[LinkSection, ...]


class _Table:
    """One TOML table being validated: tracks which keys were used, so typos are reported."""

    def __init__(self, path: Path, where: str, data: object) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: [{where}] must be a table")
        self.path, self.where, self.data = path, where, data
        self.used: set[str] = set()

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: [{self.where}] {key}: {problem}")

    def get(self, key: str, kind: type, default: Any = None, required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                raise self.error(key, "is required")
            return default
        value = self.data[key]
        if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            raise self.error(key, f"must be a {kind.__name__}, got {type(value).__name__} {value!r}")
        return value

    def finish(self, allow_extra: bool = False) -> dict[str, Any]:
        extra = {k: v for k, v in self.data.items() if k not in self.used}
        if extra and not allow_extra:
            raise self.error(sorted(extra)[0], "is not a known key (check the spelling)")
        return extra


def load_config(path: Path) -> NodeConfig:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; is this the right file?")
    try:
        return parse_config(raw.decode(), path)
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None


def parse_config(text: str, path: Path) -> NodeConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - _SECTIONS)
    if unknown:
        raise ConfigError(
            f"{path}: unknown section or key {unknown[0]!r} (known: {', '.join(sorted(_SECTIONS))})"
        )
    if "node" not in data:
        raise ConfigError(f"{path}: the [node] section is required")
    return NodeConfig(
        path=path,
        node=_node(path, data["node"]),
        store=_store(path, data.get("store", {})),
        api=_api(path, data.get("api", {})),
        links=_links(path, data.get("links", [])),
    )


def _node(path: Path, data: object) -> NodeSection:
    table = _Table(path, "node", data)
    name = table.get("name", str, required=True).strip()
    if not name or len(name.encode()) > 64:
        raise table.error("name", "must be 1-64 bytes of text")
    data_dir = Path(table.get("data_dir", str, "."))
    if not data_dir.is_absolute():
        data_dir = path.parent / data_dir
    roles = table.get("roles", list, [])
    for role in roles:
        if not isinstance(role, str) or not role:
            raise table.error("roles", f"must be a list of role names, got {role!r}")
    command_post = table.get("command_post", str)
    if command_post is not None and not re.fullmatch(r"[0-9a-fA-F]{32}", command_post):
        raise table.error(
            "command_post", f"must be the command post's node id (32 hex digits), got {command_post!r}"
        )
    table.finish()
    post_id = None if command_post is None else bytes.fromhex(command_post)
    return NodeSection(name, data_dir, tuple(roles), post_id)


def _store(path: Path, data: object) -> StoreSection:
    table = _Table(path, "store", data)
    quota = table.get("quota_mb", int, DEFAULT_QUOTA_MB)
    if not 1 <= quota <= 1 << 20:
        raise table.error("quota_mb", "must be between 1 and 1048576")
    table.finish()
    return StoreSection(quota)


def _api(path: Path, data: object) -> ApiSection:
    table = _Table(path, "api", data)
    enabled = table.get("enabled", bool, False)
    listen = table.get("listen", str, DEFAULT_API_LISTEN)
    host, sep, port_text = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise table.error("listen", f"must be HOST:PORT like {DEFAULT_API_LISTEN!r}, got {listen!r}")
    rate_per_s = _rate(table, "rate_per_s", DEFAULT_RATE_PER_S)
    rate_burst = _rate(table, "rate_burst", DEFAULT_RATE_BURST)
    tiles = table.get("tiles", str, "") or None
    table.finish()
    return ApiSection(enabled, host, int(port_text), rate_per_s, rate_burst, tiles)


def _rate(table: _Table, key: str, default: float) -> float:
    """A positive number (TOML integer or float); bulk loaders and tests raise it above the default."""
    value = table.get(key, object, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_RATE:
        raise table.error(key, f"must be a number above 0 and at most {MAX_RATE:.0f}, got {value!r}")
    return float(value)


def _links(path: Path, data: object) -> tuple[LinkSection, ...]:
    if not isinstance(data, list):
        raise ConfigError(f"{path}: links must be written as [[links]] tables")
    links, names = [], set()
    for index, item in enumerate(data):
        table = _Table(path, f"links #{index + 1}", item)
        kind = table.get("type", str, required=True)
        if kind not in LINK_TYPES:
            raise table.error("type", f"must be one of {', '.join(LINK_TYPES)}, got {kind!r}")
        name = table.get("name", str, f"{kind}{index}")
        if name in names:
            raise table.error("name", f"{name!r} is used by another link")
        names.add(name)
        links.append(LinkSection(kind, name, MappingProxyType(table.finish(allow_extra=True))))
    return tuple(links)
