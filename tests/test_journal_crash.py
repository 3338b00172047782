"""The command post's journal is as durable as the store it acknowledges.

The feed acknowledges a delivery to the store right after the journal's COMMIT. So after a crash
at any point, every bundle the store considers acknowledged (delivered, gone from its inbox) must
be in the journal, and every bundle the store accepted is in one or the other.

- ``kill -9`` of a real child process (``journal_crash_worker.py``) running the real feed, at random
  points, many times over the same files; then both files are reopened and checked.
- A killed process only loses what the OS had not written yet; a power cut also loses what was
  written but not synced. So the child is also run under ``strace``: the journal's write-ahead log
  must be synced on every commit (``synchronous=FULL``); with ``NORMAL`` it is synced only at
  checkpoints, and the store's synced acknowledgement could outlive the journal entry.
"""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from engine_net import Deployment

from relay.journal import Journal
from relay.store import Store

WORKER = Path(__file__).with_name("journal_crash_worker.py")


@dataclass
class Claims:
    sent: set[str] = field(default_factory=set)  # durable in the store, per the child
    killed: int = 0
    finished: int = 0


def deployment(directory: Path) -> None:
    net = Deployment()
    identity, cert = net.enrol("cp", frozenset({"command_post"}))
    (directory / "authority.pub").write_bytes(net.authority.public.encode())
    (directory / "cp.key").write_bytes(identity.private_bytes())
    (directory / "cp.cert").write_bytes(cert.encode())


def run_worker(directory: Path, run: int, seed: int, messages: int, kill_after: float | None) -> str:
    """Run one child; with ``kill_after``, SIGKILL it that long after it said READY."""
    out_path = directory / f"out{run}.txt"
    with out_path.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, str(WORKER), str(directory), str(run), str(seed), str(messages)],
            stdout=out,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 30
            while b"READY" not in out_path.read_bytes() and child.poll() is None:
                assert time.monotonic() < deadline, "the worker never became ready"
                time.sleep(0.02)
            if kill_after is not None:
                time.sleep(kill_after)
                child.kill()  # SIGKILL to this PID
            _, stderr = child.communicate(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
    if child.returncode not in (0, -9):
        pytest.fail(f"worker run {run} exited {child.returncode}: {stderr.decode()[-2000:]}")
    return out_path.read_text()


def read_claims(claims: Claims, output: str) -> None:
    complete = output[: output.rfind("\n") + 1]  # a line cut by the kill is no claim
    for line in complete.splitlines():
        word, _, rest = line.partition(" ")
        if word == "SENT":
            claims.sent.add(rest)
        elif word == "DONE":
            claims.finished += 1


async def reopen(directory: Path) -> tuple[set[str], set[str], set[str]]:
    """Reopen both files as a restarted node would; (acknowledged, still in the inbox, journalled)."""
    store = await Store.open(directory / "store.sqlite3")
    await store.close()
    journal = await Journal.open(directory / "journal.sqlite3")
    await journal.close()
    db = sqlite3.connect(directory / "store.sqlite3")
    try:
        delivered = {bytes(row[0]).hex() for row in db.execute("SELECT id FROM seen WHERE delivered = 1")}
        inbox = {bytes(row[0]).hex() for row in db.execute("SELECT id FROM inbox")}
    finally:
        db.close()
    db = sqlite3.connect(directory / "journal.sqlite3")
    try:
        journalled = {row[0] for row in db.execute("SELECT bundle_id FROM messages")}
    finally:
        db.close()
    return delivered - inbox, inbox, journalled


def crash_test(directory: Path, runs: int, seed: int) -> None:
    deployment(directory)
    rng = random.Random(seed)
    claims = Claims()
    for run in range(1, runs + 1):
        output = run_worker(directory, run, seed, messages=2000, kill_after=rng.uniform(0.0, 0.8))
        read_claims(claims, output)
        if "DONE" not in output:
            claims.killed += 1
    acknowledged, inbox, journalled = asyncio.run(reopen(directory))
    assert claims.killed >= runs // 2, "the kills did not land while the feed worked"
    assert len(claims.sent) > 50 and len(acknowledged) > 50, "too little work to prove anything"
    lost = acknowledged - journalled
    assert not lost, f"{len(lost)} bundles acknowledged to the store are missing from the journal"
    missing = claims.sent - journalled - inbox
    assert not missing, f"{len(missing)} bundles the store accepted are in neither the journal nor the inbox"
    # A restarted feed finishes the job: everything left in the inbox reaches the journal.
    read_claims(claims, run_worker(directory, runs + 1, seed, messages=0, kill_after=None))
    acknowledged, inbox, journalled = asyncio.run(reopen(directory))
    assert not inbox and claims.sent <= journalled and acknowledged <= journalled


def test_journal_keeps_every_acknowledged_delivery_across_kill_9(tmp_path: Path) -> None:
    crash_test(tmp_path, runs=6, seed=112)


@pytest.mark.long
@pytest.mark.timeout(1800)
def test_journal_keeps_every_acknowledged_delivery_soak(tmp_path: Path) -> None:
    crash_test(tmp_path, runs=150, seed=2024)


def test_every_journal_commit_syncs_its_log(tmp_path: Path) -> None:
    """The power-cut half: under the real feed, the journal fsyncs its write-ahead log on every commit,
    as the store does, so the store's acknowledgement never reaches the disk before the entry."""
    strace = shutil.which("strace")
    assert strace, "strace is missing: run deploy/install-system-deps.sh"
    deployment(tmp_path)
    trace = tmp_path / "fsync.trace"
    messages = 100  # in bursts of a few (each one journal commit): enough commits to count
    traced = [strace, "-f", "-y", "-e", "trace=fsync,fdatasync", "-o", str(trace)]
    child = subprocess.run(
        [*traced, sys.executable, str(WORKER), str(tmp_path), "1", "7", str(messages)],
        capture_output=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr.decode()[-2000:]
    assert b"DONE" in child.stdout
    # With -f a call another thread interrupts is written "<unfinished ...>" and its result later.
    synced = re.findall(r"f(?:data)?sync\(\d+<([^>]+)>(?:\)\s+= 0| <unfinished \.\.\.>)", trace.read_text())
    journal_syncs = [i for i, path in enumerate(synced) if path.endswith("journal.sqlite3-wal")]
    store_syncs = [i for i, path in enumerate(synced) if path.endswith("store.sqlite3-wal")]
    # Every journal commit syncs the log (a burst of deliveries is one commit of its units heard and
    # messages); NORMAL would sync only at a checkpoint or on close, a handful of times in all.
    commits = int(re.findall(rb"COMMITS (\d+)", child.stdout)[0])
    assert commits >= 4, f"the feed committed the journal only {commits} times for {messages} messages"
    assert len(journal_syncs) >= commits, (
        f"{commits} journal commits synced the log {len(journal_syncs)} times"
    )
    assert len(store_syncs) >= 2, "the store did not sync its log (sends, acknowledgements)"
