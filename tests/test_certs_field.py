"""Certificates on demand between real relay processes over real IP links on 127.0.0.1: a responder
enrolled after the roster was written dials relay-1 (which learns its certificate from the IP
handshake); relay-1 dials the command post, which never met the responder and asks relay-1 for the
certificate. The message reaches the post's journal once, and the post keeps the certificate in its
roster for the next start."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from field.harness import journal_messages, running_field, send_many
from field.processes import FieldNode
from relay.daemon import ROSTER_DIR, load_roster

DELIVERY_BOUND_S = 45  # loose: the 2-core test machine is shared


def _log_messages(log: Path, needle: str) -> list[str]:
    found = []
    for line in log.read_text().splitlines():
        try:
            message = str(json.loads(line).get("message", ""))
        except json.JSONDecodeError:
            message = line
        if needle in message:
            found.append(message)
    return found


def _wait_for_text(post: FieldNode, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(message[2] == text for message in journal_messages(post)):
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in the command post's journal within {timeout} s")


def test_a_late_enrolled_responder_is_heard_through_a_relay_that_asks_nobody(tmp_path: Path) -> None:
    chain = ("command-post", "relay-1", "responder-1")
    with running_field(tmp_path, chain, started=()) as field:
        post, relay, responder = (field.node(slug) for slug in chain)
        responder_id = bytes.fromhex(field.node_id("responder-1"))
        certificate = (post.directory / ROSTER_DIR / f"{responder_id.hex()}.cert").read_bytes()
        for node in (post, relay):  # enrolled after both rosters were written
            (node.directory / ROSTER_DIR / f"{responder_id.hex()}.cert").unlink()
            assert responder_id not in {c.node_id for c in load_roster(node.directory / ROSTER_DIR)}
        for slug in chain:
            field.start_healthy(slug)

        text = "on scene, two casualties"
        asyncio.run(send_many(responder, field.token, f"node:{field.node_id('command-post')}", [text]))
        _wait_for_text(post, text, DELIVERY_BOUND_S)
        time.sleep(2.0)  # a resend arriving now is a duplicate, not a second message
        assert [m[2] for m in journal_messages(post)].count(text) == 1

        post_log, relay_log = (tmp_path / "logs" / f"{slug}.log" for slug in ("command-post", "relay-1"))
        asked = _log_messages(post_log, "learned from")
        assert len(asked) == 1 and "Responder 1" in asked[0], asked  # on demand, from relay-1
        assert _log_messages(relay_log, "learned and saved")  # relay-1: from the IP handshake
        saved = post.directory / ROSTER_DIR / f"{responder_id.hex()}.cert"
        assert saved.read_bytes() == certificate  # the post reads it from its roster after a restart
