"""The app's own settings: ``app.toml`` beside ``node.toml`` (optional; every key has a default).

``node.toml`` stays the node's (the daemon's strict schema); what only the phone needs lives here::

    pin = "2580"            # cancels an SOS; set your own (the default is printed in the docs)
    language = "cs"         # "en" or "cs"
    night = false           # start in the dark night mode
    mbtiles = "map.mbtiles" # offline map tiles, relative to the node directory; a grid when absent
    gpsd = "127.0.0.1:2947" # where gpsd listens (laptops, vehicle relays); "" for none
    position = [50.0875, 14.4213]  # a fixed position when there is no receiver
    team = "group:incident-1"      # where team messages go (default: the first incident group joined)
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from relay.errors import ConfigError

SETTINGS_FILE = "app.toml"
DEFAULT_PIN = "1122"
LANGUAGES = ("en", "cs")


@dataclass(frozen=True, slots=True)
class AppSettings:
    pin: str = DEFAULT_PIN
    language: str = "en"
    night: bool = False
    mbtiles: Path | None = None
    gpsd: str = ""
    position: tuple[float, float] | None = None
    team: str = ""

    @classmethod
    def load(cls, node_dir: Path) -> AppSettings:
        path = node_dir / SETTINGS_FILE
        if not path.exists():
            return cls()
        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not TOML: {exc}") from None
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
        pin = str(data.get("pin", DEFAULT_PIN))
        if not (pin.isdigit() and 4 <= len(pin) <= 8):
            raise ConfigError(f"{path}: pin must be 4-8 digits")
        language = str(data.get("language", "en"))
        if language not in LANGUAGES:
            raise ConfigError(f"{path}: language must be one of {', '.join(LANGUAGES)}, got {language!r}")
        position = data.get("position")
        if position is not None and not (
            isinstance(position, list)
            and len(position) == 2
            and all(isinstance(v, float | int) for v in position)
        ):
            raise ConfigError(f"{path}: position must be [lat, lon] in degrees")
        tiles = data.get("mbtiles")
        return cls(
            pin=pin,
            language=language,
            night=bool(data.get("night", False)),
            mbtiles=node_dir / str(tiles) if tiles else None,
            gpsd=str(data.get("gpsd", "")),
            position=(float(position[0]), float(position[1])) if position else None,
            team=str(data.get("team", "")),
        )
