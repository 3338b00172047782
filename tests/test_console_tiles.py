"""The console map on local tiles: an MBTiles file named in node.toml ([api] tiles) is served tile by
tile through the API (rows flipped from TMS), and the page draws those tiles; nothing is fetched
from anywhere else."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, expect, sync_playwright
from system_tools import require_tool

from field.browser import CHROMIUM_ARGS
from field.deployment import create_demo_deployment
from field.harness import free_port_base
from field.processes import operator_token, start_node, stop_all, wait_healthy, write_field


def write_mbtiles(path: Path, zoom: int, x_range: range, y_range: range) -> None:
    """A raster MBTiles file: one 256 px PNG per tile, its TMS row stored as MBTiles wants it."""
    db = sqlite3.connect(path)
    db.executescript(
        """CREATE TABLE metadata (name TEXT, value TEXT);
           CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB);"""
    )
    db.executemany(
        "INSERT INTO metadata VALUES (?, ?)",
        [
            ("name", "test area"),
            ("format", "png"),
            ("minzoom", str(zoom - 2)),
            ("maxzoom", str(zoom + 2)),
            ("bounds", "13.30,49.70,13.45,49.80"),
            ("attribution", "test tiles"),
        ],
    )
    for x in x_range:
        for y in y_range:
            out = io.BytesIO()
            Image.new("RGB", (256, 256), (200, (x * 7) % 256, (y * 13) % 256)).save(out, "PNG")
            db.execute("INSERT INTO tiles VALUES (?,?,?,?)", (zoom, x, (1 << zoom) - 1 - y, out.getvalue()))
    db.commit()
    db.close()


@pytest.fixture()
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=require_tool("chromium", "chromium"), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


def test_tiles_from_the_nodes_mbtiles_file_reach_the_map(tmp_path: Path, browser: Browser) -> None:
    deployment = create_demo_deployment(tmp_path / "field")
    [post] = write_field(deployment, free_port_base(1), free_port_base(1), chain=["command-post"])
    zoom = 14  # Pilsen, around the console's default view
    write_mbtiles(post.directory / "area.mbtiles", zoom, range(8795, 8806), range(5569, 5580))
    config = post.config.read_text()
    post.config.write_text(config.replace("[api]\n", '[api]\ntiles = "area.mbtiles"\n', 1))
    (tmp_path / "logs").mkdir()
    process = start_node(post, tmp_path / "logs")
    try:
        wait_healthy([post])
        token = operator_token(deployment, frozenset({"observer"}), "Observer")
        headers = {"Authorization": f"Bearer {token}"}
        console = httpx.get(f"{post.api}/api/v1/console", headers=headers).json()
        assert console["tiles"]["format"] == "png" and console["tiles"]["maxzoom"] == zoom + 2
        tile = httpx.get(f"{post.api}/api/v1/tiles/{zoom}/8800/5574", headers=headers)
        assert tile.status_code == 200 and tile.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(tile.content)).getpixel((0, 0)) == (200, 8800 * 7 % 256, 5574 * 13 % 256)
        assert httpx.get(f"{post.api}/api/v1/tiles/{zoom}/1/1", headers=headers).status_code == 404
        assert httpx.get(f"{post.api}/api/v1/tiles/{zoom}/8800/5574").status_code == 401

        page = browser.new_page(viewport={"width": 1280, "height": 900})
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.goto(f"{post.api}/#token={token}")
        loaded = "#map .leaflet-tile-pane img.leaflet-tile-loaded"
        page.wait_for_function(f"document.querySelectorAll({loaded!r}).length >= 4", timeout=15_000)
        expect(page.locator(loaded).first).to_be_visible()
        assert all(url.startswith(post.api) or url.startswith(("data:", "blob:")) for url in requested), (
            requested
        )
    finally:
        stop_all([process])
