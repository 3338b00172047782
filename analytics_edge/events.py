"""Compact detection records: a few bytes of meaning instead of video.

A detection event is 32 bytes in a fixed layout, so it fits one LoRa frame with the 16-byte bundle
header and the 32 bytes of crypto with room to spare. It carries no image and no biometric data:
what happened, where in the picture (box as fractions of the frame), how many, for how long.

Event record (big endian)::

    byte  0      version (4 bits, = 1) | event type (4 bits)
    byte  1      phase (2 bits) | trend (2 bits) | priority (3 bits) | snapshot follows (1 bit)
    byte  2      camera number on the sending node
    byte  3      rule number in that camera's configuration
    bytes 4-7    time, whole seconds since the Mesh112 epoch (2024-01-01 UTC)
    bytes 8-9    milliseconds, 0-999
    bytes 10-11  event sequence number per camera (wraps); a snapshot names the event it shows
    bytes 12-15  subject: track id, or incident number for crowds and objects
    byte  16     label id (the detector's class index)
    byte  17     score x 255
    bytes 18-25  box x1, y1, x2, y2 as fractions of frame width/height x 65535
    bytes 26-27  count of persons
    bytes 28-29  dwell time in seconds (saturates at 65535)
    bytes 30-31  density in hundredths of a person per m² (saturates)

A snapshot (kind 41, ``BULK``) is a 12-byte header and an anonymised JPEG::

    byte 0 version (= 1) | byte 1 camera | bytes 2-3 event sequence | bytes 4-7 time (epoch s)
    bytes 8-9 width | bytes 10-11 height | JPEG (starts FF D8, ends FF D9)

Decoders are strict: any size, range or marker violation raises :class:`EventDecodeError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TypeVar

from analytics_edge.rules import EventType, Trend
from analytics_edge.tracking import Phase
from relay.bundle import EPOCH_UNIX, Priority

VERSION = 1
EVENT_SIZE = 32
SNAPSHOT_HEADER = 12
MAX_SNAPSHOT = 256 * 1024
_EVENT = struct.Struct(">BBBBIHHIBB4HHHH")
_SNAPSHOT = struct.Struct(">BBHIHH")
_U16 = 0xFFFF
_U32 = 0xFFFF_FFFF
E = TypeVar("E", EventType, Phase, Trend, Priority)

assert _EVENT.size == EVENT_SIZE and _SNAPSHOT.size == SNAPSHOT_HEADER


class EventDecodeError(ValueError):
    """Bytes that are not a valid detection record or snapshot; the message names the field."""


class EventEncodeError(ValueError):
    """A record whose values do not fit the wire layout."""


@dataclass(frozen=True, slots=True)
class DetectionRecord:
    type: EventType
    phase: Phase
    priority: Priority
    camera: int
    rule: int
    time: float  # unix seconds, millisecond precision on the wire
    seq: int
    subject: int
    box: tuple[float, float, float, float]  # fractions of the frame, 0..1
    label_id: int = 0
    score: float = 0.0
    count: int = 0
    dwell_s: int = 0
    density: float = 0.0
    trend: Trend = Trend.STEADY
    snapshot_follows: bool = False


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    camera: int
    event_seq: int
    time: int  # unix seconds
    width: int
    height: int
    jpeg: bytes


def encode_event(record: DetectionRecord) -> bytes:
    r = record
    mesh_ms = round((r.time - EPOCH_UNIX) * 1000)
    if not 0 <= mesh_ms // 1000 <= _U32:
        raise EventEncodeError(f"time {r.time} is outside the Mesh112 epoch range")
    for name, value, high in (("camera", r.camera, 255), ("rule", r.rule, 255), ("label_id", r.label_id, 255),
                              ("seq", r.seq, _U16), ("subject", r.subject, _U32)):  # fmt: skip
        if not 0 <= value <= high:
            raise EventEncodeError(f"{name} {value} is outside 0-{high}")
    if not all(0.0 <= v <= 1.0 for v in r.box):
        raise EventEncodeError(f"box {r.box} is not in fractions of the frame")
    return _EVENT.pack(
        VERSION << 4 | r.type,
        r.phase << 6 | r.trend << 4 | r.priority << 1 | int(r.snapshot_follows),
        r.camera,
        r.rule,
        mesh_ms // 1000,
        mesh_ms % 1000,
        r.seq,
        r.subject,
        r.label_id,
        _sat(round(r.score * 255), 255),
        *(round(v * _U16) for v in r.box),
        _sat(r.count, _U16),
        _sat(r.dwell_s, _U16),
        _sat(round(r.density * 100), _U16),
    )


def decode_event(data: bytes) -> DetectionRecord:
    if len(data) != EVENT_SIZE:
        raise EventDecodeError(f"a detection record is {EVENT_SIZE} bytes, got {len(data)}")
    (head, flags, camera, rule, seconds, millis, seq, subject, label_id, score,
     x1, y1, x2, y2, count, dwell, density) = _EVENT.unpack(data)  # fmt: skip
    if head >> 4 != VERSION:
        raise EventDecodeError(f"unknown detection record version {head >> 4}")
    event_type = _enum(EventType, head & 0x0F, "event type")
    phase = _enum(Phase, flags >> 6, "phase")
    trend = _enum(Trend, (flags >> 4) & 0x03, "trend")
    priority = _enum(Priority, (flags >> 1) & 0x07, "priority")
    if millis > 999:
        raise EventDecodeError(f"milliseconds field is {millis}, must be 0-999")
    if x1 > x2 or y1 > y2:
        raise EventDecodeError("box corners are out of order")
    return DetectionRecord(
        type=event_type,
        phase=phase,
        priority=priority,
        camera=camera,
        rule=rule,
        time=EPOCH_UNIX + seconds + millis / 1000,
        seq=seq,
        subject=subject,
        box=(x1 / _U16, y1 / _U16, x2 / _U16, y2 / _U16),
        label_id=label_id,
        score=score / 255,
        count=count,
        dwell_s=dwell,
        density=density / 100,
        trend=trend,
        snapshot_follows=bool(flags & 1),
    )


def encode_snapshot_record(record: SnapshotRecord) -> bytes:
    r = record
    _check_jpeg(r.jpeg)
    seconds = int(r.time) - EPOCH_UNIX
    if not (0 <= r.camera <= 255 and 0 <= r.event_seq <= _U16 and 0 <= seconds <= _U32):
        raise EventEncodeError("snapshot camera, event sequence or time out of range")
    if not (0 < r.width <= _U16 and 0 < r.height <= _U16):
        raise EventEncodeError(f"snapshot size {r.width}x{r.height} out of range")
    payload = _SNAPSHOT.pack(VERSION, r.camera, r.event_seq, seconds, r.width, r.height) + r.jpeg
    if len(payload) > MAX_SNAPSHOT:
        raise EventEncodeError(f"snapshot of {len(payload)} bytes exceeds {MAX_SNAPSHOT}")
    return payload


def decode_snapshot_record(data: bytes) -> SnapshotRecord:
    if len(data) > MAX_SNAPSHOT:
        raise EventDecodeError(f"snapshot of {len(data)} bytes exceeds the limit of {MAX_SNAPSHOT}")
    if len(data) < SNAPSHOT_HEADER + 4:
        raise EventDecodeError(f"snapshot of {len(data)} bytes is too short")
    version, camera, event_seq, seconds, width, height = _SNAPSHOT.unpack_from(data)
    if version != VERSION:
        raise EventDecodeError(f"unknown snapshot version {version}")
    if width == 0 or height == 0:
        raise EventDecodeError("snapshot width and height must be positive")
    jpeg = bytes(data[SNAPSHOT_HEADER:])
    try:
        _check_jpeg(jpeg)
    except EventEncodeError as exc:
        raise EventDecodeError(str(exc)) from exc
    return SnapshotRecord(camera, event_seq, EPOCH_UNIX + seconds, width, height, jpeg)


def _check_jpeg(jpeg: bytes) -> None:
    if not (jpeg.startswith(b"\xff\xd8") and jpeg.endswith(b"\xff\xd9")):
        raise EventEncodeError("snapshot image is not a complete JPEG (SOI/EOI markers)")


def _sat(value: int, high: int) -> int:
    return max(0, min(high, value))


def _enum(kind: type[E], value: int, name: str) -> E:
    try:
        return kind(value)
    except ValueError:
        raise EventDecodeError(f"{name} {value} is not defined") from None
