"""A node revoked while the deployment runs, on real relay processes over loopback IP.

    command-post  <-ip->  relay-1  <-ip->  relay-2  <-ip->  responder-1 (lost, then revoked)

:func:`revoke_lost_node` measures a real FLASH alarm from relay-2 to the command post's journal
before and after ``mesh112 authority revoke --via`` cuts responder-1 off, while the revoked node keeps
sending FLASH and redialling. ``tests/adversary/test_revocation_field.py`` asserts on the run and
``bench/revocation.py`` reports it.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from field.harness import RunningField, journal_messages
from field.processes import FieldNode

CHAIN = ("command-post", "relay-1", "relay-2", "responder-1")
ALARMS = 9  # medians of nine: on a shared machine single runs vary by 3x
ALARM_TIMEOUT_S = 15.0
LOST_SENDS = 20  # FLASH messages the revoked node sends after its revocation


class ScenarioError(AssertionError):
    """A step of the scenario did not happen in time; the message says which."""


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def send_flash(node: FieldNode, token: str, to: str, text: str) -> httpx.Response:
    body = {"to": f"node:{to}", "text": text, "priority": "FLASH"}
    return httpx.post(f"{node.api}/api/v1/messages", json=body, headers=auth(token), timeout=10.0)


def wait_for(what: str, check: Callable[[], bool], timeout: float = 15.0) -> float:
    """Poll ``check()`` until true; the seconds it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise ScenarioError(f"{what} not within {timeout:.0f} s")
        time.sleep(0.02)
    return time.monotonic() - started


def serial(node: FieldNode, admin: str) -> int | None:
    """The serial of the revocation list ``node`` holds."""
    response = httpx.get(f"{node.api}/api/v1/revocations", headers=auth(admin), timeout=5.0)
    response.raise_for_status()
    held: int | None = response.json()["serial"]
    return held


def peers(node: FieldNode, admin: str) -> set[str]:
    """Node ids (hex) of the neighbours up at ``node``."""
    response = httpx.get(f"{node.api}/api/v1/links", headers=auth(admin), timeout=5.0)
    response.raise_for_status()
    return {row["peer"] for row in response.json()}


def alarm_latency(field: RunningField, text: str) -> float:
    """Seconds from a FLASH alarm's POST at relay-2 to its row in the command post's journal."""
    post = field.node("command-post")
    started = time.time()
    response = send_flash(field.node("relay-2"), field.token, field.node_id("command-post"), text)
    if response.status_code != 202:
        raise ScenarioError(f"relay-2 refused the alarm: {response.status_code} {response.text}")
    deadline = time.monotonic() + ALARM_TIMEOUT_S
    while time.monotonic() < deadline:
        for _, _, got, received in journal_messages(post):
            if got == text:
                return received - started
        time.sleep(0.01)
    raise ScenarioError(f"alarm {text!r} did not reach the journal within {ALARM_TIMEOUT_S:.0f} s")


def revoke_via(field: RunningField, node: str, admin: str) -> float:
    """``mesh112 authority revoke --via`` the command post; the seconds the command took."""
    started = time.monotonic()
    command = [sys.executable, "-m", "relay", "authority", "revoke"]
    command += ["--authority", str(field.deployment.authority_dir), node, "--reason", "lost in the field"]
    command += ["--via", field.node("command-post").api]
    done = subprocess.run(
        command, env={**os.environ, "MESH112_TOKEN": admin}, capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0 or "published through" not in done.stdout:
        raise ScenarioError(f"mesh112 authority revoke --via failed: {done.stderr or done.stdout}")
    return time.monotonic() - started


@dataclass(frozen=True, slots=True)
class RevocationRun:
    """What one run measured (seconds)."""

    before_s: tuple[float, ...]  # alarm latencies before the revocation
    after_s: tuple[float, ...]  # and after, while the revoked node sends and redials
    revoke_s: float  # the revoke command, rotation of the group keys included
    propagated_s: float  # then until relay-2 held the new list
    cut_s: float  # then until relay-2 no longer listed the revoked node as a neighbour
    lost_delivered: int  # of the revoked node's LOST_SENDS messages, how many reached the journal
    handshakes_refused: int  # relay-2's log lines for the revoked node's redials

    @property
    def latency_before_s(self) -> float:
        return statistics.median(self.before_s)

    @property
    def latency_after_s(self) -> float:
        return statistics.median(self.after_s)


def revoke_lost_node(field: RunningField, admin: str, alarms: int = ALARMS) -> RevocationRun:
    """Alarms, revoke responder-1 while it runs, let it send, alarms again (see the module doc)."""
    post, relay2, lost = field.node("command-post"), field.node("relay-2"), field.node("responder-1")
    post_id, lost_id = field.node_id("command-post"), field.node_id("responder-1")
    wait_for("responder-1 up at relay-2", lambda: lost_id in peers(relay2, admin), 30.0)
    before = [alarm_latency(field, f"alarm before {i}") for i in range(alarms)]
    if send_flash(lost, field.token, post_id, "from the lost radio, before").status_code != 202:
        raise ScenarioError("the lost radio's node refused its message before the revocation")
    wait_for("the lost radio's message", lambda: any("before" in m[2] for m in journal_messages(post)))
    revoke_s = revoke_via(field, str(lost.directory), admin)
    propagated_s = wait_for("the list at relay-2", lambda: serial(relay2, admin) == 1)
    cut_s = wait_for("the session cut", lambda: lost_id not in peers(relay2, admin))
    for i in range(LOST_SENDS):
        send_flash(lost, field.token, post_id, f"from the lost radio, after {i}")
    after = [alarm_latency(field, f"alarm after {i}") for i in range(alarms)]
    time.sleep(2.0)  # time enough for anything that got through to land
    lost_after = [m for m in journal_messages(post) if "lost radio, after" in m[2]]
    log = (field.root / "logs" / "relay-2.log").read_text()
    return RevocationRun(
        tuple(before),
        tuple(after),
        revoke_s,
        propagated_s,
        cut_s,
        len(lost_after),
        log.count("handshake refused"),
    )
