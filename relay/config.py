"""The node configuration: one TOML file per node, validated by strict pydantic models.

Every model forbids unknown keys and converts nothing silently (``port = "4403"`` is text, not a
number). Each problem becomes one line naming the file, the table (or the link) and the key, so an
operator can fix it without reading code; :func:`check_config` lists all of them at once, and
:func:`load_config` refuses the file with the first. Each link type owns its model
(:mod:`relay.links.ip_config`, :mod:`relay.links.lora_config`); :func:`json_schema` describes the
whole file for editors (shipped as deploy/node.schema.json).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from relay.backbone.config import BackboneSection
from relay.errors import ConfigError
from relay.links.ip_config import IpLinkOptions
from relay.links.lora_config import LoRaLinkConfig
from relay.links.webrtc_config import WebRtcLinkOptions

LINK_TYPES = ("ip", "lora", "webrtc")
DEFAULT_API_LISTEN = "127.0.0.1:8112"
DEFAULT_QUOTA_MB = 1024
DEFAULT_RATE_PER_S = 20.0
DEFAULT_RATE_BURST = 60.0
MAX_RATE = 100_000.0
MAX_CONFIG_BYTES = 256 * 1024
STATE_DIRECTORY_ENV = "STATE_DIRECTORY"  # set by systemd for StateDirectory=
NODE_ID_SCHEMA = {"type": "string", "pattern": "^[0-9a-fA-F]{32}$"}

_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)
Rate = Annotated[float, Field(gt=0, le=MAX_RATE)]
LinkOptions = Annotated[IpLinkOptions | LoRaLinkConfig | WebRtcLinkOptions, Field(discriminator="type")]


def default_data_dir(config_dir: Path) -> Path:
    """Where a node keeps its data when ``[node] data_dir`` is not given: systemd's state directory
    (``StateDirectory=``, writable under ``ProtectSystem=strict``) when set, else the config's own."""
    state = os.environ.get(STATE_DIRECTORY_ENV, "").split(":")[0]
    return Path(state) if state else config_dir


