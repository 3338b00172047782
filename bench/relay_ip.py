"""Relays over loopback IP: throughput and latency through real ``mesh112 relay run`` processes, one and
three hops, with durable stores, next to LXMF/Reticulum measured the same way in the same run.

Mesh112 (each figure per repetition; medians over ``ROUNDS`` fresh fields):

- *backlog*: bundles originated into the stopped sender's store (durable before it starts, as after a
  partition), then the sender starts and forwards them hop by hop; every relay stores each bundle
  durably (SQLite, synchronous=FULL) before it takes custody. Rate is arrivals in the command post's
  application over the time between its first and last arrival. Two sizes: 100 B (as LXMF's text
  message; 10,000 bundles) and 10,000 B (for MB/s; 2,000 bundles, 20 MB).
- *api*: messages POSTed to the sender's relay API 32 at a time, as operators and apps send; rate from
  the first POST to the last arrival.
- *api batch*: the same 100 B messages through ``POST /api/v1/messages/batch``, 250 per request, one
  request at a time: ``ingest`` is messages made durable at the sender per second (first request to
  last answer), the other figure is to the last arrival at the command post.
- *api socket*: the same 100 B messages through the local ingest WebSocket (``/api/v1/ingest``), as
  an application on the sender's machine feeds it: frames of 250 on one open socket, up to the
  socket's ``MAX_IN_FLIGHT`` frames unanswered at once; ``api_socket_ingest_msgs_per_s`` is messages
  made durable at the sender per second (first frame to last answer), ``api_socket_msgs_per_s`` to
  the last arrival at the command post.
- *FLASH behind a backlog*: a backlog of 20,000 bundles of 100 B as above; once 3,000 have arrived,
  one FLASH message is POSTed to the sender's relay API. ``backlog_flash_ms`` is from just before the
  POST to the command post application's ``received`` stamp, ``backlog_after_flash`` how many of
  the backlog arrived after it (the frames it overtook on the way).
- *latency*: one message at a time on a warm, idle path, from just before it is handed to the sender's
  relay to the command post application's ``received`` stamp (read from the command post's live
  stream; wall clock, one machine); percentiles over all repetitions' samples. Three doors: ``app``
  (``latency_app_*``), an application on the sender's machine writing a line to its open ingest
  Unix socket (``<data_dir>/ingest.sock``): the figure compared with LXMF's, whose sender is an
  application calling its router in process; ``ws`` (``latency_ws_*``), the same through the ingest
  WebSocket (``/api/v1/ingest``, the app door until the Unix socket came); and ``post``
  (``latency_post_*``), an operator's single ``POST /api/v1/messages`` with its HTTP request and
  token check.

The LXMF side (``bench/_lxmf_field.py``) runs one RNS instance per process with TCP interfaces on
127.0.0.1 only (config written first: no AutoInterface, no shared instance), two transport nodes in
the three-hop case, DIRECT delivery over a link. 1 MB = 1e6 B.

``MESH112_BENCH_ROUNDS=1`` runs one round of each side instead of ``ROUNDS`` (a quick before/after
check; the committed results come from full runs); ``MESH112_BENCH_ONLY=latency`` measures only the
latencies (and LXMF's), a check of about a minute.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from bench._lxmf_config import verify_loopback_sockets
from bench._lxmf_field import measure_lxmf
from field.harness import (
    RunningField,
    inbox_pending,
    journal_count,
    journal_messages,
    preload,
    running_field,
    send_many,
    stored_bundles,
    wait_until,
)
from field.processes import FieldNode
from relay.api.ingest_unix import SOCKET_FILE
from relay.api.routes_ingest import MAX_IN_FLIGHT

CHAINS = {
    1: ("command-post", "responder-1"),
    3: ("command-post", "relay-1", "relay-2", "responder-1"),
}
# body bytes: bundles. Enough for a steady rate: at 300 bundles of 10 kB (0.3 s) the IP window's
# ramp-up decided the figure; LXMF sends the same 10 kB backlog, and LXMF_BULK_MESSAGES at 100 B.
BACKLOG = {100: 10_000, 10_000: 2_000}
# a FLASH message sent once FLASH_AFTER bundles of a FLASH_BACKLOG backlog of 100 B have arrived
FLASH_BACKLOG, FLASH_AFTER = 20_000, 3_000
API_MESSAGES = 300
API_BATCH_MESSAGES, API_BATCH_SIZE = 3000, 250
API_SOCKET_MESSAGES = 4000  # in frames of API_BATCH_SIZE
LATENCY_SAMPLES = 50
LATENCY_GAP = 0.05
LXMF_API_MESSAGES = 200
LXMF_BULK_MESSAGES = 1000
ROUNDS = int(os.environ.get("MESH112_BENCH_ROUNDS", "3"))
ONLY_LATENCY = os.environ.get("MESH112_BENCH_ONLY", "") == "latency"
MB = 1e6


def _texts(tag: str, count: int, size: int) -> list[str]:
    """``count`` distinct texts of ``size`` bytes: a tag, then random base64 (nothing to compress)."""
    texts = []
    for index in range(count):
        head = f"{tag}-{index:06d} "
        texts.append(head + base64.b64encode(os.urandom(size)).decode()[: size - len(head)])
    return texts


def _arrivals(post: FieldNode, tag: str) -> list[float]:
    """Arrival times of the command post's journal messages whose text carries ``tag``."""
    return sorted(received for _, _, text, received in journal_messages(post) if text.startswith(f"{tag}-"))


