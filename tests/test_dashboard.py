"""The dashboard in headless Chromium (Debian's, driven by Playwright) against a real command post.

The browser signs in with the token from the address fragment, sends a message into the field
through the form, and sees a message and a unit's position from the field appear live through the
WebSocket stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Field, auth
from playwright.sync_api import Page, expect, sync_playwright
from system_tools import require_tool

from field.browser import CHROMIUM_ARGS


@pytest.fixture()
def page() -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=require_tool("chromium", "chromium"), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 900})
        finally:
            browser.close()


def test_dashboard_signs_in_sends_and_follows_the_stream(field: Field, page: Page, tmp_path: Path) -> None:
    token = field.tokens["dispatcher"]
    page.goto(f"{field.post.api}/#token={token}")
    expect(page.locator("#whoami")).to_contain_text("Signed in as dispatcher op")
    expect(page.locator("#stream-state")).to_have_text("stream: live", timeout=10_000)
    expect(page.locator("#send-to option", has_text="Field Relay 1")).to_have_count(1)
    assert "token" not in page.url  # the fragment is dropped once read

    page.select_option("#send-to", f"node:{field.relay_id}")  # listed by name: Field Relay 1
    page.fill("#send-text", "hold position at gate B")
    page.select_option("#send-priority", "IMMEDIATE")
    page.click("#send-form button[type=submit]")
    expect(page.locator("#send-result")).to_contain_text(":", timeout=10_000)

    response = httpx.post(
        f"{field.relay.api}/api/v1/messages",
        json={"to": f"node:{field.post_id}", "text": "gate B clear", "priority": "FLASH"},
        headers=auth(field.field_token),
    )
    assert response.status_code == 202
    row = page.locator("#messages tbody tr", has_text="gate B clear")
    expect(row).to_have_count(1, timeout=15_000)
    expect(row).to_have_class("FLASH")
    expect(page.locator("#links tbody tr")).to_have_count(1, timeout=10_000)

    reported = httpx.post(  # to the command post named in the field relay's node.toml
        f"{field.relay.api}/api/v1/positions",
        json={"lat": 47.3769, "lon": 8.5417, "accuracy_m": 4},
        headers=auth(field.field_token),
    )
    assert reported.status_code == 202, reported.text
    unit = page.locator("#units .row", has_text="Field Relay 1")
    expect(unit).to_contain_text("47.3769, 8.5417 ±4 m", timeout=15_000)
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)


def test_dashboard_without_token_asks_for_one(field: Field, page: Page) -> None:
    page.goto(field.post.api + "/")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#token-input", "m112.not.valid")
    page.click("#login-form button")
    expect(page.locator("#error")).to_contain_text("401")
    expect(page.locator("#main")).to_be_hidden()
