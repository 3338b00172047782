"""The path taken, through real relay processes on loopback IP: the command post sends an order to
responder-1 across two field relays, and its bundle status ends ``delivered`` naming every hop.

    command-post  <-ip->  relay-1  <-ip->  relay-2  <-ip->  responder-1
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from field.harness import running_field

CHAIN = ("command-post", "relay-1", "relay-2", "responder-1")
DEADLINE_S = 20.0


def test_delivered_status_shows_the_path_relay_1_relay_2_responder_1(tmp_path: Path) -> None:
    with running_field(tmp_path, CHAIN) as field:
        post = field.node("command-post")
        headers = {"Authorization": f"Bearer {field.token}"}
        with httpx.Client(base_url=post.api, headers=headers, timeout=10.0) as client:
            sent = client.post(
                "/api/v1/messages",
                json={
                    "to": f"node:{field.node_id('responder-1')}",
                    "text": "evacuate sector 7",
                    "priority": "IMMEDIATE",
                },
            )
            assert sent.status_code == 202, sent.text
            bundle_id = sent.json()["bundle_id"]
            status: dict[str, Any] = {}
            deadline = time.monotonic() + DEADLINE_S
            while time.monotonic() < deadline:
                status = client.get(f"/api/v1/bundles/{bundle_id}").json()
                if status["state"] == "delivered":
                    break
                time.sleep(0.2)
    assert status["state"] == "delivered", f"not delivered within {DEADLINE_S} s: {status}"
    assert status["path"] == ["Field Relay 1", "Field Relay 2", "Responder 1"]
    assert status["hops"] == 3 and status["path_complete"] is True
    assert status["peer"] == field.node_id("relay-1") and status["link"]
    assert "via Field Relay 1 → Field Relay 2 → Responder 1, 3 hops" in status["summary"]
