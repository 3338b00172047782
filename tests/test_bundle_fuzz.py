"""Fuzz the bundle decoders: random and mutated bytes decode or raise BundleDecodeError, nothing else.

A short pass runs by default; ``make fuzz`` (``-m long -k fuzz``) runs more than 100k inputs.
Hostile input fed through decode-then-store never changes what the store already holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.bundle import (
    Bundle,
    BundleDecodeError,
    CompactContext,
    Destination,
    Priority,
    decode_compact,
    decode_full,
    encode_compact,
    encode_full,
)
from relay.store import Store

NODES = [bytes([n]) * 16 for n in range(1, 5)]
CONTEXT = CompactContext.from_names(NODES, ["medic", "incident-7"])
SEEDS = [
    Bundle(NODES[0], Destination.to_role("medic"), 1000, 1, 3600, Priority.FLASH, 3, b"sos at gate 4"),
    Bundle(NODES[1], Destination.to_node(NODES[2]), 2000, 2, 600, Priority.ROUTINE, 40, bytes(range(100))),
    Bundle(NODES[2], Destination.to_group("incident-7"), 3000, 3, 86_400, Priority.BULK, 41, b""),
    Bundle(NODES[3], Destination.everyone(), 4000, 65535, 60, Priority.IMMEDIATE, 7, b"\xff" * 200),
]
SHORT = settings(max_examples=2000, deadline=None)
LONG = settings(max_examples=50_000, deadline=None)


@st.composite
def mutated(draw: st.DrawFn, encodings: list[bytes]) -> bytes:
    """A valid encoding with a few bytes flipped, inserted, deleted, truncated or extended."""
    data = bytearray(draw(st.sampled_from(encodings)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "extend"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[position] ^= draw(st.integers(1, 255))
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete" and data:
            del data[position : position + draw(st.integers(1, 8))]
        elif action == "truncate":
            del data[position:]
        elif action == "extend":
            data += draw(st.binary(min_size=1, max_size=64))
    return bytes(data)


FULL_INPUTS = st.one_of(st.binary(max_size=512), mutated([encode_full(b) for b in SEEDS]))
COMPACT_INPUTS = st.one_of(st.binary(max_size=300), mutated([encode_compact(b) for b in SEEDS]))


def check_full(data: bytes) -> None:
    try:
        bundle = decode_full(data)
    except BundleDecodeError:
        return
    assert decode_full(encode_full(bundle)) == bundle


def check_compact(data: bytes) -> None:
    try:
        bundle = decode_compact(data, CONTEXT)
    except BundleDecodeError:
        return
    assert len(data) <= 255
    assert decode_compact(encode_compact(bundle), CONTEXT) == bundle


@SHORT
@given(FULL_INPUTS)
def test_fuzz_decode_full(data: bytes) -> None:
    check_full(data)


@SHORT
@given(COMPACT_INPUTS)
def test_fuzz_decode_compact(data: bytes) -> None:
    check_compact(data)


@pytest.mark.long
@pytest.mark.timeout(3600)
@LONG
@given(FULL_INPUTS)
def test_fuzz_decode_full_long(data: bytes) -> None:
    check_full(data)


@pytest.mark.long
@pytest.mark.timeout(3600)
@LONG
@given(st.binary(max_size=4096))
def test_fuzz_decode_full_random_long(data: bytes) -> None:
    check_full(data)


@pytest.mark.long
@pytest.mark.timeout(3600)
@LONG
@given(COMPACT_INPUTS)
def test_fuzz_decode_compact_long(data: bytes) -> None:
    check_compact(data)


# -- hostile input through decode-then-store --------------------------------------------------


@pytest.fixture(scope="module")
def seeded_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[asyncio.Runner, Store]]:
    runner = asyncio.Runner()
    store = runner.run(Store.open(Path(tmp_path_factory.mktemp("hostile")) / "store.db"))
    runner.run(store.put_many(SEEDS, now=500))
    yield runner, store
    runner.run(store.close())
    runner.close()


def receive(runner: asyncio.Runner, store: Store, data: bytes, compact: bool) -> bool:
    """What a node does with a frame: decode, then store. False when refused or a duplicate."""
    try:
        bundle = decode_compact(data, CONTEXT) if compact else decode_full(data)
    except BundleDecodeError:
        return False
    return runner.run(store.put(bundle, now=500))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(FULL_INPUTS.map(lambda d: (d, False)), COMPACT_INPUTS.map(lambda d: (d, True))))
def test_fuzz_hostile_input_never_changes_stored_bundles(
    seeded_store: tuple[asyncio.Runner, Store], frame: tuple[bytes, bool]
) -> None:
    runner, store = seeded_store
    receive(runner, store, *frame)
    for seed in SEEDS:  # a forged copy with a known id never replaces the held one
        assert runner.run(store.get(seed.id)) == seed


def test_hostile_payload_with_a_known_id_is_a_duplicate(seeded_store: tuple[asyncio.Runner, Store]) -> None:
    runner, store = seeded_store
    forged = encode_full(SEEDS[0]).replace(b"sos at gate 4", b"all clear !!!")
    assert decode_full(forged).id == SEEDS[0].id
    assert receive(runner, store, forged, compact=False) is False
    assert runner.run(store.get(SEEDS[0].id)) == SEEDS[0]
