"""kill -9 a process whose engine is sending, restart the engine on its store: nothing claimed is lost."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from engine_net import IP, Deployment, EnginePump

from relay.bundle import BundleId
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


async def test_engine_killed_mid_send_loses_nothing_it_claimed(tmp_path: Path) -> None:
    net = Deployment()
    identity_a, cert_a = net.enrol("a")
    _, cert_b = net.enrol("b")
    (tmp_path / "authority.pub").write_bytes(net.authority.public.encode())
    (tmp_path / "a.key").write_bytes(identity_a.private_bytes())
    (tmp_path / "a.cert").write_bytes(cert_a.encode())
    (tmp_path / "b.cert").write_bytes(cert_b.encode())
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
