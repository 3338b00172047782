"""NG112 benchmarks: gateway throughput, SIP-to-command-post latency, parse times, bytes on air.

- ``answers_per_s``: distinct fire alarms sent over UDP from one address by an asyncio client with
  16 in flight to a ``mesh112 ng112 gateway`` process with its SQLite store; counted when the final
  answer came back: 200 (alarm durable) or 500 + Retry-After (``refused_by_budget_*``: the gateway
  budgets unauthenticated panels per source address and overall). The SIP->200 latency is given
  one at a time and with 16 in flight.
- ``latency_ip_ms``: SIP MESSAGE sent -> 200 (durable) -> compact record decoded -> AlarmBook at
  the command post -> canonical CAP 1.2 built: the in-process path without the relay's IP link.
- ``sip_to_command_post_lora_*_ms``: measured through real processes: SIP MESSAGE to the gateway
  node -> alarm bundle over the emulated LoRa radio (LongFast, real time) -> alarm record at the
  command post's API (``bench/ng112_lora.py``).
- ``parse_us``: median time to evaluate each corpus SIP message / parse each CAP and PIDF-LO file.
- ``sizes``: compact record vs the CAP+PIDF-LO XML it came from, raw and zlib-9.
- ``on_air``: per corpus alarm (every CAP file, every SIP file), the first frame and the follow-up
  on LongFast: Meshtastic payload bytes (frame type, compact header, 32 B crypto budget, record or
  follow-up, 12 B hop tag; the follow-up in fragments of at most 207 bytes with 4 B fragment
  headers), PHY bytes and airtime by the Semtech formula, and whether the follow-up may cross LoRa
  (at most 8 fragments for a non-FLASH bundle) or waits for an IP path. Custody ACKs, fragment
  status frames and Meshtastic's routing ACKs come on top.
- ``sip_200_to_first_frame_lora_*`` / ``sip_200_to_complete_alarm_lora_*``: measured through real
  processes (``bench/ng112_lora.py``): the gateway's 200 -> first frame at the command post, and ->
  follow-up merged there.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from bench.ng112_lora import measure_lora_latency
from ng112.alarmbook import AlarmBook
from ng112.canonical import record_from_request, record_to_cap
from ng112.cap import build_cap_xml, parse_cap
from ng112.followup import encode_followup, followup_for
from ng112.pidfl import parse_pidf
from ng112.record import COMPACT_HEADER, CRYPTO_BUDGET, FRAME_TYPE, HOP_TAG, LORA_FRAME, decode_record
from ng112.request import IngressPolicy, evaluate
from ng112.sip import SipRequest, SipResponse, parse_message
from relay.core.frames import FRAGMENT_HEADER_LEN
from relay.core.routing import MAX_FRAGMENTS_ON_COSTLY_LINK
from relay.links.lora_phy import MESHTASTIC_HEADER_LEN, PKI_OVERHEAD, frame_airtime_s

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "ng112"
WIRE = (CORPUS / "sip" / "synthetic-sipp-fire-alarm-message.sip").read_bytes()
ALARMS = 400
WINDOW = 16


def _variant(n: int) -> bytes:
    head, body = WIRE.split(b"\r\n\r\n", 1)
    body = body.replace(b"FP17-2026-000123", f"FP17-{n}".encode())
    head = head.replace(b"1-16807@127.0.0.1", f"bench-{n}@127.0.0.1".encode())
    head = head.replace(b"z9hG4bK-16807-1-0", f"z9hG4bK-b{n}".encode())
    head = head.replace(b"fire-panel-17@", f"panel-{n}@".encode())
    head = head.replace(b"Content-Length:  2287", f"Content-Length: {len(body)}".encode())
    return head + b"\r\n\r\n" + body


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[tuple[float, int]]] = {}

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = parse_message(data)
        if isinstance(message, SipResponse) and message.status >= 200:
            future = self.waiting.pop(message.headers.get("call-id") or "", None)
            if future and not future.done():
                future.set_result((time.perf_counter(), message.status))


async def _load(port: int, first: int, count: int, window: int) -> tuple[float, float, int]:
    """Send ``count`` alarms with ``window`` in flight: (final answers per second, median SIP->200
    seconds, how many were refused: the gateway budgets unauthenticated panels per source address
    and overall, so from one address most of a burst is answered 500 + Retry-After)."""
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(_Client, remote_addr=("127.0.0.1", port))
    semaphore = asyncio.Semaphore(window)
    latencies: list[float] = []
    refused = 0

    async def one(n: int) -> None:
        nonlocal refused
        async with semaphore:
            future: asyncio.Future[tuple[float, int]] = loop.create_future()
            client.waiting[f"bench-{n}@127.0.0.1"] = future
            started = time.perf_counter()
            transport.sendto(_variant(n))
            answered, status = await asyncio.wait_for(future, 10)
            if status == 200:
                latencies.append(answered - started)
            else:
                refused += 1

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(first, first + count)))
    elapsed = time.perf_counter() - started
    transport.close()
    return count / elapsed, statistics.median(latencies) if latencies else float("nan"), refused


async def _measure(port: int) -> dict[str, float]:
    rate, loaded, refused = await _load(port, 0, ALARMS, WINDOW)
    await asyncio.sleep(12.0)  # the per-address budget refills
    _, single, _ = await _load(port, ALARMS, 10, 1)
    return {
        "answers_per_s": round(rate, 1),
        "refused_by_budget": refused,
        "sip_to_200_median_ms_loaded": round(loaded * 1000, 2),
        "sip_to_200_median_ms": round(single * 1000, 2),
    }


def _gateway_throughput() -> dict[str, float]:
    script = shutil.which("mesh112", path=str(Path(sys.executable).parent))
    assert script is not None, "mesh112 console script not installed"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as data:
        args = [script, "ng112", "gateway", "--data", data, "--udp-port", str(port), "--tcp-port", "0"]
        process = subprocess.Popen([*args, "--duration", "120"], stdout=subprocess.PIPE, text=True)
        try:
            assert process.stdout is not None and "listening" in process.stdout.readline()
            return asyncio.run(_measure(port))
        finally:
            process.kill()
            process.wait()


def _median_us(fn: Any, data: bytes, repeat: int = 50) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn(data)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1e6, 1)


def _evaluate(data: bytes) -> None:
    message = parse_message(data)
    assert isinstance(message, SipRequest)
    evaluate(message, IngressPolicy(own_uris=(message.uri,)))


def _parse_times() -> dict[str, float]:
    out = {}
    for path in sorted((CORPUS / "sip").iterdir()):
        out[f"sip/{path.name}"] = _median_us(_evaluate, path.read_bytes())
    for folder, fn in (("cap", parse_cap), ("pidf-lo", parse_pidf)):
        times = []
        for path in sorted((CORPUS / folder).iterdir()):
            try:
                times.append(_median_us(fn, path.read_bytes(), 20))
            except Exception:  # invalid corpus files are timed by the fuzz/corpus tests instead
                continue
        out[f"{folder}_median_of_files"] = round(statistics.median(times), 1)
    return out


def _sizes_and_latency() -> dict[str, Any]:
    sizes = {}
    path_ms = []
    on_air = 0
    for path in sorted((CORPUS / "sip").iterdir()):
        message = parse_message(path.read_bytes())
        assert isinstance(message, SipRequest)
        decision = evaluate(message, IngressPolicy(own_uris=(message.uri,)))
        assert decision.request is not None
        xml = message.body
        record = record_from_request(decision.request, 0x0A1B2C3D, time.time()).encode()
        sizes[path.name] = {
            "cap_pidf_xml": len(xml),
            "cap_pidf_zlib9": len(zlib.compress(xml, 9)),
            "record": len(record),
            "bytes_on_air": len(record) + COMPACT_HEADER + CRYPTO_BUDGET,
        }
        on_air = max(on_air, sizes[path.name]["bytes_on_air"])
    for n in range(200):
        started = time.perf_counter()
        message = parse_message(_variant(n))
        assert isinstance(message, SipRequest)
        decision = evaluate(message, IngressPolicy())
        assert decision.request is not None
        wire = record_from_request(decision.request, n, time.time()).encode()
        decoded = decode_record(wire)
        AlarmBook().apply(decoded, time.time())
        build_cap_xml(record_to_cap(decoded, None))
        path_ms.append((time.perf_counter() - started) * 1000)
    return {"sizes": sizes, "max_bytes_on_air": on_air, "processing_median_ms": statistics.median(path_ms)}


PRESET = "LONG_FAST"
LORA_MTU = LORA_FRAME - HOP_TAG  # what the core may put in one frame
BUNDLE_OVERHEAD = FRAME_TYPE + COMPACT_HEADER + CRYPTO_BUDGET


def _frames_on_air(bundle_frame: int) -> dict[str, Any]:
    """Meshtastic payloads (with the hop tag) for a core frame of ``bundle_frame`` bytes."""
    if bundle_frame <= LORA_MTU:
        payloads = [bundle_frame + HOP_TAG]
    else:
        chunk = LORA_MTU - FRAGMENT_HEADER_LEN
        count = -(-bundle_frame // chunk)
        sizes = [chunk] * (count - 1) + [bundle_frame - chunk * (count - 1)]
        payloads = [size + FRAGMENT_HEADER_LEN + HOP_TAG for size in sizes]
    # the Data protobuf: port 256 (3 B), bitfield (2 B), payload tag and length (2-3 B)
    phy = [MESHTASTIC_HEADER_LEN + 3 + 2 + 1 + (1 if p < 128 else 2) + p + PKI_OVERHEAD for p in payloads]
    return {
        "frames": len(payloads),
        "payload_bytes": sum(payloads),
        "phy_bytes": sum(phy),
        "airtime_ms": round(sum(frame_airtime_s(PRESET, p, pki=True) for p in payloads) * 1000, 1),
    }


def _corpus_messages() -> list[tuple[str, SipRequest]]:
    out = []
    for path in sorted((CORPUS / "sip").iterdir()):
        message = parse_message(path.read_bytes())
        assert isinstance(message, SipRequest)
        out.append((f"sip/{path.name}", message))
    for path in sorted((CORPUS / "cap").iterdir()):
        body = path.read_bytes()
        head = (
            "MESSAGE urn:service:sos SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-b\r\n"
            "From: <sip:panel@corpus.example>;tag=b\r\nTo: <urn:service:sos>\r\nCall-ID: b@bench\r\n"
            "CSeq: 1 MESSAGE\r\nContent-Type: application/EmergencyCallData.cap+xml\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        message = parse_message(head.encode() + body)
        assert isinstance(message, SipRequest)
        out.append((f"cap/{path.name}", message))
    return out


def _on_air() -> dict[str, Any]:
    """First frame and follow-up per corpus alarm on LongFast (see the module docstring)."""
    rows: dict[str, Any] = {}
    limit = MAX_FRAGMENTS_ON_COSTLY_LINK * (LORA_MTU - FRAGMENT_HEADER_LEN)
    for name, message in _corpus_messages():
        decision = evaluate(message, IngressPolicy(own_uris=(message.uri,)))
        if decision.request is None:
            rows[name] = {"refused": f"{decision.status} {decision.reason}"}
            continue
        record = record_from_request(decision.request, 0x0A1B2C3D, time.time())
        followup = encode_followup(followup_for(record, decision.request))
        first = len(record.encode()) + BUNDLE_OVERHEAD
        rows[name] = {
            "record_bytes": len(record.encode()),
            "first_frame": _frames_on_air(first),
            "followup_bytes": len(followup),
            "followup": _frames_on_air(len(followup) + BUNDLE_OVERHEAD),
            "followup_path": "LoRa" if len(followup) + BUNDLE_OVERHEAD <= limit else "IP (too big for LoRa)",
        }
    return rows


def run() -> dict[str, Any]:
    throughput = _gateway_throughput()
    sizes = _sizes_and_latency()
    latency_ip = throughput["sip_to_200_median_ms"] + sizes["processing_median_ms"]
    lora = measure_lora_latency(_variant)
    return {
        "answers_per_s": throughput["answers_per_s"],
        f"refused_by_budget_of_{ALARMS}": throughput["refused_by_budget"],
        "sip_to_200_median_ms": throughput["sip_to_200_median_ms"],
        "sip_to_200_median_ms_16_in_flight": throughput["sip_to_200_median_ms_loaded"],
        "latency_ip_ms": round(latency_ip, 2),
        **lora,
        "bytes_on_air_per_alarm": sizes["max_bytes_on_air"],
        "sizes": sizes["sizes"],
        "parse_us": _parse_times(),
        "on_air": _on_air(),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