def _await_arrivals(post: FieldNode, before: int, count: int, timeout: float, what: str) -> None:
    """Wait for ``count`` messages past the ``before`` the command post's journal held. Polled by
    count (0.2 ms a poll): reading every message each time (20 ms at 17,500 messages, ten polls a
    second) took a sixth of a core from the two the relays share."""
    wait_until(lambda: journal_count(post) - before, count, timeout, what)


def _backlog(field: RunningField, size: int, count: int) -> dict[str, float]:
    post, sender = field.nodes[0], field.nodes[-1]
    tag = f"backlog{size}"
    texts = _texts(tag, count, size)
    asyncio.run(preload(sender, bytes.fromhex(field.node_id("command-post")), texts))
    before = journal_count(post)
    started = time.time()
    field.start_healthy(sender.slug)
    _await_arrivals(post, before, count, 600, f"{tag} arrivals")
    arrived = _arrivals(post, tag)
    # The journal stamps a burst with one time: a backlog that arrived in one burst has no spread,
    # and is timed from the sender's start instead (a lower bound: it includes the process start).
    span = arrived[-1] - arrived[0] if arrived[-1] > arrived[0] else arrived[-1] - started
    return {"bundles_per_s": (count - 1) / span, "mb_per_s": (count - 1) * size / span / MB}


def _flash_behind_backlog(field: RunningField, count: int) -> dict[str, float]:
    """A FLASH message POSTed to the sender once :data:`FLASH_AFTER` bundles of a ``count`` backlog
    of 100 B have arrived: from just before the POST to the command post application's
    ``received`` stamp, and how many of the backlog arrived after it."""
    post, sender = field.nodes[0], field.nodes[-1]
    to = f"node:{field.node_id('command-post')}"
    texts = _texts("flashbacklog", count, 100)
    asyncio.run(preload(sender, bytes.fromhex(field.node_id("command-post")), texts))
    before = journal_count(post)
    field.start_healthy(sender.slug)
    _await_arrivals(post, before, FLASH_AFTER, 120, "backlog before the FLASH probe")
    alarm = f"flashprobe-{os.urandom(6).hex()}"
    headers = {"Authorization": f"Bearer {field.token}"}
    with httpx.Client(base_url=sender.api, headers=headers) as client:
        sent = time.time()
        response = client.post("/api/v1/messages", json={"to": to, "text": alarm, "priority": "FLASH"})
        response.raise_for_status()
    _await_arrivals(post, before, count + 1, 600, "backlog and FLASH probe arrivals")
    received = next(stamp for _, _, text, stamp in journal_messages(post) if text == alarm)
    behind = sum(stamp > received for stamp in _arrivals(post, "flashbacklog"))
    return {"flash_ms": (received - sent) * 1000, "backlog_after_flash": behind}


