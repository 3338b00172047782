"""kill -9 a process whose engine is sending, restart the engine on its store: nothing claimed is lost."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from engine_net import IP, Deployment, EnginePump

from crypto.certificate import Certificate
from crypto.identity import Identity
from relay.bundle import BundleId, Destination, Kind, Priority
from relay.engine import NodeEngine
from relay.trust import TrustStore

WORKER = Path(__file__).with_name("engine_crash_worker.py")
NOW = 1000.0


def _run_and_kill(directory: Path, after_lines: int) -> list[BundleId]:
    process = subprocess.Popen(
        [sys.executable, str(WORKER), str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    claimed: list[BundleId] = []
    try:
        deadline = time.monotonic() + 60
        assert process.stdout is not None
        while len(claimed) < after_lines and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            if line.startswith("SENT "):
                claimed.append(BundleId.from_key(bytes.fromhex(line.split()[1])))
    finally:
        process.kill()  # SIGKILL: no close, no flush
        process.wait(timeout=10)
    assert len(claimed) >= after_lines, process.stderr.read() if process.stderr else ""
    return claimed


def _enrolled_pair(tmp_path: Path) -> tuple[Deployment, Identity, Certificate, Certificate]:
    """Nodes a and b enrolled, with a's key and both certificates written for the worker process."""
    net = Deployment()
    identity_a, cert_a = net.enrol("a")
    _, cert_b = net.enrol("b")
    (tmp_path / "authority.pub").write_bytes(net.authority.public.encode())
    (tmp_path / "a.key").write_bytes(identity_a.private_bytes())
    (tmp_path / "a.cert").write_bytes(cert_a.encode())
    (tmp_path / "b.cert").write_bytes(cert_b.encode())
    return net, identity_a, cert_a, cert_b


async def test_engine_killed_mid_send_loses_nothing_it_claimed(tmp_path: Path) -> None:
    net, identity_a, cert_a, cert_b = _enrolled_pair(tmp_path)
    claimed = await asyncio.to_thread(_run_and_kill, tmp_path, 60)
    a = await NodeEngine.open(
        identity_a,
        cert_a,
        TrustStore(net.authority.public, [cert_a, cert_b]),
        tmp_path / "a.sqlite",
        now=NOW + 1,
    )
    assert all(a.core.holds(bundle_id) for bundle_id in claimed)
    b = await net.open("b", tmp_path, NOW + 1)
    pump = EnginePump()
    await pump.connect(IP, a, b, NOW + 1)
    await pump.run(NOW + 1, 120, dt=0.5)  # one frame per step each way: enough steps for every bundle
    delivered = []
    while True:
        try:
            batch = await asyncio.wait_for(b.receive(), 0.5)
        except TimeoutError:
            break
        delivered += [d.bundle_id for d in batch]
    assert set(claimed) <= set(delivered)
    assert len(delivered) == len(set(delivered)), "a bundle was delivered twice"
    await a.close()
    await b.close()


COMMIT_WORKER = Path(__file__).with_name("engine_commit_worker.py")


def _run_until_held(directory: Path, count: int) -> tuple[list[BundleId], list[bytes]]:
    """The worker's SENT claims and every frame it handed its link, once its last frame left with
    the commit held; then SIGKILL."""
    process = subprocess.Popen(
        [sys.executable, str(COMMIT_WORKER), str(directory), str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    claimed: list[BundleId] = []
    frames: list[bytes] = []
    held = False
    try:
        deadline = time.monotonic() + 60
        assert process.stdout is not None
        while not held and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            word, *rest = line.split()
            if word == "SENT":
                claimed.append(BundleId.from_key(bytes.fromhex(rest[0])))
            elif word == "FRAME":
                frames.append(bytes.fromhex(rest[0]))
            held = word == "HELD"
    finally:
        process.kill()  # SIGKILL while the held commit waits for the store's write lock
        process.wait(timeout=10)
    assert held, process.stderr.read() if process.stderr else ""
    return claimed, frames


async def test_killed_after_the_frame_left_and_before_the_commit_loses_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    """Sending while committing (docs/relay-core.md): the process dies with a frame out and its commit
    not landed. Every bundle whose send returned is still held after the restart; the one in flight is
    not (its application got no answer and may send again: at least once), its frame is still
    delivered once, and its id is never issued again."""
    net, identity_a, cert_a, cert_b = _enrolled_pair(tmp_path)
    claimed, frames = await asyncio.to_thread(_run_until_held, tmp_path, 20)
    assert len(claimed) == 20
    a = await NodeEngine.open(
        identity_a, cert_a, TrustStore(net.authority.public, [cert_a, cert_b]), tmp_path / "a.sqlite", now=NOW
    )
    assert all(a.core.holds(bundle_id) for bundle_id in claimed)
    b = await net.open("b", tmp_path, NOW)
    await b.link_up(IP, a.node_id, NOW)
    for frame in frames:
        await b.frame_received(IP.name, a.node_id, frame, NOW)
    delivered = {d.payload: d.bundle_id for d in await asyncio.wait_for(b.receive(), 2)}
    assert len(delivered) == 21 and set(claimed) <= set(delivered.values())
    in_flight = delivered[b"held"]
    assert not a.core.holds(in_flight) and await a.store.get(in_flight) is None
    again = await a.send(
        Destination.to_node(b.node_id),
        b"again",
        kind=Kind.TEXT,
        priority=Priority.PRIORITY,
        lifetime=3600,
        now=NOW,
    )
    assert again != in_flight and again not in claimed
    await a.close()
    await b.close()
