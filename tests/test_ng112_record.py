"""Compact alarm records, building enrolment, canonical CAP rebuild and the command post's AlarmBook."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ng112.alarmbook import AlarmBook, AlarmChanged, AlarmMerged, AlarmRaised, Duplicate, SendAck
from ng112.buildings import BuildingRegistry, derived_key_id
from ng112.canonical import record_from_request, record_to_cap
from ng112.cap import (
    CATEGORIES,
    CERTAINTIES,
    MSG_TYPES,
    SEVERITIES,
    STATUSES,
    URGENCIES,
    build_cap_xml,
    validate_cap12,
)
from ng112.errors import EnrolmentError, RecordError
from ng112.hazards import Hazard
from ng112.record import (
    COMPACT_HEADER,
    CRYPTO_BUDGET,
    FRAME_TYPE,
    HOP_TAG,
    LORA_FRAME,
    MAX_EVENT,
    MAX_RECORD,
    AckCode,
    AlarmRecord,
    cut_words,
    decode_record,
    fitted,
)
from ng112.request import IngressPolicy, evaluate
from ng112.sip import SipRequest, parse_message

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "ng112"
BUILDINGS = """
[[building]]
key_id = "0a1b2c3d"
sender = "sip:fire-panel-17@building.example.org"
name = "Example Office Tower"
address = { country = "AT", A1 = "Wien", RD = "Stephansplatz", HNO = "1", PC = "1010" }
floors = "-2..12"
contacts = ["Facility desk +43 1 555 0100"]
hazards = ["Diesel tank in basement"]
lat = 48.20849
lon = 16.37208
panel = "sip:fire-panel-17@127.0.0.1:5099"
"""


def _sipp_request() -> SipRequest:
    message = parse_message((CORPUS / "sip" / "synthetic-sipp-fire-alarm-message.sip").read_bytes())
    assert isinstance(message, SipRequest)
    return message


def test_record_from_real_alarm_fits_one_lora_frame_and_rebuilds_valid_cap() -> None:
    registry = BuildingRegistry.from_toml(BUILDINGS)
    decision = evaluate(_sipp_request(), IngressPolicy())
    assert decision.request is not None
    key_id = registry.key_for(decision.request.sender_uri)
    assert key_id == 0x0A1B2C3D
    record = record_from_request(decision.request, key_id, now=0)
    wire = record.encode()
    assert len(wire) <= MAX_RECORD
    assert FRAME_TYPE + COMPACT_HEADER + len(wire) + CRYPTO_BUDGET + HOP_TAG <= LORA_FRAME
    back = decode_record(wire)
    assert back == record
    assert back.hazard == Hazard.SMOKE and back.floor == 3 and back.zone == "3.12"
    assert back.language == "de-AT" and back.event == "Fire alarm (automatic smoke detector)"
    assert back.text == "Smoke detector zone 3.12 (3rd floor, room 312)" and not back.text_cut
    assert back.status == "Actual" and back.urgency == "Immediate" and back.certainty == "Observed"
    cap = record_to_cap(back, registry.by_key(key_id))
    xml = build_cap_xml(cap)
    validate_cap12(xml)
    assert cap.identifier == f"0a1b2c3d-{record.seq}"
    assert b"<sent>2026-11-21T14:30:00+00:00</sent>" in xml
    assert b"Stephansplatz 1" in xml and b"Diesel tank" in xml and b"Facility desk" in xml


def test_biggest_record_fits_one_lora_frame_and_texts_are_cut_at_words() -> None:
    biggest = fitted(
        AlarmRecord(
            "Update", "Exercise", 2**32 - 1, 2**32 - 1, 2**32 - 1, 0xFFFF, CATEGORIES, 255,
            "Unknown", "Unknown", "Unknown", -900_000_000, 1_800_000_000, 255, -128, (1, 2),
            "zone z z z z z z", "slovo " * 60, 255, "zh-Hant-TW", "událost " * 10,
        )
    )  # fmt: skip
    wire = biggest.encode()
    assert len(wire) <= MAX_RECORD
    assert FRAME_TYPE + COMPACT_HEADER + MAX_RECORD + CRYPTO_BUDGET + HOP_TAG == LORA_FRAME
    back = decode_record(wire)
    assert back == biggest and back.text_cut and back.event_cut
    assert back.text.split() == ["slovo"] * len(back.text.split())  # only whole words
    assert back.event.split() == ["událost"] * len(back.event.split())
    assert len(back.event.encode()) <= MAX_EVENT
    assert cut_words("Únik čpavku ve strojovně", 15) == ("Únik čpavku", True)
    assert cut_words("abcdefghij", 4) == ("abcd", True)  # one long word: cut at a character
    with pytest.raises(RecordError, match="exceeds"):
        AlarmRecord("Alert", "Actual", 1, 2, 3, text="x" * 200).encode()


def test_decode_refuses_hostile_bytes() -> None:
    good = AlarmRecord("Alert", "Actual", 1, 2, 3, text="fire").encode()
    for bad, match in [
        (good[:-1], "length|truncated|unexpected"),
        (good + b"x", "unexpected"),
        (b"\x00" + good[1:], "version"),
        (good[:13], "shorter"),
        (bytes(200), "exceeds"),
    ]:
        with pytest.raises(RecordError, match=match):
            decode_record(bad)


records = st.builds(
    AlarmRecord,
    msg_type=st.sampled_from(MSG_TYPES),
    status=st.sampled_from(STATUSES),
    key_id=st.integers(0, 2**32 - 1),
    seq=st.integers(0, 2**32 - 1),
    sent=st.integers(0, 2**32 - 1),
    incident=st.integers(0, 0xFFFF),
    categories=st.lists(st.sampled_from(CATEGORIES), unique=True).map(
        lambda c: tuple(x for x in CATEGORIES if x in c)
    ),
    code=st.integers(0, 255),
    urgency=st.sampled_from(URGENCIES),
    severity=st.sampled_from(SEVERITIES),
    certainty=st.sampled_from(CERTAINTIES),
    floor=st.none() | st.integers(-128, 127),
    reference=st.none() | st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    zone=st.text(max_size=12).filter(lambda z: len(z.encode()) <= 12),
    text=st.text(max_size=40).filter(lambda t: len(t.encode()) <= 40),
    substance=st.integers(0, 255),
    language=st.sampled_from(["", "cs-CZ", "en-US", "de-AT"]),
    event=st.text(max_size=20).filter(lambda t: len(t.encode()) <= 20),
    text_cut=st.booleans(),
    event_cut=st.booleans(),
    followup=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(records)
def test_record_roundtrip(record: AlarmRecord) -> None:
    assert decode_record(record.encode()) == record


def test_building_table_errors_name_the_entry() -> None:
    with pytest.raises(EnrolmentError, match="building #1: 'sender'"):
        BuildingRegistry.from_toml("[[building]]\nname = 'x'\n")
    with pytest.raises(EnrolmentError, match="enrolled twice"):
        BuildingRegistry.from_toml(BUILDINGS + BUILDINGS)
    with pytest.raises(EnrolmentError, match="lat"):
        BuildingRegistry.from_toml("[[building]]\nsender = 'sip:a@b'\nlat = 1.0\n")
    assert BuildingRegistry().key_for("sip:Unknown@X") == derived_key_id("sip:unknown@x")


def _rec(msg_type: str, seq: int, sent: int, ref: int | None = None, status: str = "Actual") -> AlarmRecord:
    return AlarmRecord(msg_type, status, 7, seq, sent, reference=(7, ref) if ref is not None else None)


def test_alarmbook_dedup_receipt_and_operator_ack() -> None:
    book = AlarmBook()
    events = book.apply(_rec("Alert", 1, 1000), now=1030)
    raised = events[0]
    assert isinstance(raised, AlarmRaised) and raised.view.age_on_arrival == 30 and raised.view.actual
    ack = events[1]
    assert isinstance(ack, SendAck) and ack.ack.msg_type == "Ack" and ack.ack.reference == (7, 1)
    assert ack.ack.code == AckCode.RECEIVED and ack.ack.text == ""
    assert isinstance(book.apply(_rec("Alert", 1, 1000), now=1031)[0], Duplicate)
    operator = book.acknowledge((7, 1), "Jane Doe", "en route", now=1100)
    assert operator.code == AckCode.EN_ROUTE and operator.text == "Jane Doe"
    message = book.acknowledge((7, 1), "Jane Doe", "fire brigade dispatched", now=1101)
    assert message.code == AckCode.MESSAGE and message.text == "fire brigade dispatched"
    cap = record_to_cap(operator, None, reference_sent=datetime.fromtimestamp(1000, UTC))
    validate_cap12(build_cap_xml(cap))
    assert cap.references[0].identifier == "00000007-1"


def test_alarmbook_cancel_before_alert_and_updates_by_sent() -> None:
    book = AlarmBook()
    cancel = book.apply(_rec("Cancel", 3, 1200, ref=2), now=1300)  # shown at once, as its own alarm
    assert [type(e) for e in cancel] == [AlarmRaised, SendAck] and book.alarms[(7, 3)].orphan_of == (7, 2)
    update = book.apply(_rec("Update", 2, 1100, ref=1), now=1300)  # joins the Cancel naming it
    assert [type(e) for e in update] == [AlarmRaised, SendAck, AlarmChanged, AlarmMerged]
    assert book.alarms[(7, 2)].orphan_of == (7, 1) and (7, 3) not in book.alarms
    events = book.apply(_rec("Alert", 1, 1000, status="Exercise"), now=1300)
    kinds = [type(e) for e in events]
    assert kinds == [AlarmRaised, SendAck, AlarmChanged, AlarmChanged, AlarmMerged]
    assert list(book.alarms) == [(7, 1)] and book.resolve((7, 3)) == book.resolve((7, 2)) == (7, 1)
    view = book.alarms[(7, 1)]
    assert view.cancelled and not view.actual and book.active() == [] and view.orphan_of is None
    assert [r.seq for r in view.history] == [1, 2, 3]
    late = book.apply(_rec("Update", 4, 1050, ref=1), now=1400)  # older than the Cancel: no change
    assert isinstance(late[0], AlarmChanged) and book.alarms[(7, 1)].cancelled


def test_cap_feed_lists_active_alarms_with_valid_cap() -> None:
    from lxml import etree

    from ng112.feed import cap_feed_xml

    book = AlarmBook()
    book.apply(_rec("Alert", 1, 1000), now=1010)
    book.apply(_rec("Update", 2, 1100, ref=1), now=1110)
    book.apply(_rec("Alert", 5, 1200, status="Exercise"), now=1210)
    book.apply(_rec("Alert", 9, 1300), now=1310)
    book.apply(_rec("Cancel", 10, 1400, ref=9), now=1410)
    feed = etree.fromstring(cap_feed_xml(book, BuildingRegistry(), now=1500, feed_id="urn:mesh112:cp"))
    atom = "{http://www.w3.org/2005/Atom}"
    entries = feed.findall(f"{atom}entry")
    assert len(entries) == 2  # the cancelled alarm left the feed
    assert entries[0].findtext(f"{atom}title", "").startswith("[EXERCISE]")
    for entry in entries:
        alert = entry.find(f"{atom}content")[0]
        validate_cap12(etree.tostring(alert))
    update = entries[1].find(f"{atom}content")[0]
    assert b"<msgType>Update</msgType>" in etree.tostring(update)


def test_kinds_register_with_validators() -> None:
    from ng112.canonical import ack_record
    from ng112.kinds import NG112_ACK, NG112_ALARM, register_kinds
    from relay.kinds import KindError, KindRegistry

    registry = KindRegistry()
    register_kinds(registry)
    alarm = _rec("Alert", 1, 1000)
    registry.validate(NG112_ALARM, alarm.encode())
    registry.validate(NG112_ACK, ack_record(alarm, AckCode.RECEIVED, "", 1001).encode())
    with pytest.raises(KindError, match="ng112_alarm payload refused"):
        registry.validate(NG112_ALARM, b"\x00garbage")
    with pytest.raises(KindError, match="Ack record"):
        registry.validate(NG112_ACK, alarm.encode())


def test_alarmbook_updates_naming_each_other_are_one_alarm() -> None:
    book = AlarmBook()
    book.apply(_rec("Update", 2, 1100, ref=3), now=1200)
    events = book.apply(_rec("Update", 3, 1150, ref=2), now=1201)
    assert [type(e) for e in events] == [AlarmChanged]
    (view,) = book.alarms.values()
    assert view.orphan_of is None and [r.seq for r in view.history] == [2, 3]


def test_fetch_requests_wire_schedule_and_resend_limit() -> None:
    from ng112.errors import RecordError
    from ng112.fetch import FETCH_LIFETIME_S, FetchSchedule, ResendLimit, decode_fetch, encode_fetch

    assert decode_fetch(encode_fetch((0x0A1B2C3D, 7))) == (0x0A1B2C3D, 7) and len(encode_fetch((1, 2))) == 9
    for bad in (b"", b"\x01" * 8, b"\x02" + bytes(8), b"\x01" * 10):
        with pytest.raises(RecordError):
            decode_fetch(bad)
    schedule = FetchSchedule(after_s=60)
    assert schedule.due([((1, 1), 1000.0)], 1059) == []
    assert schedule.due([((1, 1), 1000.0)], 1060) == [(1, 1)]
    assert schedule.due([((1, 1), 1000.0)], 1060 + FETCH_LIFETIME_S - 1) == []  # the request still lives
    assert schedule.due([((1, 1), 1000.0)], 1060 + FETCH_LIFETIME_S) == [(1, 1)]
    assert schedule.due([], 5000) == [] and schedule.due([((1, 1), 1000.0)], 5000) == [(1, 1)]
    limit = ResendLimit(min_s=30)
    assert limit.allow((1, 1), 100) and not limit.allow((1, 1), 129) and limit.allow((2, 1), 129)
    assert limit.allow((1, 1), 130)
