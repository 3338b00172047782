"""Which seal the engine puts on a bundle to a node, and that bundles sealed before the tagged
compact seal still open: real engines, real SQLite stores, real crypto, frames pumped in the test."""

from __future__ import annotations

import asyncio
from pathlib import Path

from engine_net import IP, Deployment, EnginePump

from crypto.seal import COMPACT_OVERHEAD, COMPACT_TAGGED_OVERHEAD, STANDARD_OVERHEAD_SIGNED
from relay.bundle import Bundle, BundleId, Destination, Kind, Priority
from relay.engine import COMPACT_SEAL_MAX, Delivery, NodeEngine

T0 = 1000.0


async def _stored(engine: NodeEngine, bundle_id: BundleId) -> bytes:
    (payload,) = [s.bundle.payload for s in await engine.store.load_all() if s.bundle.id == bundle_id]
    return payload


async def _deliveries(engine: NodeEngine, count: int) -> list[Delivery]:
    got: list[Delivery] = []
    while len(got) < count:
        got += await asyncio.wait_for(engine.receive(), 5.0)
    return got


async def test_the_engine_seals_unsigned_bundles_compactly_at_any_size(tmp_path: Path) -> None:
    net = Deployment()
    net.enrol("a")
    net.enrol("b")
    a, b = [await net.open(n, tmp_path, T0) for n in ("a", "b")]
    to_b = Destination.to_node(b.node_id)
    cases = {  # plaintext, priority: seal overhead and first byte (None: a salt, no mode byte)
        (b"s" * COMPACT_SEAL_MAX, Priority.PRIORITY): (COMPACT_OVERHEAD, None),
        (b"m" * (COMPACT_SEAL_MAX + 1), Priority.PRIORITY): (COMPACT_TAGGED_OVERHEAD, 0x13),
        (b"k" * 10_000, Priority.BULK): (COMPACT_TAGGED_OVERHEAD, 0x13),
        (b"f" * 1000, Priority.FLASH): (STANDARD_OVERHEAD_SIGNED, 0x12),  # provable: signed HPKE
        (b"i" * 1000, Priority.IMMEDIATE): (STANDARD_OVERHEAD_SIGNED, 0x12),
    }
    sent = {}
    for (plaintext, priority), (overhead, mode) in cases.items():
        bundle_id = await a.send(to_b, plaintext, kind=Kind.TEXT, priority=priority, lifetime=600, now=T0)
        payload = await _stored(a, bundle_id)
        assert len(payload) == len(plaintext) + overhead
        if mode is not None:
            assert payload[0] == mode
        sent[bundle_id] = plaintext
    pump = EnginePump()
    await pump.connect(IP, a, b, T0)
    await pump.run(T0, 20)
    got = await _deliveries(b, len(sent))
    assert {d.bundle_id: d.payload for d in got} == sent
    for engine in (a, b):
        await engine.close()


class _BeforeTaggedSeal(NodeEngine):
    """A sender of the previous release: the standard MAC seal (HPKE) on unsigned bundles above
    ``COMPACT_SEAL_MAX``, as its ``_seal_payload`` did."""

    def _seal_payload(self, header: Bundle, plaintext: bytes) -> bytes:
        if len(plaintext) <= COMPACT_SEAL_MAX or header.priority <= Priority.IMMEDIATE:
            return super()._seal_payload(header, plaintext)
        assert header.destination.node is not None
        recipient = self.trust.check(header.destination.node, header.created)
        return self._seal.seal_standard(recipient, header.seal_inputs()[1], plaintext, sign=False)


async def test_bundles_sealed_before_the_change_still_open(tmp_path: Path) -> None:
    net = Deployment()
    old_identity, old_cert = net.enrol("old")
    net.enrol("b")
    old = await _BeforeTaggedSeal.open(old_identity, old_cert, net.trust(), tmp_path / "old.sqlite", now=T0)
    b = await net.open("b", tmp_path, T0)
    plaintext = b"snapshot " * 1000
    bundle_id = await old.send(
        Destination.to_node(b.node_id),
        plaintext,
        kind=Kind.TEXT,
        priority=Priority.BULK,
        lifetime=600,
        now=T0,
    )
    assert (await _stored(old, bundle_id))[0] == 0x11  # the standard MAC seal's mode byte
    pump = EnginePump()
    await pump.connect(IP, old, b, T0)
    await pump.run(T0, 20)
    (delivery,) = await _deliveries(b, 1)
    assert (delivery.bundle_id, delivery.payload) == (bundle_id, plaintext)
    for engine in (old, b):
        await engine.close()
