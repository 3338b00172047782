"""Compact detection records and snapshots: sizes, round trips, and hostile bytes refused."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics_edge.events import (
    EVENT_SIZE,
    MAX_SNAPSHOT,
    DetectionRecord,
    EventDecodeError,
    EventEncodeError,
    SnapshotRecord,
    decode_event,
    decode_snapshot_record,
    encode_event,
    encode_snapshot_record,
)
from analytics_edge.kinds import DETECTION_EVENT, SNAPSHOT
from analytics_edge.records import CameraRecords
from analytics_edge.rules import EventType, Trend
from analytics_edge.tracking import Phase
from relay.bundle import COMPACT_HEADER_LEN, EPOCH_UNIX, BundleId, Destination, Priority
from relay.engine import Delivery

LORA_DIRECT_PAYLOAD = 219  # Meshtastic direct message limit
CRYPTO_BUDGET = 32  # ARCHITECTURE §4

fractions = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@st.composite
def records(draw: st.DrawFn) -> DetectionRecord:
    x1, x2 = sorted((draw(fractions), draw(fractions)))
    y1, y2 = sorted((draw(fractions), draw(fractions)))
    return DetectionRecord(
        type=draw(st.sampled_from(EventType)),
        phase=draw(st.sampled_from(Phase)),
        priority=draw(st.sampled_from(Priority)),
        camera=draw(st.integers(0, 255)),
        rule=draw(st.integers(0, 255)),
        time=EPOCH_UNIX + draw(st.integers(0, 2**32 - 1)) + draw(st.integers(0, 999)) / 1000,
        seq=draw(st.integers(0, 0xFFFF)),
        subject=draw(st.integers(0, 2**32 - 1)),
        box=(x1, y1, x2, y2),
        label_id=draw(st.integers(0, 255)),
        score=draw(fractions),
        count=draw(st.integers(0, 0xFFFF)),
        dwell_s=draw(st.integers(0, 0xFFFF)),
        density=draw(st.integers(0, 0xFFFF)) / 100,
        trend=draw(st.sampled_from(Trend)),
        snapshot_follows=draw(st.booleans()),
    )


def _intrusion() -> DetectionRecord:
    return DetectionRecord(
        EventType.INTRUSION, Phase.START, Priority.IMMEDIATE, camera=2, rule=0, time=EPOCH_UNIX + 86_400.25,
        seq=7, subject=42, box=(0.5, 0.25, 0.75, 1.0), score=0.9, count=1,
    )  # fmt: skip


def test_event_fits_a_lora_frame_with_header_and_crypto() -> None:
    payload = encode_event(_intrusion())
    assert len(payload) == EVENT_SIZE <= 48
    assert COMPACT_HEADER_LEN + CRYPTO_BUDGET + len(payload) <= LORA_DIRECT_PAYLOAD


def test_known_answer_layout() -> None:
    payload = encode_event(_intrusion())
    assert payload[0] == 0x11  # version 1, INTRUSION
    assert payload[1] == (Phase.START << 6 | Trend.STEADY << 4 | Priority.IMMEDIATE << 1)
    assert payload[4:8] == (86_400).to_bytes(4, "big") and payload[8:10] == (250).to_bytes(2, "big")


@given(records())
@settings(max_examples=300, deadline=None)
def test_event_round_trip(record: DetectionRecord) -> None:
    decoded = decode_event(encode_event(record))
    assert decoded.type is record.type and decoded.phase is record.phase
    assert decoded.priority is record.priority and decoded.trend is record.trend
    assert (decoded.camera, decoded.rule, decoded.seq, decoded.subject) == (
        record.camera, record.rule, record.seq, record.subject,
    )  # fmt: skip
    assert decoded.time == pytest.approx(record.time, abs=0.0015)
    assert decoded.box == pytest.approx(record.box, abs=1 / 65535)
    assert decoded.density == pytest.approx(record.density, abs=0.006)
    assert decoded.snapshot_follows == record.snapshot_follows


def _fuzz_event(data: bytes) -> None:
    try:
        record = decode_event(data)
    except EventDecodeError:
        return
    assert encode_event(record) == data  # whatever decodes is canonical


@given(st.binary(max_size=64))
@settings(max_examples=500, deadline=None)
def test_fuzz_event_decoder_short(data: bytes) -> None:
    _fuzz_event(data)


@pytest.mark.long
@given(st.binary(min_size=EVENT_SIZE, max_size=EVENT_SIZE))
@settings(max_examples=20_000, deadline=None)
def test_fuzz_event_decoder_long(data: bytes) -> None:
    _fuzz_event(data)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:-1], "32 bytes"),
        (lambda b: b + b"\x00", "32 bytes"),
        (lambda b: b"\x21" + b[1:], "version"),
        (lambda b: b"\x1f" + b[1:], "event type"),
        (lambda b: b[:1] + b"\xc0" + b[2:], "phase"),
        (lambda b: b[:1] + b"\x0e" + b[2:], "priority"),
        (lambda b: b[:8] + b"\x03\xe8" + b[10:], "milliseconds"),
        (lambda b: b[:18] + b"\xff\xff" + b[20:], "out of order"),
    ],
)
def test_hostile_events_refused(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    good = encode_event(_intrusion())
    with pytest.raises(EventDecodeError, match=message):
        decode_event(mutate(good))
    assert decode_event(good) == decode_event(good)  # the good record is untouched


def test_unencodable_event_refused() -> None:
    bad = _intrusion()
    for field, value in (("camera", 256), ("box", (0.0, 0.0, 1.5, 1.0)), ("time", EPOCH_UNIX - 5.0)):
        with pytest.raises(EventEncodeError):
            encode_event(DetectionRecord(**{**{s: getattr(bad, s) for s in bad.__slots__}, field: value}))


JPEG = b"\xff\xd8" + b"\x00" * 100 + b"\xff\xd9"


def test_snapshot_round_trip_and_limits() -> None:
    snap = SnapshotRecord(camera=1, event_seq=9, time=EPOCH_UNIX + 60, width=640, height=360, jpeg=JPEG)
    payload = encode_snapshot_record(snap)
    assert decode_snapshot_record(payload) == snap
    with pytest.raises(EventDecodeError, match="exceeds"):
        decode_snapshot_record(payload[:12] + b"\xff\xd8" + bytes(MAX_SNAPSHOT) + b"\xff\xd9")
    with pytest.raises(EventDecodeError, match="JPEG"):
        decode_snapshot_record(payload[:-1])
    with pytest.raises(EventDecodeError, match="version"):
        decode_snapshot_record(b"\x02" + payload[1:])
    with pytest.raises(EventDecodeError, match="too short"):
        decode_snapshot_record(payload[:13])
    with pytest.raises(EventEncodeError, match="JPEG"):
        encode_snapshot_record(SnapshotRecord(1, 9, EPOCH_UNIX, 640, 360, b"GIF89a"))


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_fuzz_snapshot_decoder_short(data: bytes) -> None:
    with contextlib.suppress(EventDecodeError):
        decode_snapshot_record(data)


async def test_a_restarted_cameras_events_get_records_of_their_own() -> None:
    """A camera numbers its events from 1 again after a restart: the same sequence number at another
    time is another record (not an update of the old one, with its old time); the same event
    delivered twice is the same record, and its snapshot's record names the same event."""

    def delivery(kind: int, payload: bytes) -> Delivery:
        origin = bytes(range(16))
        bundle_id = BundleId(origin, 1, 1)
        return Delivery(bundle_id, origin, Destination.to_node(bytes(16)), kind,
                        Priority.IMMEDIATE, 1, payload, bundle_id.key())  # fmt: skip

    records = CameraRecords()
    first = _intrusion()
    after_restart = dataclasses.replace(first, time=first.time + 3 * 3600)
    [a] = await records.handle(delivery(DETECTION_EVENT, encode_event(first)))
    [again] = await records.handle(delivery(DETECTION_EVENT, encode_event(first)))
    [b] = await records.handle(delivery(DETECTION_EVENT, encode_event(after_restart)))
    assert a.record_id == again.record_id and a.record_id != b.record_id
    snap = SnapshotRecord(first.camera, first.seq, int(first.time), 640, 360, JPEG)
    [s] = await records.handle(delivery(SNAPSHOT, encode_snapshot_record(snap)))
    assert s.record_id == f"{a.record_id}-snapshot"
