"""Where one message's latency goes: a timestamp trace of a one-hop field (issue 15).

    .venv/bin/python -m bench._trace_latency [--door app|ws|post] [--probes 50] [--slowest 0]

Runs the one-hop field of ``bench/relay_ip.py`` (real ``mesh112 relay run`` processes), sends
``--probes`` messages one at a time through the door ``relay_ip`` times (``app``: the ingest Unix
socket; ``ws``: the ingest WebSocket; ``post``: the single POST), and prints, per step, the median
time since the client handed the message over, across the probes: client (B), sender (S), command
post (R). Steps are the entry (``>``) and exit (``<``) of the functions in :data:`POINTS`, wrapped
in each relay process by a ``sitecustomize`` written to a temporary directory (``PYTHONPATH``), so
no product code carries the trace; every call appends ``<wall-clock ns> <label>`` to its process's
file. A step is listed when at least 80 % of the probes passed it; ``#2`` is a label's second call
within a probe. ``--slowest N`` then prints every step of the N probes slowest to reach the command
post's feed
(the tail: what the median hides).
"""

from __future__ import annotations

import argparse
import functools
import inspect
import os
import statistics
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import Any

ENV = "MESH112_TRACE_DIR"
# (module, class or "", function, label): the path of one message, both sides.
POINTS = (
    (
        "uvicorn.protocols.websockets.websockets_sansio_impl",
        "WebSocketsSansIOProtocol",
        "data_received",
        "ws.data",
    ),
    ("relay.api.routes_ingest", "", "send_batch", "ingest"),
    ("relay.node", "Node", "send_many", "node.send_many"),
    ("relay.store", "Store", "next_bundle_ids", "next_ids"),
    ("relay.api.app", "_BodyLimit", "__call__", "http"),
    ("relay.api.tokens", "TokenVerifier", "verify", "token"),
    ("relay.node", "Node", "send", "node.send"),
    ("relay.engine", "NodeEngine", "_seal_payload", "seal"),
    ("relay.store", "Store", "next_bundle_id", "next_id"),
    ("relay.store", "Store", "put_many", "put_many"),
    ("relay.store", "Store", "put_each", "put_each"),
    ("relay.store", "Store", "_transaction", "commit"),
    ("relay.engine", "NodeEngine", "next_frame", "next_frame"),
    ("relay.links.ip", "IpLink", "send", "link.send"),
    ("relay.links.ip_session", "PeerSession", "_send_data", "send_data"),
    ("relay.links.ip_session", "PeerSession", "_send_inline", "send_inline"),
    ("relay.links.ip_session", "PeerSession", "on_record", "on_record"),
    ("relay.node", "Node", "frame_received", "frame_received"),
    ("relay.node", "Node", "_frames", "batch"),
    ("relay.engine", "NodeEngine", "_deliver", "deliver"),
    ("relay.engine", "NodeEngine", "_deliver_early", "deliver_early"),
    ("relay.command_post", "CommandPostFeed", "record", "feed"),
    ("relay.journal", "Journal", "record_burst", "journal"),
    ("relay.journal", "Journal", "_call", "journal.call"),
    ("websockets.sync.connection", "Connection", "send", "client.send"),
    ("bench.relay_ip", "", "_send_line", "client.line"),
    ("httpx", "Client", "post", "client.post"),
)
START = {"app": "client.line>", "ws": "client.send>", "post": "client.post>"}  # a probe's first step
SITE = (
    f"import os\nif os.environ.get({ENV!r}):\n    from bench._trace_latency import install\n    install()\n"
)


def install() -> None:
    """Wrap every point of :data:`POINTS` to log its entry and exit (in the process it runs in)."""
    lock = threading.Lock()
    out = (Path(os.environ[ENV]) / f"{os.getpid()}.log").open("a", buffering=1)  # until the process ends

    def log(label: str) -> None:
        line = f"{time.time_ns()} {label}\n"
        with lock:
            out.write(line)

    for module, owner, name, label in POINTS:
        target: Any = import_module(module)
        if owner:
            target = getattr(target, owner)
        setattr(target, name, _wrapped(getattr(target, name), label, log))


