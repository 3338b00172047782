"""A small MBTiles file made on the spot (Pillow PNG tiles in SQLite), so map tests need no network."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

from PIL import Image, ImageDraw

from mobile.maptiles import TILE, world_px

TILE_COLOUR = (236, 226, 200)  # the paper colour of every test tile; the map test looks for it
ROAD_COLOUR = (250, 250, 250)
WATER_COLOUR = (150, 190, 230)


def tile_png(zoom: int, x: int, y: int) -> bytes:
    image = Image.new("RGB", (TILE, TILE), TILE_COLOUR)
    draw = ImageDraw.Draw(image)
    for offset in (40, 170):
        draw.rectangle((offset, 0, offset + 14, TILE), fill=ROAD_COLOUR, outline=(200, 190, 170))
        draw.rectangle((0, offset + 30, TILE, offset + 44), fill=ROAD_COLOUR, outline=(200, 190, 170))
    if (x + y) % 3 == 0:
        draw.ellipse((90, 90, 150, 140), fill=WATER_COLOUR)
    draw.text((6, 6), f"{zoom}/{x}/{y}", fill=(120, 110, 90))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def make_mbtiles(
    path: Path, lat: float, lon: float, zooms: tuple[int, ...] = (15, 16), radius: int = 2
) -> int:
    """Tiles ``radius`` around (lat, lon) at each zoom, TMS rows as MBTiles wants; returns the count."""
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE metadata (name TEXT, value TEXT);"
        "CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB);"
        "CREATE UNIQUE INDEX tile_index ON tiles (zoom_level, tile_column, tile_row);"
    )
    db.executemany(
        "INSERT INTO metadata VALUES (?, ?)",
        [
            ("name", "mesh112 test tiles"),
            ("format", "png"),
            ("minzoom", str(min(zooms))),
            ("maxzoom", str(max(zooms))),
        ],
    )
    count = 0
    for zoom in zooms:
        cx, cy = (int(v // TILE) for v in world_px(lat, lon, zoom))
        for x in range(cx - radius, cx + radius + 1):
            for y in range(cy - radius, cy + radius + 1):
                row = (1 << zoom) - 1 - y
                db.execute("INSERT INTO tiles VALUES (?, ?, ?, ?)", (zoom, x, row, tile_png(zoom, x, y)))
                count += 1
    db.commit()
    db.close()
    return count
