"""Offline map tiles from an MBTiles file (SQLite, TMS rows) and the Web Mercator arithmetic the map
widget draws with; no network, ever. A missing file or tile is ``None`` and the widget draws a grid.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path

TILE = 256  # pixels per tile side


def world_px(lat: float, lon: float, zoom: int) -> tuple[float, float]:
    """Web Mercator pixel of (lat, lon) at ``zoom``: x east, y south, from the top-left of the world."""
    size = TILE * (1 << zoom)
    lat = max(-85.0511, min(85.0511, lat))
    x = (lon + 180.0) / 360.0 * size
    s = math.sin(math.radians(lat))
    y = (0.5 - math.log((1 + s) / (1 - s)) / (4 * math.pi)) * size
    return x, y


def lat_lon(x: float, y: float, zoom: int) -> tuple[float, float]:
    size = TILE * (1 << zoom)
    lon = x / size * 360.0 - 180.0
    n = math.pi - 2 * math.pi * y / size
    return math.degrees(math.atan(math.sinh(n))), lon


@dataclass(frozen=True, slots=True)
class TileView:
    """Which tiles cover a ``width`` x ``height`` view centred on (lat, lon), and where each goes.

    ``placements`` are (x, y, left, top) in widget pixels from the view's top-left corner.
    """

    zoom: int
    placements: tuple[tuple[int, int, float, float], ...]

    @classmethod
    def covering(cls, lat: float, lon: float, zoom: int, width: float, height: float) -> TileView:
        cx, cy = world_px(lat, lon, zoom)
        left, top = cx - width / 2, cy - height / 2
        count = 1 << zoom
        out = []
        for ty in range(max(0, int(top // TILE)), min(count, int((top + height) // TILE) + 1)):
            for tx in range(int(left // TILE), int((left + width) // TILE) + 1):
                out.append((tx % count, ty, tx * TILE - left, ty * TILE - top))
        return cls(zoom, tuple(out))


class MBTiles:
    """Read-only tiles from an MBTiles 1.3 file (``tiles`` table, TMS row order)."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(f"no MBTiles file at {path}")
        self.path = path
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)

    def close(self) -> None:
        self._db.close()

    def metadata(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self._db.execute("SELECT name, value FROM metadata")}

    def zooms(self) -> tuple[int, int]:
        low, high = self._db.execute("SELECT min(zoom_level), max(zoom_level) FROM tiles").fetchone()
        if low is None:
            raise ValueError(f"{self.path} holds no tiles")
        return int(low), int(high)

    def tile(self, zoom: int, x: int, y: int) -> bytes | None:
        """The image of XYZ tile (zoom, x, y), or None."""
        row = (1 << zoom) - 1 - y
        found = self._db.execute(
            "SELECT tile_data FROM tiles WHERE zoom_level = ? AND tile_column = ? AND tile_row = ?",
            (zoom, x, row),
        ).fetchone()
        return bytes(found[0]) if found else None
