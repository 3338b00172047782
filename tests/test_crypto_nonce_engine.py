"""The nonce defect as it happened: a node loses its store and, in the same second, seals another
message under a bundle id it already used. With the salted nonce the two seals share no keystream."""

from __future__ import annotations

from pathlib import Path

from engine_net import Deployment

from crypto.seal import NONCE_SALT_LEN, TAG_LEN
from relay.bundle import Destination, Kind, Priority
from relay.engine import NodeEngine

T0 = 5000.0


async def _send_once(net: Deployment, store: Path, text: bytes, to: bytes) -> tuple[bytes, bytes]:
    identity, certificate = net.members["sender"]
    engine = await NodeEngine.open(identity, certificate, net.trust(), store, now=T0)
    try:
        bundle_id = await engine.send(
            Destination.to_node(to), text, kind=Kind.TEXT, priority=Priority.FLASH, lifetime=600, now=T0
        )
        (stored,) = [s.bundle for s in await engine.store.load_all() if s.bundle.id == bundle_id]
        return bundle_id.key(), stored.payload
    finally:
        await engine.close()


async def test_a_lost_store_and_a_repeated_second_do_not_repeat_a_nonce(tmp_path: Path) -> None:
    net = Deployment()
    net.enrol("sender")
    _, recipient = net.enrol("recipient")
    first_text, second_text = b"alarm: smoke in hall 2", b"alarm: fire in hall 2!"
    first_id, first = await _send_once(net, tmp_path / "store-1.sqlite", first_text, recipient.node_id)
    # The store is gone (a new file), the clock reads the same second: the id comes round again.
    second_id, second = await _send_once(net, tmp_path / "store-2.sqlite", second_text, recipient.node_id)
    assert first_id == second_id
    assert first[:NONCE_SALT_LEN] != second[:NONCE_SALT_LEN]
    body = slice(NONCE_SALT_LEN, -TAG_LEN)
    xor_of_seals = bytes(a ^ b for a, b in zip(first[body], second[body], strict=True))
    xor_of_texts = bytes(a ^ b for a, b in zip(first_text, second_text, strict=True))
    assert xor_of_seals != xor_of_texts  # one nonce would have given the XOR of the two alarms away
