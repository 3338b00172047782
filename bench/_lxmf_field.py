"""LXMF/Reticulum over loopback TCP, one or three hops: the peer figures for ``bench/relay_ip.py``.

``measure_lxmf()`` runs ONE repetition with fresh processes and identities: a receiver, a sender and,
for three hops, two transport nodes between them (sender -> T1 -> T2 -> receiver, each hop its own TCP
connection on 127.0.0.1). Each peer is ``bench/_lxmf_peer.py`` in its own process (RNS allows one
instance per process), started with ``subprocess.Popen`` and stopped by PID in a ``finally``. The
configs are written and verified before Reticulum starts, and every process's sockets are checked for
anything off loopback after start and again at the end (``bench/_lxmf_config.py``).

Messages are DIRECT over one link, warmed up by a first message before anything is timed. Texts are
random base64 of ``body_bytes`` (bz2 cannot flatter them). Times are wall clock (``time.time()``) in
the sending and receiving processes on the same machine. 1 MB = 1e6 B.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench._lxmf_config import verify_loopback_sockets

REPO_ROOT = Path(__file__).resolve().parents[1]
MB = 1e6
LATENCY_GAP = 0.05  # seconds between latency probes, so each meets an idle link
LATENCY_PROBE_WAIT = 30.0
SETTLE_WAIT = 20.0  # after the last proof; a message not received by then counts as not delivered
STOP_WAIT = 5.0
PEER_MARGIN = 30.0  # peers outlive the orchestrator's deadline a little, so its error is the one seen
DURABLE_REASON = (
    "LXMF keeps its outbound queue in RAM (LXMRouter.pending_outbound) and stores nothing before "
    "sending; a sender crash loses every queued message"
)
BULK_NOTE = (
    "bulk_* bypasses handle_outbound()'s 50 ms busy-wait by using LXMF internals (pack each message, "
    "append all to LXMRouter.pending_outbound, one process_outbound()): the stack's upper bound, not "
    "what an app gets; api_* is the public API"
)


class LxmfBenchError(RuntimeError):
    """A peer died or a bounded wait ran out; the message names the peer and what was awaited."""


@dataclass
class _Peer:
    name: str
    process: subprocess.Popen[str]
    stderr: IO[str]
    stderr_path: Path
    reader: threading.Thread
    ready: dict[str, Any] = field(default_factory=dict)

    def stderr_tail(self) -> str:
        """The end of the peer's stderr and of Reticulum's log (where RNS reports a failed interface)."""
        self.stderr.flush()
        tail = self.stderr_path.read_text(errors="replace")[-1500:]
        logfile = self.stderr_path.with_suffix("") / "logfile"
        if logfile.exists():
            tail += "\nReticulum log:\n" + logfile.read_text(errors="replace")[-1500:]
        return tail


class _Field:
    """The running peers, the single queue their events arrive on, and what those events said."""

    def __init__(self, workdir: Path, deadline: float) -> None:
        self.workdir = workdir
        self.deadline = deadline
        self.peers: dict[str, _Peer] = {}
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.delivered: dict[str, list[tuple[int, float, int]]] = defaultdict(list)
        self.submitted: dict[str, dict[int, float]] = defaultdict(dict)
        self.done: dict[str, dict[str, Any]] = {}
        self.seen: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.last: dict[tuple[str, str], dict[str, Any]] = {}
        self.socket_checks = 0
        self.stopping = False

    def start(self, name: str, role: str, listen_port: int | None, connect_port: int | None) -> None:
        command = [sys.executable, "-m", "bench._lxmf_peer", "--role", role]
        command += ["--configdir", str(self.workdir / name)]
        command += ["--timeout", f"{max(1.0, self.deadline - time.monotonic()) + PEER_MARGIN:.0f}"]
        if listen_port is not None:
            command += ["--listen-port", str(listen_port)]
        if connect_port is not None:
            command += ["--connect-port", str(connect_port)]
        stderr_path = self.workdir / f"{name}.stderr"
        stderr = stderr_path.open("w")
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True
        )
        reader = threading.Thread(target=self._read, args=(name, process), daemon=True)
        self.peers[name] = _Peer(name, process, stderr, stderr_path, reader)
        reader.start()
        self.wait(lambda: self.seen[(name, "ready")] > 0, 60.0, f"{name} to start")
        self.peers[name].ready = self.last[(name, "ready")]

    def _read(self, name: str, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.events.put((name, json.loads(line)))
        self.events.put((name, {"event": "exited"}))

    def send(self, name: str, **command: Any) -> None:
        stdin = self.peers[name].process.stdin
        assert stdin is not None
        stdin.write(json.dumps(command) + "\n")
        stdin.flush()

    def wait(self, condition: Any, seconds: float, what: str) -> None:
        """Handle events until ``condition()`` holds; bounded by ``seconds`` and the run's deadline."""
        deadline = min(time.monotonic() + seconds, self.deadline)
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LxmfBenchError(f"LXMF bench: gave up waiting for {what} (workdir {self.workdir})")
            try:
                name, event = self.events.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            self._handle(name, event)

    def _handle(self, name: str, event: dict[str, Any]) -> None:
        kind = event["event"]
        self.seen[(name, kind)] += 1
        self.last[(name, kind)] = event
        if kind == "exited" and not self.stopping:
            peer = self.peers[name]
            code = peer.process.wait(timeout=STOP_WAIT)
            raise LxmfBenchError(f"LXMF peer {name} exited early (code {code}):\n{peer.stderr_tail()}")
        if kind == "delivered":
            self.delivered[event["tag"]].append((event["index"], event["at"], event["bytes"]))
        elif kind == "submitted":
            self.submitted[event["tag"]][event["index"]] = event["at"]
        elif kind == "done":
            self.done[event["tag"]] = event

    def check_loopback(self) -> None:
        """Every peer checks its own sockets, and this process checks each peer's from outside."""
        for name, peer in self.peers.items():
            verify_loopback_sockets(peer.process.pid)
            before = self.seen[(name, "checked")]
            self.send(name, cmd="check")
            self.wait(lambda n=name, b=before: self.seen[(n, "checked")] > b, 10.0, f"{name}'s socket check")
            self.socket_checks += 2

    def stop(self) -> None:
        """Ask each peer to quit, then terminate and kill by PID whatever is still running."""
        self.stopping = True
        for peer in self.peers.values():
            try:
                assert peer.process.stdin is not None
                peer.process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                peer.process.stdin.close()
            except (OSError, ValueError):
                pass
        for peer in self.peers.values():
            try:
                peer.process.wait(timeout=STOP_WAIT)
            except subprocess.TimeoutExpired:
                peer.process.terminate()
                try:
                    peer.process.wait(timeout=STOP_WAIT)
                except subprocess.TimeoutExpired:
                    peer.process.kill()
                    peer.process.wait(timeout=STOP_WAIT)
            peer.reader.join(timeout=STOP_WAIT)
            peer.stderr.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _start_chain(lxmf: _Field, hops: int) -> None:
    """Receiver first, then each node towards the sender connects to the one before it and listens."""
    names = ["receiver"] + [f"t{n}" for n in range(hops - 1, 0, -1)] + ["sender"]
    ports = {name: _free_port() for name in names[:-1]}
    lxmf.start("receiver", "receiver", ports["receiver"], None)
    for downstream, name in itertools.pairwise(names):
        role = "sender" if name == "sender" else "transport"
        lxmf.start(name, role, ports.get(name), ports[downstream])