class NodeSection(BaseModel):
    """``[node]``: who this node is and where its data lives."""

    model_config = _STRICT

    name: str = Field(description="a display name for people, 1-64 bytes")
    data_dir: Annotated[Path, WithJsonSchema({"type": "string"})] = Field(
        default=None,
        validate_default=True,
        description="store, keys and certificate; relative to the config file. "
        "Default: $STATE_DIRECTORY (systemd StateDirectory=) when set, else the config's directory",
    )
    roles: tuple[Annotated[str, Field(min_length=1)], ...] = Field(default=(), strict=False)
    command_post: Annotated[bytes | None, WithJsonSchema(NODE_ID_SCHEMA)] = Field(
        default=None,
        description="the command post's node id (32 hex digits): where position reports go by default",
    )
    max_clock_skew_s: float = Field(
        300.0,
        gt=0,
        le=86400,
        strict=False,
        description="bundles created further ahead of this node's clock are refused (and counted)",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.strip()
        if not value or len(value.encode()) > 64:
            raise ValueError("must be 1-64 bytes of text")
        return value

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_dir(cls, value: object, info: ValidationInfo) -> object:
        base = Path((info.context or {}).get("config_dir", "."))
        if value is None:
            return default_data_dir(base)
        if isinstance(value, str):
            return base / value  # an absolute value replaces base
        return value

    @field_validator("command_post", mode="before")
    @classmethod
    def _command_post(cls, value: object) -> object:
        if isinstance(value, str):
            if not re.fullmatch(r"[0-9a-fA-F]{32}", value):
                raise ValueError(f"must be the command post's node id (32 hex digits), got {value!r}")
            return bytes.fromhex(value)
        if value is None:
            return None
        raise ValueError(f"must be the command post's node id (32 hex digits in quotes), got {value!r}")


class StoreSection(BaseModel):
    """``[store]``: the bundle store's disk quota."""

    model_config = _STRICT

    quota_mb: int = Field(default=DEFAULT_QUOTA_MB, ge=1, le=1 << 20, description="MiB the store may use")


class ApiSection(BaseModel):
    """``[api]``: the relay API and dashboard."""

    model_config = _STRICT

    enabled: bool = False
    listen: str = Field(default=DEFAULT_API_LISTEN, description="HOST:PORT")
    rate_per_s: Rate = Field(default=DEFAULT_RATE_PER_S, description="requests per operator per second")
    rate_burst: Rate = Field(default=DEFAULT_RATE_BURST, description="burst of the per-operator token bucket")
    tiles: str | None = Field(
        default=None, description="MBTiles file for the console map (relative: to data_dir)"
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"must be HOST:PORT like {DEFAULT_API_LISTEN!r}, got {value!r}")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class CommandPostSection(BaseModel):
    """``[command_post]``: where the command post keeps its journal."""

    model_config = _STRICT

    database: str | None = Field(
        default=None,
        description="postgresql://user@host:port/db to share one journal between several API "
        "processes; default: the embedded SQLite file in data_dir",
    )

    @field_validator("database")
    @classmethod
    def _database(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"postgres(ql)?://", value):
            raise ValueError(f"must be a postgresql:// address (or left out for SQLite), got {value!r}")
        return value


class NodeConfig(BaseModel):
    """A whole node.toml. A link table without ``name`` is named after its type and position
    (``ip0``, ``lora1``)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, title="Mesh112 node.toml")

    node: NodeSection
    store: StoreSection = StoreSection()
    api: ApiSection = ApiSection()
    command_post: CommandPostSection = CommandPostSection()
    backbone: BackboneSection | None = None
    links: tuple[LinkOptions, ...] = Field(default=(), strict=False)

    @model_validator(mode="before")
    @classmethod
    def _name_links(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("links"), list):
            data = {**data, "links": [_named(item, index) for index, item in enumerate(data["links"])]}
        return data

    @model_validator(mode="after")
    def _unique_link_names(self) -> NodeConfig:
        names = [link.name for link in self.links]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"two links are named {name!r}; give each its own name")
        return self


class ConfigProblems(ConfigError):
    """Everything wrong with one configuration file; the message names the first problem."""

    def __init__(self, path: Path, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        more = len(self.problems) - 1
        suffix = f" (and {more} more: `mesh112 config check {path}` lists them all)" if more else ""
        super().__init__(self.problems[0] + suffix)


def load_config(path: Path) -> NodeConfig:
    """The validated configuration in ``path``; :class:`ConfigProblems` lists what is wrong."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigProblems(path, [f"{path}: configuration file not found"]) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigProblems(path, [f"{path}: larger than {MAX_CONFIG_BYTES} bytes; is this the right file?"])
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise ConfigProblems(path, [f"{path}: not UTF-8 text"]) from None
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> NodeConfig:
    """Validate TOML ``text`` read from ``path`` (relative ``data_dir`` values start there)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigProblems(path, [f"{path}: not valid TOML: {exc}"]) from None
    try:
        return NodeConfig.model_validate(data, context={"config_dir": path.parent})
    except ValidationError as exc:
        raise ConfigProblems(path, [f"{path}: {_describe(error, data)}" for error in exc.errors()]) from None


def check_config(path: Path) -> list[str]:
    """Every problem in the configuration file at ``path``, one line each; empty when it is valid."""
    try:
        load_config(path)
    except ConfigProblems as exc:
        return list(exc.problems)
    return []


def json_schema() -> dict[str, Any]:
    """JSON Schema of node.toml, generated from the models (deploy/node.schema.json)."""
    return NodeConfig.model_json_schema()


def _named(item: object, index: int) -> object:
    if isinstance(item, dict) and "name" not in item and isinstance(item.get("type"), str):
        return {**item, "name": f"{item['type']}{index}"}
    return item


_SECTIONS = ", ".join(NodeConfig.model_fields)
_KIND = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "text in quotes",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}
_TOML_TYPES = {str: "text", int: "integer", float: "number", bool: "boolean", list: "list", dict: "table"}


def _describe(error: ErrorDetails, data: dict[str, Any]) -> str:
    """One line for one pydantic error: where (table or link, key) and what is expected."""
    loc = list(error["loc"])
    kind, value = error["type"], error.get("input")
    where = ""
    if loc and loc[0] == "links" and len(loc) > 1 and isinstance(loc[1], int):
        item = data["links"][loc[1]]
        label = f"links #{loc[1] + 1}"
        if isinstance(item, dict) and isinstance(item.get("type"), str) and item["type"] in LINK_TYPES:
            label = f"link {item.get('name', item['type'] + str(loc[1]))}"
        where, loc = f"[{label}]", loc[3:] if len(loc) > 2 and loc[2] in LINK_TYPES else loc[2:]
    elif loc and loc[0] in ("node", "store", "api", "command_post", "backbone") and len(loc) > 1:
        where, loc = f"[{loc[0]}]", loc[1:]
    if loc and loc[-1] == "[key]":
        loc = loc[:-1]
    key = ".".join(str(part) for part in loc)
    if kind == "extra_forbidden":
        problem = "is not a known key (check the spelling)"
        if not where:
            return f"unknown section or key {key!r} (known: {_SECTIONS})"
    elif kind == "missing":
        if not where:
            return f"the [{key}] section is required"
        problem = "is required"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        key = "type"
        got = f", got {error['ctx'].get('tag')!r}" if kind == "union_tag_invalid" else ""
        problem = f"must be one of {', '.join(LINK_TYPES)}{got}" if got else "is required"
    elif kind == "literal_error":
        expected = str(error["ctx"]["expected"]).replace("'", "")
        problem = f"must be one of {expected}, got {value!r}"
    elif kind in _KIND:
        problem = f"must be {_KIND[kind]}, got {_TOML_TYPES.get(type(value), type(value).__name__)} {value!r}"
        if isinstance(value, str) and kind in ("int_type", "float_type") and _is_number(value):
            problem += " (write numbers without quotes)"
        if key == "links":
            problem = "must be written as [[links]] tables"
    else:
        problem = error["msg"].removeprefix("Value error, ")
        problem = problem.replace("Input should be", "must be").replace("String should", "must")
    return f"{where} {key}: {problem}".strip() if key else f"{where} {problem}".strip()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