class _Arrivals:
    """The command post's live stream (``/api/v1/stream``): each journal message as it is written,
    with the ``received`` stamp the command post application put on it (no polling of the journal)."""

    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket

    def received(self, text: str, timeout: float = 30.0) -> float:
        """The ``received`` stamp of the message ``text`` (the next one the stream shows)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = json.loads(self._socket.recv(timeout=max(0.0, deadline - time.monotonic())))
            except TimeoutError:
                raise TimeoutError(
                    f"latency probe {text[:16]} did not arrive within {timeout:.0f} s"
                ) from None
            if event.get("type") == "message" and event["item"]["text"] == text:
                return float(event["item"]["received"])


def _ws(api: str) -> str:
    return "ws" + api.removeprefix("http")


def _send_line(sock: socket.socket, line: bytes) -> None:
    """One line to the ingest Unix socket (a function of its own: ``bench._trace_latency`` times it)."""
    sock.sendall(line)


def _latency(field: RunningField, samples: int, door: str) -> list[float]:
    """One message at a time, from just before it is handed to the sender's relay to the command post
    application's ``received`` stamp. ``door``: ``app`` writes a line to the node's ingest Unix
    socket (``<data_dir>/ingest.sock``, kept open, as an application on the sender's machine
    does), ``ws`` a frame to the ingest WebSocket (kept open), ``post`` the operators' single
    ``POST /api/v1/messages``."""
    post, sender = field.nodes[0], field.nodes[-1]
    to = f"node:{field.node_id('command-post')}"
    latencies = []
    texts = _texts(f"latency-{door}", samples, 100)
    stream = f"{_ws(post.api)}/api/v1/stream?token={field.token}"
    with connect(stream, compression=None, proxy=None) as socket_:
        arrivals = _Arrivals(socket_)
        if door == "app":
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(str(sender.directory / SOCKET_FILE))
                reader = sock.makefile("rb")
                sock.sendall(json.dumps({"token": field.token}).encode() + b"\n")
                if "ready" not in json.loads(reader.readline() or b"{}"):
                    raise RuntimeError("the ingest socket refused the bench's token")
                for index, text in enumerate(texts):
                    line = json.dumps({"ref": index, "messages": [{"to": to, "text": text}]}).encode() + b"\n"
                    sent = time.time()
                    _send_line(sock, line)
                    latencies.append((arrivals.received(text) - sent) * 1000)
                    _check_answer(json.loads(reader.readline()))
                    time.sleep(LATENCY_GAP)
        elif door == "ws":
            with connect(
                f"{_ws(sender.api)}/api/v1/ingest?token={field.token}", compression=None, proxy=None
            ) as ingest:
                for index, text in enumerate(texts):
                    frame = json.dumps({"ref": index, "messages": [{"to": to, "text": text}]})
                    sent = time.time()
                    ingest.send(frame)
                    latencies.append((arrivals.received(text) - sent) * 1000)
                    _check_answer(json.loads(ingest.recv(timeout=30)))
                    time.sleep(LATENCY_GAP)
        else:
            headers = {"Authorization": f"Bearer {field.token}"}
            with httpx.Client(base_url=sender.api, headers=headers) as client:
                for text in texts:
                    sent = time.time()
                    client.post("/api/v1/messages", json={"to": to, "text": text}).raise_for_status()
                    latencies.append((arrivals.received(text) - sent) * 1000)
                    time.sleep(LATENCY_GAP)
    return latencies


def _check_answer(answer: dict[str, Any]) -> None:
    if "bundle_id" not in answer.get("results", [{}])[0]:
        raise RuntimeError(f"ingest refused a latency probe: {answer}")


def _api(field: RunningField, count: int) -> dict[str, float]:
    post, sender = field.nodes[0], field.nodes[-1]
    texts = _texts("api", count, 100)
    before = journal_count(post)
    started = time.time()
    asyncio.run(send_many(sender, field.token, f"node:{field.node_id('command-post')}", texts))
    _await_arrivals(post, before, count, 300, "api arrivals")
    return {"msgs_per_s": count / (_arrivals(post, "api")[-1] - started)}


def _api_batch(field: RunningField, count: int) -> dict[str, float]:
    post, sender = field.nodes[0], field.nodes[-1]
    to = f"node:{field.node_id('command-post')}"
    texts = _texts("batch", count, 100)
    headers = {"Authorization": f"Bearer {field.token}"}
    before = journal_count(post)
    started = time.time()
    with httpx.Client(base_url=sender.api, headers=headers, timeout=60.0) as client:
        for start in range(0, count, API_BATCH_SIZE):
            messages = [{"to": to, "text": text} for text in texts[start : start + API_BATCH_SIZE]]
            response = client.post("/api/v1/messages/batch", json={"messages": messages})
            response.raise_for_status()
            if response.json()["accepted"] != len(messages):
                raise RuntimeError(f"batch refused in part: {response.text[:300]}")
    ingested = time.time()
    _await_arrivals(post, before, count, 300, "api batch arrivals")
    return {
        "ingest_msgs_per_s": count / (ingested - started),
        "msgs_per_s": count / (_arrivals(post, "batch")[-1] - started),
    }


def _api_socket(field: RunningField, count: int) -> dict[str, float]:
    """``count`` messages in frames of :data:`API_BATCH_SIZE` over one open ingest socket, keeping
    up to ``MAX_IN_FLIGHT`` frames unanswered (the socket works on that many at once)."""
    post, sender = field.nodes[0], field.nodes[-1]
    to = f"node:{field.node_id('command-post')}"
    texts = _texts("socket", count, 100)
    frames = [
        json.dumps(
            {"ref": start, "messages": [{"to": to, "text": t} for t in texts[start : start + API_BATCH_SIZE]]}
        )
        for start in range(0, count, API_BATCH_SIZE)
    ]
    url = f"{_ws(sender.api)}/api/v1/ingest?token={field.token}"
    before = journal_count(post)
    with connect(url, compression=None, proxy=None, max_size=None) as socket:
        started = time.time()
        sent = answered = 0
        while answered < len(frames):
            while sent < len(frames) and sent - answered < MAX_IN_FLIGHT:
                socket.send(frames[sent])
                sent += 1
            answer = json.loads(socket.recv(timeout=60))
            results = answer.get("results", [])
            size = min(API_BATCH_SIZE, count - answer.get("ref", 0))
            if len(results) != size or not all("bundle_id" in r for r in results):
                raise RuntimeError(f"ingest refused in part: {str(answer)[:300]}")
            answered += 1
        ingested = time.time()
    _await_arrivals(post, before, count, 300, "api socket arrivals")
    return {
        "ingest_msgs_per_s": count / (ingested - started),
        "msgs_per_s": count / (_arrivals(post, "socket")[-1] - started),
    }


def _quiesce(field: RunningField, timeout: float = 60.0) -> None:
    """Wait until the field is idle: every delivery acknowledged and the stores' contents steady
    (custody signals and end-to-end receipts of the last phase have crossed), so one phase's
    aftermath is not measured as the next one's."""
    deadline = time.monotonic() + timeout
    last: tuple[int, ...] = ()
    while time.monotonic() < deadline:
        now = tuple(stored_bundles(node) + inbox_pending(node) for node in field.nodes)
        if now == last and not any(inbox_pending(node) for node in field.nodes):
            return
        last = now
        time.sleep(1.0)
    raise TimeoutError(f"the field did not settle within {timeout:.0f} s: {last}")