def _wrapped(fn: Callable[..., Any], label: str, log: Callable[[str], None]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def traced_async(*args: Any, **kwargs: Any) -> Any:
            log(f"{label}>")
            try:
                return await fn(*args, **kwargs)
            finally:
                log(f"{label}<")

        return traced_async

    @functools.wraps(fn)
    def traced(*args: Any, **kwargs: Any) -> Any:
        log(f"{label}>")
        try:
            return fn(*args, **kwargs)
        finally:
            log(f"{label}<")

    return traced


def _probes(logs: dict[str, Path], start: str) -> list[list[tuple[int, str, str]]]:
    """Every process's events, (ns, side, label), cut into probes at each ``start`` of the client."""
    events = sorted(
        (int(stamp), side, label)
        for side, path in logs.items()
        for stamp, label in (line.split(" ", 1) for line in path.read_text().splitlines())
    )
    probes: list[list[tuple[int, str, str]]] = []
    for event in events:
        if event[1] == "B" and event[2] == start:
            probes.append([event])
        elif probes:
            probes[-1].append(event)
    return probes


def _steps(probes: list[list[tuple[int, str, str]]]) -> list[tuple[float, str, int]]:
    """(median ms since the probe's start, step, probes) for the steps most probes passed, in time order."""
    offsets: dict[str, list[float]] = defaultdict(list)
    for probe in probes:
        seen: Counter[str] = Counter()
        for stamp, side, label in probe:
            seen[f"{side} {label}"] += 1
            count = seen[f"{side} {label}"]
            offsets[f"{side} {label}" + (f"#{count}" if count > 1 else "")].append(
                (stamp - probe[0][0]) / 1e6
            )
    rows = [
        (statistics.median(v), step, len(v)) for step, v in offsets.items() if len(v) >= 0.8 * len(probes)
    ]
    return sorted(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--door", choices=tuple(START), default="app")
    parser.add_argument("--probes", type=int, default=50)
    parser.add_argument("--slowest", type=int, default=0)
    args = parser.parse_args()
    from bench import relay_ip
    from field.harness import running_field

    with tempfile.TemporaryDirectory() as directory:
        root, traces, site = Path(directory), Path(directory) / "traces", Path(directory) / "site"
        traces.mkdir()
        site.mkdir()
        (site / "sitecustomize.py").write_text(SITE)
        repo = str(Path(__file__).resolve().parent.parent)
        os.environ[ENV] = str(traces)
        os.environ["PYTHONPATH"] = os.pathsep.join([str(site), repo, os.environ.get("PYTHONPATH", "")])
        with running_field(root / "field", relay_ip.CHAINS[1]) as field:
            relay_ip._latency(field, 1, args.door)  # warm-up: links up, routes learnt
            relay_ip._quiesce(field)
            sides = {str(process.pid): slug for slug, process in field.processes.items()}
            install()  # the client's own points, from here on
            relay_ip._latency(field, args.probes, args.door)
        logs = {"B": traces / f"{os.getpid()}.log"}
        for pid, slug in sides.items():
            logs["R" if slug == "command-post" else "S"] = traces / f"{pid}.log"
        print(f"{args.probes} probes through the {args.door} door, load {os.getloadavg()[0]:.1f}")
        probes = _probes(logs, START[args.door])
        for offset, step, count in _steps(probes):
            print(f"{offset:9.3f} ms  {step}  ({count})")
        fed = [(_reached(probe, "R feed>"), probe) for probe in probes]
        for reached, probe in sorted(fed, key=lambda item: -item[0])[: args.slowest]:
            print(f"\none of the slowest: the feed at {reached:.3f} ms")
            for stamp, side, label in probe:
                print(f"{(stamp - probe[0][0]) / 1e6:9.3f} ms  {side} {label}")


def _reached(probe: list[tuple[int, str, str]], step: str) -> float:
    """ms from the probe's start to its first ``step`` (``side label``); infinity if it never came."""
    for stamp, side, label in probe:
        if f"{side} {label}" == step:
            return (stamp - probe[0][0]) / 1e6
    return float("inf")


if __name__ == "__main__":
    main()
