"""Fuzzing the NG112 parsers: SIP, multipart, CAP, PIDF-LO, compact records, follow-ups and the whole
decision.

Inputs are corpus files mutated (bit flips, truncation, splices, inserted delimiters) and random
bytes. The only exceptions allowed are the specific NG112 error types; every input must finish
within the hypothesis deadline (no hang). The default run is a short pass; ``make fuzz`` runs the
``long`` variant with 100k mutated inputs per parser.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ng112.cap import build_cap_xml, parse_cap
from ng112.errors import Ng112Error
from ng112.followup import FollowUp, check_followup, decode_followup, encode_followup
from ng112.multipart import parse_multipart
from ng112.pidfl import parse_pidf
from ng112.record import decode_record
from ng112.request import IngressPolicy, evaluate
from ng112.sip import SipRequest, StreamFramer, parse_message

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "ng112"
SEEDS = {
    folder: [p.read_bytes() for p in sorted((CORPUS / folder).iterdir())]
    for folder in ("sip", "cap", "pidf-lo", "multipart")
}


def _followup_seeds() -> list[bytes]:
    """Follow-ups of the corpus CAPs the gateway takes, as they travel (compressed)."""
    seeds = []
    for cap in SEEDS["cap"]:
        with contextlib.suppress(Ng112Error):
            alert, _ = parse_cap(cap)
            seeds.append(encode_followup(FollowUp(1, 2, 3, build_cap_xml(alert), None, (), "text")))
    return seeds


SEEDS["followup"] = _followup_seeds()
TOKENS = [
    b"\r\n",
    b"\n",
    b"--",
    b"<",
    b">",
    b"]]>",
    b"<!DOCTYPE x [<!ENTITY a 'b'>]>",
    b"&a;",
    b":",
    b";",
    b"\x00",
]
TOKENS += [
    b"Content-Length: 99999\r\n",
    b"--ng112-boundary\r\n",
    b"<gml:pos>1e999 nan</gml:pos>",
    b"\xff\xfe",
]


def _sip(data: bytes) -> None:
    message = parse_message(data)
    if isinstance(message, SipRequest):
        evaluate(message, IngressPolicy(location_required=True))
    StreamFramer().feed(data)


def _followup(data: bytes) -> None:
    check_followup(decode_followup(data))


def _multipart(data: bytes) -> None:
    parse_multipart(data, "ng112-boundary")
    parse_multipart(data, "unique-boundary-1")


TARGETS: dict[str, tuple[Callable[[bytes], object], str]] = {
    "sip": (_sip, "sip"),
    "multipart": (_multipart, "multipart"),
    "cap": (parse_cap, "cap"),
    "pidf": (parse_pidf, "pidf-lo"),
    "record": (decode_record, "cap"),
    "followup": (_followup, "followup"),
}


def mutate(seed: bytes, rng: random.Random, rounds: int) -> bytes:
    data = bytearray(seed)
    for _ in range(rounds):
        op = rng.randrange(5)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(pos, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            del data[pos : pos + rng.randrange(1, 64)]
        elif op == 2:
            data[pos:pos] = rng.choice(TOKENS)
        elif op == 3 and data:
            start = rng.randrange(len(data))
            data[pos:pos] = data[start : start + rng.randrange(1, 128)]
        else:
            data = data[:pos]
    return bytes(data)


def _check(target: Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(Ng112Error):
        target(data)


@pytest.mark.parametrize("name", sorted(TARGETS))
@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed_index=st.integers(0, 100), rng_seed=st.integers(0, 2**32), rounds=st.integers(0, 12), raw=st.binary()
)
def test_fuzz_parsers_short(name: str, seed_index: int, rng_seed: int, rounds: int, raw: bytes) -> None:
    target, folder = TARGETS[name]
    seeds = SEEDS[folder]
    _check(target, raw)
    _check(target, mutate(seeds[seed_index % len(seeds)], random.Random(rng_seed), rounds))


@pytest.mark.long
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_parsers_long(name: str) -> None:
    target, folder = TARGETS[name]
    seeds = SEEDS[folder]
    rng = random.Random(f"ng112-{name}")
    slowest = 0.0
    for i in range(100_000):
        data = mutate(seeds[i % len(seeds)], rng, rng.randrange(1, 16))
        started = time.perf_counter()
        _check(target, data)
        slowest = max(slowest, time.perf_counter() - started)
    assert slowest < 2.0, f"slowest input took {slowest:.2f} s"
