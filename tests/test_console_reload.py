"""What the console loads when it opens (or reloads) must be what it showed live.

A record of a type no application here handles (another post's application, over the backbone)
at FLASH sits in the operator's queue live; it must still be there after a reload. The console
loaded the open records of the installed applications' types only, so it was gone. And the page's
live stream ends when the page closes, even when nothing happens meanwhile. Real parts: the relay
API on a real socket over a real SQLite journal and node, Debian Chromium (Playwright)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from engine_net import Deployment
from playwright.async_api import async_playwright
from system_tools import require_tool

from crypto.identity import Identity
from field.browser import CHROMIUM_ARGS
from field.harness import free_port
from relay.api.app import ApiContext, create_app
from relay.api.tokens import issue_token
from relay.bundle import to_epoch
from relay.engine import NodeEngine
from relay.journal import Journal, RecordEntry
from relay.node import Node

ORIGIN = "cd" * 16


@pytest.fixture
async def post(tmp_path: Path) -> AsyncIterator[tuple[ApiContext, str]]:
    """A command post's API over a real node (no links) and SQLite journal, and a dispatcher's token."""
    net = Deployment()
    identity, cert = net.enrol("post", frozenset({"dispatcher"}))
    engine = await NodeEngine.open(
        identity, cert, net.trust(), tmp_path / "store.sqlite3", now=to_epoch(time.time())
    )
    node = Node(engine, [])
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    until = int(time.time()) + 3600
    operator = net.authority.issue(Identity.generate().public, frozenset({"dispatcher"}), "op", until)
    try:
        yield (
            ApiContext(node, journal, net.authority.public, lambda: None),
            issue_token(net.authority.identity, operator, until),
        )
    finally:
        await journal.close()
        await node.stop()


async def test_an_urgent_record_of_a_type_not_installed_here_is_in_the_queue_after_a_reload(
    post: tuple[ApiContext, str],
) -> None:
    ctx, token = post
    journal = ctx.journal
    now = time.time()
    for record_id, record_type, priority, summary in (
        ("gas-1", "chemical", "FLASH", "Ammonia leak, hall 3"),
        ("old-1", "chemical-old", "FLASH", "Closed long ago"),
        ("heard-1", "meshtastic", "ROUTINE", "A stock radio heard"),
    ):
        body = {"summary": summary}
        await journal.put_record(RecordEntry(record_id, record_type, ORIGIN, priority, now, now, body))
    await journal.add_ack("old-1", {"operator": "op", "action": "closed", "at": now}, close=True)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    base = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(10):
            while not server.started:
                assert not serving.done(), "the API server did not start"
                await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
            console = (await client.get("/api/v1/console")).json()
        assert console["record_types"] == ["chemical"]  # urgent and open; no application is installed

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=require_tool("chromium", "chromium"), headless=True, args=CHROMIUM_ARGS
            )
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                await page.goto(f"{base}/#token={token}")
                alarms = page.locator("#alarms")
                await alarms.get_by_text("Ammonia leak, hall 3").wait_for(timeout=15_000)
                assert await page.locator("#alarm-count").inner_text() == "1"
            finally:
                await browser.close()
        async with asyncio.timeout(5):  # the closed page's stream ends: a quiet one lingered on
            while ctx.hub.subscribers:
                await asyncio.sleep(0.05)
    finally:
        server.should_exit = True
        async with asyncio.timeout(10):  # a stream left open held the shutdown forever
            await serving


async def test_the_video_panel_loads_every_units_newest_session(post: tuple[ApiContext, str]) -> None:
    """The Live video panel shows one session per unit. It loaded the newest 100 session records,
    so a unit whose session was older than another unit's hundred later ones was missing."""
    ctx, token = post
    now = time.time()
    units = {"aa" * 16: 1, "bb" * 16: 120}  # sessions each
    for origin, count in units.items():
        for n in range(count):
            created = now + n
            body = {"session": n, "state": "answered", "sos": False}
            entry = RecordEntry(f"webrtc-{origin}-{n}", "webrtc", origin, "IMMEDIATE", created, created, body)
            await ctx.journal.put_record(entry)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(ctx)),
        base_url="http://127.0.0.1",
        headers={"Authorization": f"Bearer {token}"},
    ) as client:
        response = await client.get("/api/v1/records/latest", params={"type": "webrtc"})
    assert response.status_code == 200, response.text
    latest = [(r["origin"], r["body"]["session"]) for r in response.json()]
    assert latest == [("bb" * 16, 119), ("aa" * 16, 0)]
