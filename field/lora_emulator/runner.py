"""Start a set of emulated Meshtastic radios from a small TOML file.

preset = "LONG_FAST"      # modem preset shared by the medium
region = "EU_868"         # sets the duty cycle (10 % in EU_868)
seed = 1                  # every random draw of the medium and the radios
speedup = 1.0             # simulated seconds per wall-clock second
extra_loss = 0.0          # additional frame loss on every link, 0..1

[[radio]]
num = 0xA0000001          # Meshtastic node number
name = "Command post"
position = [0.0, 0.0]     # metres; path loss decides who hears whom
port = 4403               # TCP port on 127.0.0.1 (0 or absent: any free port)
hop_limit = 3
role = "CLIENT"           # or ROUTER, ROUTER_LATE, CLIENT_MUTE ...
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshtastic.protobuf import config_pb2

from field.lora_emulator.device import DeviceServer
from field.lora_emulator.medium import LoRaMedium
from field.lora_emulator.radio import EmulatedRadio
from relay.errors import ConfigError
from relay.links.lora_phy import PRESETS, REGION_DUTY_CYCLE

MAX_RADIOS = 256
ROLES = frozenset(config_pb2.Config.DeviceConfig.Role.keys())
REGIONS = frozenset(REGION_DUTY_CYCLE)  # the firmware table: each has a known duty cycle


@dataclass(frozen=True, slots=True)
class RadioConfig:
    num: int
    name: str
    position: tuple[float, float]
    port: int = 0
    hop_limit: int = 3
    role: str = "CLIENT"


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    radios: tuple[RadioConfig, ...]
    preset: str = "LONG_FAST"
    region: str = "EU_868"
    seed: int = 0
    speedup: float = 1.0
    extra_loss: float = 0.0


def _radio(index: int, raw: Any) -> RadioConfig:
    where = f"[[radio]] #{index + 1}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    num = raw.get("num")
    if not isinstance(num, int) or not 1 <= num < 0xFFFFFFFF:
        raise ConfigError(f"{where}: 'num' must be a node number between 1 and 0xFFFFFFFE")
    position = raw.get("position", [0.0, 0.0])
    if not (
        isinstance(position, list)
        and len(position) == 2
        and all(isinstance(v, int | float) for v in position)
    ):
        raise ConfigError(f"{where}: 'position' must be [x, y] in metres")
    port = raw.get("port", 0)
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"{where}: 'port' must be 0..65535")
    hop_limit = raw.get("hop_limit", 3)
    if not isinstance(hop_limit, int) or not 0 <= hop_limit <= 7:
        raise ConfigError(f"{where}: 'hop_limit' must be 0..7")
    role = str(raw.get("role", "CLIENT")).upper()
    if role not in ROLES:
        raise ConfigError(f"{where}: unknown role {role!r}")
    name = str(raw.get("name", f"Emu {num:08x}"))
    return RadioConfig(num, name, (float(position[0]), float(position[1])), port, hop_limit, role)


def parse_config(data: dict[str, Any]) -> EmulatorConfig:
    """Validate a parsed TOML document; ConfigError says which key is wrong and why."""
    preset = str(data.get("preset", "LONG_FAST")).upper()
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    region = str(data.get("region", "EU_868")).upper()
    if region not in REGIONS:
        raise ConfigError(f"unknown region {region!r}")
    speedup = data.get("speedup", 1.0)
    if not isinstance(speedup, int | float) or not 0 < speedup <= 10_000:
        raise ConfigError("'speedup' must be a number in (0, 10000]")
    extra_loss = data.get("extra_loss", 0.0)
    if not isinstance(extra_loss, int | float) or not 0 <= extra_loss <= 1:
        raise ConfigError("'extra_loss' must be between 0 and 1")
    seed = data.get("seed", 0)
    if not isinstance(seed, int):
        raise ConfigError("'seed' must be an integer")
    raw_radios = data.get("radio", [])
    if not isinstance(raw_radios, list) or not 1 <= len(raw_radios) <= MAX_RADIOS:
        raise ConfigError(f"give between 1 and {MAX_RADIOS} [[radio]] tables")
    radios = tuple(_radio(i, raw) for i, raw in enumerate(raw_radios))
    if len({r.num for r in radios}) != len(radios):
        raise ConfigError("two [[radio]] tables share a 'num'")
    return EmulatorConfig(radios, preset, region, seed, float(speedup), float(extra_loss))


def load_config(path: Path) -> EmulatorConfig:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return parse_config(data)


class EmulatedField:
    """A medium and its radios, each behind a TCP stream-API server on 127.0.0.1."""

    def __init__(self, config: EmulatorConfig, host: str = "127.0.0.1") -> None:
        self.config = config
        self.medium = LoRaMedium(
            config.preset, seed=config.seed, speedup=config.speedup, extra_loss=config.extra_loss
        )
        self.radios: dict[int, EmulatedRadio] = {}
        self.servers: dict[int, DeviceServer] = {}
        for rc in config.radios:
            radio = EmulatedRadio(
                self.medium,
                rc.num,
                long_name=rc.name,
                role=config_pb2.Config.DeviceConfig.Role.Value(rc.role),
                hop_limit=rc.hop_limit,
                region=config.region,
                position=rc.position,
                seed=config.seed,
            )
            self.radios[rc.num] = radio
            self.servers[rc.num] = DeviceServer(radio, host, rc.port)

    def start(self) -> dict[int, int]:
        """Open every TCP server; returns {node number: TCP port}."""
        try:
            return {num: server.start() for num, server in self.servers.items()}
        except OSError:
            self.stop()
            raise

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.medium.close()

    def __enter__(self) -> EmulatedField:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