def _mesh112_round(root: Path, hops: int) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """One fresh field; phases in the order the LXMF side runs them: latency on a warm, idle path
    (through the app door, the WebSocket, then the single POST), then the API, then the two backlogs
    (the sender stopped, loaded, started again). ``MESH112_BENCH_ONLY=latency`` stops after the latencies."""
    chain = CHAINS[hops]
    figures: dict[str, Any] = {"durable": True}
    latencies: dict[str, list[float]] = {}
    with running_field(root, chain) as field:
        _latency(field, 1, "app")  # warm-up: links up, routes learnt
        _latency(field, 1, "post")
        for door in ("app", "ws", "post"):
            _quiesce(field)
            latencies[f"latency_{door}"] = _latency(field, LATENCY_SAMPLES, door)
        checks = sum(verify_loopback_sockets(process.pid) for process in field.processes.values())
        figures["loopback_only"] = checks > 0
        if ONLY_LATENCY:
            return figures, latencies
        _quiesce(field)
        api = _api(field, API_MESSAGES)
        _quiesce(field)
        batch = _api_batch(field, API_BATCH_MESSAGES)
        _quiesce(field)
        ingest_socket = _api_socket(field, API_SOCKET_MESSAGES)
        sizes = {}
        for size in BACKLOG:
            _quiesce(field)
            field.stop(chain[-1])
            sizes[size] = _backlog(field, size, BACKLOG[size])
        _quiesce(field)
        field.stop(chain[-1])
        flash = _flash_behind_backlog(field, FLASH_BACKLOG)
    figures["backlog_100B_bundles_per_s"] = sizes[100]["bundles_per_s"]
    figures["backlog_100B_mb_per_s"] = sizes[100]["mb_per_s"]
    figures["backlog_10kB_bundles_per_s"] = sizes[10_000]["bundles_per_s"]
    figures["backlog_10kB_mb_per_s"] = sizes[10_000]["mb_per_s"]
    figures["backlog_flash_ms"] = flash["flash_ms"]
    figures["backlog_after_flash"] = flash["backlog_after_flash"]
    figures["api_msgs_per_s"] = api["msgs_per_s"]
    figures["api_batch_ingest_msgs_per_s"] = batch["ingest_msgs_per_s"]
    figures["api_batch_msgs_per_s"] = batch["msgs_per_s"]
    figures["api_socket_ingest_msgs_per_s"] = ingest_socket["ingest_msgs_per_s"]
    figures["api_socket_msgs_per_s"] = ingest_socket["msgs_per_s"]
    return figures, latencies


