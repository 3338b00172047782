"""The command post's alarm app on a real node and store: records, Acks sent, restart, hostile bundles."""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

from engine_net import Deployment

from ng112.command_post import STATE_FILE, AlarmRecords, command_post_app
from ng112.kinds import NG112_ACK, NG112_ALARM
from ng112.record import AckCode, AlarmRecord
from relay.bundle import BundleId, Destination, Priority, to_epoch
from relay.engine import Delivery
from relay.node import Node

BUILDINGS = """
[[building]]
key_id = "0a1b2c3d"
sender = "sip:fire-panel-17@building.example.org"
name = "Example Office Tower"
address = { country = "AT", A1 = "Wien", RD = "Stephansplatz", HNO = "1", PC = "1010" }
lat = 48.20849
lon = 16.37208
"""


def _delivery(gateway: bytes, post: bytes, payload: bytes, seq: int, kind: int = NG112_ALARM) -> Delivery:
    bundle_id = BundleId(gateway, int(to_epoch(time.time())), seq)
    return Delivery(
        bundle_id, gateway, Destination.to_node(post), kind, Priority.FLASH, bundle_id.created, payload
    )


async def _acks_queued(node: Node) -> int:
    """Ack bundles held for sending (sealed: only the gateway can read them)."""
    return sum(s.bundle.kind == NG112_ACK for s in await node.engine.store.load_all())


async def _open(net: Deployment, tmp_path: Path) -> tuple[Node, AlarmRecords]:
    node = Node(await net.open("post", tmp_path, to_epoch(time.time())), [])
    return node, command_post_app(node)


async def test_alarm_record_receipt_operator_ack_and_restart(tmp_path: Path) -> None:
    net = Deployment()
    net.enrol("post", frozenset({"dispatcher"}))
    _, gateway_cert = net.enrol("gateway", frozenset({"building"}))
    (tmp_path / "buildings.toml").write_text(BUILDINGS)
    alarm = AlarmRecord("Alert", "Exercise", 0x0A1B2C3D, 7, int(time.time()) - 30, zone="3.12", floor=3)
    node, app = await _open(net, tmp_path)
    try:
        delivery = _delivery(gateway_cert.node_id, node.node_id, alarm.encode(), 1)
        (update,) = await app.handle(delivery)
        assert update.record_id == "0a1b2c3d-7"
        body = update.body
        assert body["summary"].startswith("[EXERCISE] Alert: ") and "Example Office Tower" in body["summary"]
        assert not body["actual"] and body["status"] == "Exercise" and 29 <= body["age_on_arrival_s"] < 60
        assert body["location"]["source"] == "enrolment" and "<status>Exercise</status>" in body["cap_xml"]
        assert await _acks_queued(node) == 1
        receipt = app.book.alarms[(0x0A1B2C3D, 7)].receipt
        assert receipt is not None and receipt.reference == (0x0A1B2C3D, 7)
        assert receipt.code == AckCode.RECEIVED
        await app.acknowledge("0a1b2c3d-7", {"operator": "Jane", "action": "dispatched", "at": time.time()})
        assert await _acks_queued(node) == 2
    finally:
        await node.stop()
    node, app = await _open(net, tmp_path)  # restart: the book comes back from the state file
    try:
        view = app.book.alarms[(0x0A1B2C3D, 7)]
        assert view.operator_ack is not None and view.operator_ack.code == AckCode.DISPATCHED
        assert view.operator_ack.text == "Jane"
        (update,) = await app.handle(_delivery(gateway_cert.node_id, node.node_id, alarm.encode(), 1))
        assert update.body["operator_ack"] and await _acks_queued(node) == 2  # no new receipt
    finally:
        await node.stop()


async def test_hostile_alarm_bundles_are_refused_without_touching_the_book(tmp_path: Path) -> None:
    net = Deployment()
    net.enrol("post")
    _, gateway_cert = net.enrol("gateway")
    good = AlarmRecord("Alert", "Actual", 0x11223344, 1, int(time.time()), text="fire").encode()
    node, app = await _open(net, tmp_path)
    try:
        await app.handle(_delivery(gateway_cert.node_id, node.node_id, good, 1))
        before = sqlite3.connect(tmp_path / STATE_FILE).execute("SELECT raw FROM record").fetchall()
        ack = AlarmRecord("Ack", "Actual", 1, 2, 3, reference=(0x11223344, 1)).encode()
        rng = random.Random(7)
        hostile = [b"", b"\xff" * 300, ack, *(rng.randbytes(rng.randrange(1, 260)) for _ in range(200))]
        for _ in range(100):  # single-byte mutations of a valid record
            mutated = bytearray(good)
            mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
            hostile.append(bytes(mutated))
        refused = 0
        for seq, payload in enumerate(hostile, 2):
            updates = await app.handle(_delivery(gateway_cert.node_id, node.node_id, payload, seq))
            refused += not updates
        assert refused >= 3 + 200  # every non-record refused; mutations may still decode as records
        assert (0x11223344, 1) in app.book.alarms
        after = sqlite3.connect(tmp_path / STATE_FILE).execute("SELECT raw FROM record").fetchall()
        assert after[: len(before)] == before
    finally:
        await node.stop()