def _unique(lxmf: _Field, tag: str, count: int) -> tuple[dict[int, tuple[float, int]], int]:
    """Deliveries of ``tag`` by index, and how many arrived more than once; refuses unknown indices."""
    by_index: dict[int, tuple[float, int]] = {}
    for index, at, size in lxmf.delivered[tag]:
        if not 0 <= index < count:
            raise LxmfBenchError(f"receiver reported {tag} message {index}, which was never sent")
        by_index.setdefault(index, (at, size))
    return by_index, len(lxmf.delivered[tag]) - len(by_index)


def _run_batch(lxmf: _Field, tag: str, count: int, body_bytes: int) -> dict[str, Any]:
    """Send ``count`` messages in mode ``tag`` and time first submit -> the receiver's last callback."""
    lxmf.send("sender", cmd=tag, count=count, body_bytes=body_bytes, timeout=lxmf.deadline - time.monotonic())
    lxmf.wait(lambda: tag in lxmf.done, lxmf.deadline - time.monotonic(), f"the sender to settle {tag}")
    confirmed = lxmf.done[tag]["delivered"]
    # LXMF proves a message before its delivery callback runs, so a few may still be on their way; one
    # that never shows up is a finding (confirmed but not delivered), reported, not an error.
    with contextlib.suppress(LxmfBenchError):
        lxmf.wait(lambda: len(_unique(lxmf, tag, count)[0]) >= confirmed, SETTLE_WAIT, f"{tag} deliveries")
    by_index, duplicates = _unique(lxmf, tag, count)
    if not by_index:
        raise LxmfBenchError(f"no {tag} message reached the receiver")
    seconds = max(at for at, _ in by_index.values()) - min(lxmf.submitted[tag].values())
    content = sum(size for _, size in by_index.values())
    return {
        "msgs_per_s": len(by_index) / seconds,
        "mb_per_s": content / seconds / MB,
        "delivered": len(by_index),
        "confirmed": confirmed,
        "duplicates": duplicates,
        "failed": lxmf.done[tag]["failed"],
        "unsettled": lxmf.done[tag]["unsettled"],
        "seconds": seconds,
    }