def _is_figure(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _summarise(rounds: Sequence[dict[str, Any]], latencies: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """Medians (and each run) of the numeric figures; the first round's flags and notes as they are;
    ``<name>_ms_p50`` and ``_p99`` over every round's samples of each latency."""
    summary: dict[str, Any] = {k: v for k, v in rounds[0].items() if not _is_figure(v)}
    for key in rounds[0]:
        values = [r[key] for r in rounds if _is_figure(r.get(key))]
        if values:
            summary[f"{key}_median"] = round(statistics.median(values), 3)
            summary[f"{key}_runs"] = [round(v, 3) for v in values]
    for name, samples in latencies.items():
        if samples:
            ordered = sorted(samples)
            summary[f"{name}_ms_p50"] = round(statistics.median(ordered), 2)
            summary[f"{name}_ms_p99"] = round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2)
            summary[f"{name}_samples"] = len(ordered)
    return summary


def _mesh112(hops: int) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    latencies: dict[str, list[float]] = {}
    for _ in range(ROUNDS):
        with tempfile.TemporaryDirectory() as directory:
            figures, samples = _mesh112_round(Path(directory), hops)
        rounds.append(figures)
        for name, values in samples.items():
            latencies.setdefault(name, []).extend(values)
    return _summarise(rounds, latencies)


def _lxmf(hops: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """LXMF at 100 B (API, bulk, latency) and at 10,000 B (bulk: sent as RNS resources); with
    ``MESH112_BENCH_ONLY=latency`` the latency and a token bulk of one message only."""
    small: list[dict[str, Any]] = []
    large: list[dict[str, Any]] = []
    latencies: list[float] = []
    for _ in range(ROUNDS):
        with tempfile.TemporaryDirectory() as directory:
            result = measure_lxmf(
                Path(directory) / "100B",
                hops=hops,
                count=1 if ONLY_LATENCY else LXMF_BULK_MESSAGES,
                api_count=1 if ONLY_LATENCY else LXMF_API_MESSAGES,
                latency_samples=LATENCY_SAMPLES,
            )
            latencies += result.pop("latency_ms_samples")
            small.append(result)
            if ONLY_LATENCY:
                continue
            result = measure_lxmf(
                Path(directory) / "10kB",
                hops=hops,
                count=BACKLOG[10_000],
                api_count=20,
                latency_samples=5,
                body_bytes=10_000,
            )
            result.pop("latency_ms_samples")
            large.append(result)
    return _summarise(small, {"latency": latencies}), _summarise(large, {}) if large else {}


def _ratio(ours: float, theirs: float) -> float:
    return round(ours / theirs, 2)


def run() -> dict[str, Any]:
    results: dict[str, Any] = {"rounds": ROUNDS}
    for hops in CHAINS:
        mesh = _mesh112(hops)
        lxmf, lxmf_large = _lxmf(hops)
        ratios = {  # the app door is what LXMF's figure compares with: an application's send
            "ratio_latency_app_p50_vs_lxmf": _ratio(mesh["latency_app_ms_p50"], lxmf["latency_ms_p50"]),
            "ratio_latency_app_p99_vs_lxmf": _ratio(mesh["latency_app_ms_p99"], lxmf["latency_ms_p99"]),
        }
        if not ONLY_LATENCY:
            ratios |= {
                "ratio_100B_throughput_vs_lxmf_bulk": _ratio(
                    mesh["backlog_100B_bundles_per_s_median"], lxmf["bulk_msgs_per_s_median"]
                ),
                "ratio_10kB_throughput_vs_lxmf_bulk": _ratio(
                    mesh["backlog_10kB_bundles_per_s_median"], lxmf_large["bulk_msgs_per_s_median"]
                ),
                "ratio_api_throughput_vs_lxmf_api": _ratio(
                    mesh["api_msgs_per_s_median"], lxmf["api_msgs_per_s_median"]
                ),
                "ratio_api_batch_ingest_vs_lxmf_api": _ratio(
                    mesh["api_batch_ingest_msgs_per_s_median"], lxmf["api_msgs_per_s_median"]
                ),
                "ratio_api_socket_ingest_vs_lxmf_api": _ratio(
                    mesh["api_socket_ingest_msgs_per_s_median"], lxmf["api_msgs_per_s_median"]
                ),
            }
        results[f"{hops}_hop"] = {"mesh112": mesh, "lxmf_100B": lxmf, "lxmf_10kB": lxmf_large, **ratios}
    results["note"] = __doc__.split("\n\n", 1)[1].strip()
    return results
