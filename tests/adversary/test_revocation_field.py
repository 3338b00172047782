"""A node and an operator revoked while the deployment runs: real relay processes on loopback IP.

    command-post  <-ip->  relay-1  <-ip->  relay-2  <-ip->  responder-1 (lost, then revoked)

``mesh112 authority revoke --via`` posts the signed list to the command post, which floods it as a
FLASH bundle. Then: relay-2 cuts responder-1's session and refuses its handshakes, nothing responder-1
sends reaches the journal, the revoked operator's token is refused for FLASH sends at the command
post and at relay-2, its open WebSocket streams are closed (4401) on both, a real FLASH alarm from
relay-2 keeps its latency (within 2x of the latency before), and relay-2 still refuses both after a
restart. Figures are printed (run with -s) and each refusal is visible in a log line or metric.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import websockets

from crypto.certificate import Authority
from crypto.keystore import load_revocations
from field.harness import RunningField, journal_messages, running_field
from field.processes import FieldNode, operator_token

CHAIN = ("command-post", "relay-1", "relay-2", "responder-1")
ALARMS = 9  # medians of nine: the machine is shared, single runs vary by 3x
ALARM_TIMEOUT_S = 15.0


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _send(node: FieldNode, token: str, to: str, text: str) -> httpx.Response:
    body = {"to": f"node:{to}", "text": text, "priority": "FLASH"}
    return httpx.post(f"{node.api}/api/v1/messages", json=body, headers=_auth(token), timeout=10.0)


def _alarm_latency(field: RunningField, text: str) -> float:
    """Seconds from a FLASH alarm's POST at relay-2 to its row in the command post's journal."""
    post = field.node("command-post")
    started = time.time()
    response = _send(field.node("relay-2"), field.token, field.node_id("command-post"), text)
    assert response.status_code == 202, response.text
    deadline = time.monotonic() + ALARM_TIMEOUT_S
    while time.monotonic() < deadline:
        for _, _, got, received in journal_messages(post):
            if got == text:
                return received - started
        time.sleep(0.01)
    raise AssertionError(f"alarm {text!r} did not reach the journal within {ALARM_TIMEOUT_S:.0f} s")


def _revoke(field: RunningField, node: str, admin: str) -> float:
    """``mesh112 authority revoke --via`` the command post; seconds the command took."""
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "relay",
            "authority",
            "revoke",
            "--authority",
            str(field.deployment.authority_dir),
            node,
            "--reason",
            "lost in the field",
            "--via",
            field.node("command-post").api,
        ],
        env={**os.environ, "MESH112_TOKEN": admin},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "published through" in done.stdout
    return time.monotonic() - started


def _wait(what: str, check: object, timeout: float = 15.0) -> float:
    """Poll ``check()`` until true; the seconds it took."""
    started = time.monotonic()
    while not check():  # type: ignore[operator]
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what} not within {timeout:.0f} s")
        time.sleep(0.02)
    return time.monotonic() - started


def _serial(node: FieldNode, admin: str) -> int | None:
    response = httpx.get(f"{node.api}/api/v1/revocations", headers=_auth(admin), timeout=5.0)
    response.raise_for_status()
    serial: int | None = response.json()["serial"]
    return serial


def _peers(node: FieldNode, admin: str) -> set[str]:
    response = httpx.get(f"{node.api}/api/v1/links", headers=_auth(admin), timeout=5.0)
    response.raise_for_status()
    return {row["peer"] for row in response.json()}


async def _stream_closed(node: FieldNode, token: str, opened: asyncio.Event) -> tuple[int | None, float]:
    """Open the live stream; (close code, monotonic time it closed)."""
    url = node.api.replace("http://", "ws://") + f"/api/v1/stream?token={token}"
    async with websockets.connect(url) as socket:
        opened.set()
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(socket.recv(), 30.0)
        return socket.close_code, time.monotonic()


@pytest.mark.timeout(240)
def test_a_node_and_an_operator_revoked_while_running(tmp_path: Path) -> None:
    with running_field(tmp_path, CHAIN) as field:
        admin = operator_token(field.deployment, frozenset({"admin"}), "duty officer")
        rogue = operator_token(field.deployment, frozenset({"dispatcher"}), "rogue dispatcher")
        post, relay2, lost = field.node("command-post"), field.node("relay-2"), field.node("responder-1")
        post_id, lost_id = field.node_id("command-post"), field.node_id("responder-1")
        _wait("responder-1 up at relay-2", lambda: lost_id in _peers(relay2, admin), 30.0)

        # Without the attack: the alarm latency, and the lost node's messages still arrive.
        before = [_alarm_latency(field, f"alarm before {i}") for i in range(ALARMS)]
        assert _send(lost, field.token, post_id, "from the lost radio, before").status_code == 202
        _wait("the lost radio's message", lambda: any("before" in m[2] for m in journal_messages(post)))

        # The node is revoked while everything runs.
        revoke_s = _revoke(field, str(lost.directory), admin)
        propagated_s = _wait("the list at relay-2", lambda: _serial(relay2, admin) == 1)
        cut_s = _wait("the session cut", lambda: lost_id not in _peers(relay2, admin))
        next_epoch = relay2.directory / "groups" / "all-1.sealed"
        rotated_s = _wait("relay-2 holding the next epoch of the group 'all'", next_epoch.exists)
        assert (post.directory / "groups" / "all-1.sealed").exists()
        assert not (lost.directory / "groups" / "all-1.sealed").exists()
        for i in range(20):  # the lost radio goes on sending FLASH through its own node
            _send(lost, field.token, post_id, f"from the lost radio, after {i}")
        after = [_alarm_latency(field, f"alarm after {i}") for i in range(ALARMS)]
        time.sleep(2.0)  # time enough for anything that got through to land
        texts = [m[2] for m in journal_messages(post)]
        assert not [text for text in texts if "after" in text and "lost radio" in text]
        assert lost_id not in _peers(relay2, admin)
        print(
            f"\nrevoked node: mesh112 authority revoke --via {revoke_s:.2f} s, list at relay-2 after "
            f"{propagated_s:.2f} s more, session cut {cut_s:.2f} s, group keys rotated {rotated_s:.2f} s; "
            "FLASH alarm latency median "
            f"{statistics.median(before) * 1000:.0f} ms before, {statistics.median(after) * 1000:.0f} ms "
            f"after (runs {[round(x * 1000) for x in before]} / {[round(x * 1000) for x in after]} ms)"
        )
        assert statistics.median(after) <= 2 * statistics.median(before) + 0.05, (before, after)
        everyone = {"to": "all", "text": "all units: sealed under the new epoch", "priority": "FLASH"}
        sent = httpx.post(
            f"{post.api}/api/v1/messages", json=everyone, headers=_auth(field.token), timeout=10
        )
        assert sent.status_code == 202, sent.text
        _wait("the broadcast at relay-2", lambda: any("new epoch" in m[2] for m in journal_messages(relay2)))

        # The operator is revoked while its streams are open at the command post and at relay-2.
        rogue_id = httpx.get(f"{post.api}/api/v1/whoami", headers=_auth(rogue), timeout=5.0).json()[
            "operator"
        ]

        async def revoke_operator() -> list[tuple[int | None, float]]:
            opened = [asyncio.Event(), asyncio.Event()]
            streams = [
                asyncio.create_task(_stream_closed(node, rogue, event))
                for node, event in zip((post, relay2), opened, strict=True)
            ]
            await asyncio.gather(*(event.wait() for event in opened))
            authority = Authority.load(field.deployment.authority_dir)
            listed = authority.revoke(bytes.fromhex(rogue_id), "token leaked")
            authority.save(field.deployment.authority_dir)
            start = time.monotonic()
            async with httpx.AsyncClient(headers=_auth(admin)) as client:  # what revoke --via posts
                published = await client.post(f"{post.api}/api/v1/revocations", content=listed.encode())
            assert published.status_code == 202, published.text
            return [(code, closed - start) for code, closed in await asyncio.gather(*streams)]

        closed = asyncio.run(revoke_operator())
        print(
            f"revoked operator: stream at the command post closed {closed[0][1]:.2f} s after the list was "
            f"posted, at relay-2 {closed[1][1]:.2f} s"
        )
        assert [code for code, _ in closed] == [4401, 4401]
        assert all(after_s < 5.0 for _, after_s in closed)  # at once, or at the next 2 s re-check
        for node in (post, relay2):
            refused = _send(node, rogue, post_id, "rogue order")
            assert refused.status_code == 401 and "revoked" in refused.text, refused.text

        metrics = httpx.get(f"{relay2.api}/metrics", headers=_auth(admin), timeout=5.0).text
        assert "mesh112_revocation_serial 2.0" in metrics
        assert 'mesh112_security_events_total{what="revocations_applied"} 2.0' in metrics

        # Durable: relay-2 restarts with the list from its data directory.
        field.stop("relay-2")
        saved = load_revocations(relay2.directory)
        assert saved is not None and saved.serial == 2
        field.start_healthy("relay-2")
        assert _serial(relay2, admin) == 2
        assert _send(relay2, rogue, post_id, "rogue order after restart").status_code == 401
        time.sleep(3.0)  # the lost radio redials all along
        assert lost_id not in _peers(relay2, admin)
        assert _alarm_latency(field, "alarm after restart") < ALARM_TIMEOUT_S
        log = (field.root / "logs" / "relay-2.log").read_text()
        assert "session with" in log and "cut" in log and "handshake refused" in log
        assert "revocation list serial 1 applied" in log
