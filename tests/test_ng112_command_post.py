"""The command post's alarm app on a real node and store: records, Acks sent, restart, hostile bundles."""

from __future__ import annotations

import random
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from engine_net import Deployment
from ng112_samples import BREWERY_PIDF, BREWERY_SENDER, brewery_cap, sip_message

from ng112.acks import ack_note, parse_action
from ng112.buildings import derived_key_id
from ng112.canonical import ack_record, record_from_request
from ng112.command_post import STATE_FILE, AlarmRecords, command_post_app
from ng112.followup import encode_followup, followup_for
from ng112.kinds import NG112_ACK, NG112_ALARM, NG112_FOLLOWUP
from ng112.record import AckCode, AlarmRecord, decode_record
from ng112.request import IngressPolicy, evaluate
from ng112.sip import SipRequest, parse_message
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
        bundle_id,
        gateway,
        Destination.to_node(post),
        kind,
        Priority.FLASH,
        bundle_id.created,
        payload,
        bundle_id.key(),
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


def _brewery(sent: datetime) -> tuple[bytes, bytes]:
    """The brewery alarm as the gateway hands it over: (first frame, follow-up)."""
    message = parse_message(sip_message(BREWERY_SENDER, brewery_cap(sent), BREWERY_PIDF, "b1"), datagram=True)
    assert isinstance(message, SipRequest)
    request = evaluate(message, IngressPolicy()).request
    assert request is not None
    record = record_from_request(request, derived_key_id(BREWERY_SENDER), time.time())
    return record.encode(), encode_followup(followup_for(record, request))


async def test_follow_up_completes_the_alarm_from_its_origin_only_and_survives_restart(
    tmp_path: Path,
) -> None:
    net = Deployment()
    net.enrol("post", frozenset({"dispatcher"}))
    _, gateway_cert = net.enrol("gateway", frozenset({"building"}))
    _, other_cert = net.enrol("other", frozenset({"building"}))
    first, followup = _brewery(datetime.now(UTC).replace(microsecond=0))
    key = f"{derived_key_id(BREWERY_SENDER):08x}-{decode_record(first).seq}"
    node, app = await _open(net, tmp_path)
    try:
        gateway, other = gateway_cert.node_id, other_cert.node_id
        (update,) = await app.handle(_delivery(gateway, node.node_id, first, 1))
        body = update.body
        assert update.record_id == key and body["followup"] == "pending" and body["pending_parts"]
        assert body["hazard"] == "gas (ammonia)" and body["event"] == "Ammonia leak"
        assert body["cap"]["language"] == "cs-CZ" and body["cap"]["identifier"] is None
        assert body["headline_cut"] and body["instruction"] is None and body["sent_check"]["state"] == "ok"
        assert body["location"]["uncertainty_m"] >= 25 and "unenrolled building" in body["summary"]
        forged = await app.handle(_delivery(other, node.node_id, followup, 2, NG112_FOLLOWUP))
        assert forged == []  # another node cannot complete this alarm
        (update,) = await app.handle(_delivery(gateway, node.node_id, followup, 3, NG112_FOLLOWUP))
        body = update.body
        assert body["followup"] == "complete" and body["pending_parts"] == [] and not body["headline_cut"]
        assert body["cap"]["identifier"] == "PHD-NH3-2026-0042" and body["cap"]["sender"] == BREWERY_SENDER
        assert "severní brány" in body["instruction"] and body["civic_address"]["A3"] == "Plzeň"
        assert "<identifier>PHD-NH3-2026-0042</identifier>" in body["cap_xml"]
        damaged = bytearray(followup)
        damaged[-3] ^= 0xFF
        assert await app.handle(_delivery(gateway, node.node_id, bytes(damaged), 4, NG112_FOLLOWUP)) == []
        await app.acknowledge(key, {"operator": "Jana", "action": "On scene", "at": time.time()})
    finally:
        await node.stop()
    node, app = await _open(net, tmp_path)
    try:
        view = next(iter(app.book.alarms.values()))
        assert app.followup_of(view) is not None
        assert view.operator_ack is not None and view.operator_ack.code == AckCode.ON_SCENE
    finally:
        await node.stop()


async def test_follow_up_before_its_first_frame_and_a_stale_sent(tmp_path: Path) -> None:
    net = Deployment()
    net.enrol("post", frozenset({"dispatcher"}))
    _, gateway_cert = net.enrol("gateway", frozenset({"building"}))
    first, followup = _brewery(datetime.now(UTC).replace(microsecond=0) - timedelta(days=14, hours=2))
    node, app = await _open(net, tmp_path)
    try:
        gateway = gateway_cert.node_id
        assert await app.handle(_delivery(gateway, node.node_id, followup, 1, NG112_FOLLOWUP)) == []
        (update,) = await app.handle(_delivery(gateway, node.node_id, first, 2))
        check = update.body["sent_check"]
        assert update.body["followup"] == "complete"
        assert check["state"] == "stale" and check["age_s"] > 14 * 86400 and "14 d 2 h" in check["note"]
    finally:
        await node.stop()


def test_acknowledgements_read_whole_in_the_building_language() -> None:
    alarm = AlarmRecord("Alert", "Actual", 7, 1, 1000, language="cs-CZ")
    receipt = ack_record(alarm, AckCode.RECEIVED, "", 1001)
    assert ack_note(receipt, "cs-CZ") == "Operační středisko přijalo váš poplach."
    assert ack_note(receipt, "en-US") == "The command post has received your alarm."
    assert ack_note(receipt, "de-AT") == "The command post has received your alarm."  # no German yet
    code, text = parse_action("En-Route")
    en_route = ack_record(alarm, code, "Jane Doe", 1002)
    assert ack_note(en_route, "cs") == "Záchranné jednotky jsou na cestě k vaší budově. Operátor: Jane Doe."
    long_text = "Approach from the north gate and wait for the shift leader at the compressor hall door " * 3
    code, text = parse_action(long_text)
    message = ack_record(alarm, code, text, 1003)
    note = ack_note(decode_record(message.encode()), "en")
    assert code == AckCode.MESSAGE and message.text_cut and note.endswith(" …")
    assert note.removesuffix(" …").split()[-1] in long_text.split()  # ends with a whole word
    assert parse_action("cancelled") == (AckCode.CANCELLED, "")
    assert parse_action("False alarm") == (AckCode.FALSE_ALARM, "")
