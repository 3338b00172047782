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
import time
from pathlib import Path

import httpx
import pytest
import websockets

from crypto.certificate import Authority
from crypto.keystore import load_revocations
from field.harness import journal_messages, running_field
from field.processes import FieldNode, operator_token
from field.revocation import (
    ALARM_TIMEOUT_S,
    CHAIN,
    LOST_SENDS,
    alarm_latency,
    auth,
    peers,
    revoke_lost_node,
    send_flash,
    serial,
    wait_for,
)


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

        # The node is revoked while everything runs (alarms before and after, see field/revocation.py).
        run = revoke_lost_node(field, admin)
        print(
            f"\nrevoked node: mesh112 authority revoke --via {run.revoke_s:.2f} s, list at relay-2 after "
            f"{run.propagated_s:.2f} s more, session cut {run.cut_s:.2f} s; FLASH alarm latency median "
            f"{run.latency_before_s * 1000:.0f} ms before, {run.latency_after_s * 1000:.0f} ms after (runs "
            f"{[round(x * 1000) for x in run.before_s]} / {[round(x * 1000) for x in run.after_s]} ms); "
            f"{run.handshakes_refused} redials refused"
        )
        assert run.lost_delivered == 0, f"{run.lost_delivered} of {LOST_SENDS} reached the journal"
        assert lost_id not in peers(relay2, admin)
        assert run.latency_after_s <= 2 * run.latency_before_s + 0.05, (run.before_s, run.after_s)
        assert (relay2.directory / "groups" / "all-1.sealed").exists()  # group keys rotated
        assert (post.directory / "groups" / "all-1.sealed").exists()
        assert not (lost.directory / "groups" / "all-1.sealed").exists()
        everyone = {"to": "all", "text": "all units: sealed under the new epoch", "priority": "FLASH"}
        sent = httpx.post(f"{post.api}/api/v1/messages", json=everyone, headers=auth(field.token), timeout=10)
        assert sent.status_code == 202, sent.text
        wait_for(
            "the broadcast at relay-2", lambda: any("new epoch" in m[2] for m in journal_messages(relay2))
        )

        # The operator is revoked while its streams are open at the command post and at relay-2.
        rogue_id = httpx.get(f"{post.api}/api/v1/whoami", headers=auth(rogue), timeout=5.0).json()["operator"]

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
            async with httpx.AsyncClient(headers=auth(admin)) as client:  # what revoke --via posts
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
            refused = send_flash(node, rogue, post_id, "rogue order")
            assert refused.status_code == 401 and "revoked" in refused.text, refused.text

        metrics = httpx.get(f"{relay2.api}/metrics", headers=auth(admin), timeout=5.0).text
        assert "mesh112_revocation_serial 2.0" in metrics
        assert 'mesh112_security_events_total{what="revocations_applied"} 2.0' in metrics

        # Durable: relay-2 restarts with the list from its data directory.
        field.stop("relay-2")
        saved = load_revocations(relay2.directory)
        assert saved is not None and saved.serial == 2
        field.start_healthy("relay-2")
        assert serial(relay2, admin) == 2
        assert send_flash(relay2, rogue, post_id, "rogue order after restart").status_code == 401
        time.sleep(3.0)  # the lost radio redials all along
        assert lost_id not in peers(relay2, admin)
        assert alarm_latency(field, "alarm after restart") < ALARM_TIMEOUT_S
        log = (field.root / "logs" / "relay-2.log").read_text()
        assert "session with" in log and "cut" in log and "handshake refused" in log
        assert "revocation list serial 1 applied" in log