def _latencies(lxmf: _Field, samples: int, body_bytes: int) -> list[float]:
    """One message at a time on the warm link, a short gap between; ms from submit to delivery."""
    for index in range(samples):
        lxmf.send("sender", cmd="latency_one", index=index, body_bytes=body_bytes)
        lxmf.wait(
            lambda i=index: i in lxmf.submitted["lat"] and any(d[0] == i for d in lxmf.delivered["lat"]),
            LATENCY_PROBE_WAIT,
            f"latency probe {index}",
        )
        time.sleep(LATENCY_GAP)
    by_index, duplicates = _unique(lxmf, "lat", samples)
    if duplicates:
        raise LxmfBenchError(f"{duplicates} latency probes were delivered twice")
    return [(by_index[i][0] - lxmf.submitted["lat"][i]) * 1000 for i in range(samples)]


def measure_lxmf(
    workdir: Path,
    hops: int,
    count: int,
    latency_samples: int,
    body_bytes: int = 100,
    timeout: float = 300.0,
    api_count: int | None = None,
) -> dict[str, Any]:
    """One repetition of the LXMF figures over ``hops`` (1 or 3) loopback TCP hops, fresh peers.

    ``count`` messages go in bulk mode and ``api_count`` (default ``count``) through the public API
    (``handle_outbound()`` runs at about 20 msg/s, so 200 is plenty); ``latency_samples`` probes go one at
    a time. ``workdir`` must be empty or absent (peer configs, identities, stderr logs go there);
    ``timeout`` bounds the whole repetition. Raises ``LxmfBenchError`` if a peer dies or a wait runs out,
    ``LoopbackViolation`` if any peer could reach beyond 127.0.0.1.
    """
    if hops not in (1, 3):
        raise ValueError(f"hops must be 1 or 3, not {hops}")
    if min(count, latency_samples, api_count if api_count is not None else 1) < 1:
        raise ValueError("count, api_count and latency_samples must each be at least 1")
    api_count = count if api_count is None else api_count
    workdir.mkdir(parents=True, exist_ok=True)
    load_1min = os.getloadavg()[0]
    started = time.monotonic()
    lxmf = _Field(workdir, started + timeout)
    try:
        _start_chain(lxmf, hops)
        lxmf.send("receiver", cmd="announce")
        destination = lxmf.peers["receiver"].ready["destination"]
        lxmf.send("sender", cmd="connect", destination=destination, body_bytes=body_bytes, timeout=60.0)
        lxmf.wait(lambda: lxmf.seen[("sender", "connected")] > 0, 70.0, "the sender's path and link")
        connected = lxmf.last[("sender", "connected")]
        setup_seconds = time.monotonic() - started
        lxmf.check_loopback()
        latencies = _latencies(lxmf, latency_samples, body_bytes)
        api = _run_batch(lxmf, "api", api_count, body_bytes)
        bulk = _run_batch(lxmf, "bulk", count, body_bytes)
        lxmf.check_loopback()
    finally:
        lxmf.stop()
    ordered = sorted(latencies)
    versions = lxmf.peers["receiver"].ready
    return {
        "hops": hops,
        "path_hops": connected["hops"],
        "path_requests": connected["path_requests"],
        "body_bytes": body_bytes,
        "setup_seconds": round(setup_seconds, 3),
        "api_count": api_count,
        "api_msgs_per_s": round(api["msgs_per_s"], 3),
        "api_delivered": api["delivered"],
        "api_confirmed": api["confirmed"],
        "api_duplicates": api["duplicates"],
        "api_failed": api["failed"],
        "api_unsettled": api["unsettled"],
        "api_seconds": round(api["seconds"], 3),
        "bulk_count": count,
        "bulk_msgs_per_s": round(bulk["msgs_per_s"], 3),
        "bulk_mb_per_s": round(bulk["mb_per_s"], 4),
        "bulk_delivered": bulk["delivered"],
        "bulk_confirmed": bulk["confirmed"],
        "bulk_duplicates": bulk["duplicates"],
        "bulk_failed": bulk["failed"],
        "bulk_unsettled": bulk["unsettled"],
        "bulk_seconds": round(bulk["seconds"], 3),
        "latency_ms_p50": round(statistics.median(ordered), 2),
        "latency_ms_p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2),
        "latency_samples": len(ordered),
        "latency_ms_samples": [round(value, 3) for value in latencies],
        "load_1min_at_start": round(load_1min, 2),
        "loopback_only": True,
        "loopback_socket_checks": lxmf.socket_checks,
        "durable": False,
        "durable_reason": DURABLE_REASON,
        "note": BULK_NOTE,
        "rns_version": versions["rns_version"],
        "lxmf_version": versions["lxmf_version"],
    }
