"""The compact alarm record: an NG112 alarm (or its acknowledgement) in one LoRa frame.

The building's address, name, contacts and hazards are enrolled at the command post
(:mod:`ng112.buildings`) and looked up by the sender key id, so the record carries only what changes
(research/ng112.md §7). Fixed layout, big endian::

    byte  0      version (2 bits, = 1) | msgType (3 bits) | status (3 bits)
    bytes 1-4    sender key id
    bytes 5-8    seq: the alarm's number, see alarm_seq()
    bytes 9-12   sent, unix seconds (UTC)
    bytes 13-14  incident: 16-bit hash of the CAP <incidents> (grouping)
    bytes 15-16  category bit mask (12 bits, CAP 1.2 order) | flags (4 bits: location, floor, reference, text)
    byte  17     alarm type (AlarmType) or, in an Ack, the ack kind (AckKind)
    bytes 18-19  urgency (3 bits) | severity (3 bits) | certainty (3 bits) | 0 (7 bits)
    [location]   lat, lon int32 in 1e-7 degrees, uncertainty uint8 (r = 2^(u/8) - 1 metres, rounded up)
    [floor]      int8
    [reference]  key id uint32, seq uint32 of the alarm this Update/Cancel/Ack refers to
    byte         zone length (0-12), then the zone/room/detector in UTF-8
    [text]       length (1-48), then a headline or ack note in UTF-8

The core (everything but text) is at most 51 bytes; with text at most :data:`MAX_RECORD` = 100, so
with the 16-byte compact bundle header and 32 bytes of crypto it fits one 219-byte LoRa frame.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum

from ng112.cap import CATEGORIES, CERTAINTIES, MSG_TYPES, SEVERITIES, STATUSES, URGENCIES
from ng112.errors import RecordError

RECORD_VERSION = 1
MAX_ZONE = 12
MAX_TEXT = 48
MAX_CORE = 51
MAX_RECORD = MAX_CORE + 1 + MAX_TEXT
LORA_FRAME = 219
COMPACT_HEADER = 16
CRYPTO_BUDGET = 32

_FIXED = struct.Struct(">BIIIHHBH")
_LOCATION = struct.Struct(">iiB")
_REFERENCE = struct.Struct(">II")
_FLAG_LOCATION, _FLAG_FLOOR, _FLAG_REFERENCE, _FLAG_TEXT = 8, 4, 2, 1


class AlarmType(IntEnum):
    """Building alarm types (research/ng112.md §6); the CAP event text and defaults live in ALARM_TYPES."""

    OTHER = 0
    FIRE = 1
    MANUAL_CALL_POINT = 2
    SPRINKLER = 3
    INTRUSION = 4
    PANIC = 5
    GAS = 6
    CARBON_MONOXIDE = 7
    LIFT_ENTRAPMENT = 8
    MEDICAL = 9
    FAULT = 10


class AckKind(IntEnum):
    RECEIPT = 1  # automatic: the command post has the alarm
    OPERATOR = 2  # a person accepted it (note: operator and action)


# type: (CAP event, CAP category, keywords found in the CAP event text, lower case)
ALARM_TYPES: dict[AlarmType, tuple[str, str, tuple[str, ...]]] = {
    AlarmType.SPRINKLER: ("Sprinkler activation", "Fire", ("sprinkler", "waterflow")),
    AlarmType.MANUAL_CALL_POINT: ("Manual fire alarm", "Fire", ("manual", "pull station", "call point")),
    AlarmType.FIRE: ("Fire alarm", "Fire", ("fire", "smoke", "heat")),
    AlarmType.INTRUSION: ("Intrusion alarm", "Security", ("intrusion", "burglary", "break-in")),
    AlarmType.PANIC: ("Panic alarm", "Security", ("panic", "duress", "hold-up", "holdup")),
    AlarmType.CARBON_MONOXIDE: ("Carbon monoxide alarm", "Health", ("carbon monoxide", "co alarm")),
    AlarmType.GAS: ("Gas alarm", "Safety", ("gas",)),
    AlarmType.LIFT_ENTRAPMENT: ("Persons trapped in lift", "Rescue", ("lift", "elevator", "entrap")),
    AlarmType.MEDICAL: ("Medical alarm", "Health", ("medical", "defib")),
    AlarmType.FAULT: ("Fault", "Infra", ("fault", "trouble", "power loss")),
    AlarmType.OTHER: ("Building alarm", "Other", ()),
}
_BY_CATEGORY = {"Fire": AlarmType.FIRE, "Security": AlarmType.INTRUSION, "Rescue": AlarmType.LIFT_ENTRAPMENT}


def alarm_type_for(event: str, categories: tuple[str, ...]) -> AlarmType:
    text = event.lower()
    for alarm_type, (_, _, keywords) in ALARM_TYPES.items():
        if any(k in text for k in keywords):
            return alarm_type
    for category in categories:
        if category in _BY_CATEGORY:
            return _BY_CATEGORY[category]
    return AlarmType.OTHER


def alarm_seq(sender: str, identifier: str, sent: datetime) -> int:
    """The record seq of a CAP alert: a 32-bit hash of its identity ``(sender, identifier, sent)``.

    Stateless, so a retransmitted or replayed CAP maps to the same record (the command post merges
    it), and a CAP ``<references>`` entry maps to the seq of the alert it names.
    """
    key = f"{sender}\n{identifier}\n{int(sent.timestamp())}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "big")


def incident_code(incidents: tuple[str, ...]) -> int:
    if not incidents:
        return 0
    return int.from_bytes(hashlib.blake2b(" ".join(incidents).encode(), digest_size=2).digest(), "big")


def encode_uncertainty(radius_m: float) -> int:
    if not math.isfinite(radius_m) or radius_m <= 0:
        return 0
    return min(255, math.ceil(8 * math.log2(radius_m + 1)))


def decode_uncertainty(code: int) -> float:
    return float(2 ** (code / 8) - 1)


def _clip_utf8(text: str, limit: int) -> bytes:
    data = text.encode("utf-8")[:limit]
    return data.decode("utf-8", "ignore").encode("utf-8")


@dataclass(frozen=True, slots=True)
class AlarmRecord:
    msg_type: str  # CAP msgType
    status: str  # CAP status
    key_id: int
    seq: int
    sent: int  # unix seconds
    incident: int = 0
    categories: tuple[str, ...] = ("Other",)
    alarm_type: int = AlarmType.OTHER  # AckKind in an Ack
    urgency: str = "Unknown"
    severity: str = "Unknown"
    certainty: str = "Unknown"
    lat_e7: int | None = None
    lon_e7: int | None = None
    uncertainty: int = 0
    floor: int | None = None
    reference: tuple[int, int] | None = None  # (key id, seq)
    zone: str = ""
    text: str = ""

    @property
    def identity(self) -> tuple[int, int, int]:
        """Deduplication identity: (sender key id, seq, sent) = CAP (sender, identifier, sent)."""
        return self.key_id, self.seq, self.sent

    @property
    def identifier(self) -> str:
        return f"{self.key_id:08x}-{self.seq}"

    @property
    def sent_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.sent, UTC)

    def encode(self) -> bytes:
        return encode_record(self)


def _index(value: str, options: tuple[str, ...], name: str) -> int:
    try:
        return options.index(value)
    except ValueError:
        raise RecordError(f"{name} {value!r} is not one of {', '.join(options)}") from None


def encode_record(record: AlarmRecord) -> bytes:
    flags = 0
    tail = b""
    if record.lat_e7 is not None and record.lon_e7 is not None:
        if not (
            -900_000_000 <= record.lat_e7 <= 900_000_000 and -1_800_000_000 <= record.lon_e7 <= 1_800_000_000
        ):
            raise RecordError("location outside lat -90..90 / lon -180..180")
        flags |= _FLAG_LOCATION
        tail += _LOCATION.pack(record.lat_e7, record.lon_e7, record.uncertainty)
    if record.floor is not None:
        if not -128 <= record.floor <= 127:
            raise RecordError(f"floor {record.floor} outside -128..127")
        flags |= _FLAG_FLOOR
        tail += struct.pack(">b", record.floor)
    if record.reference is not None:
        flags |= _FLAG_REFERENCE
        tail += _REFERENCE.pack(*record.reference)
    zone = _clip_utf8(record.zone, MAX_ZONE)
    tail += bytes([len(zone)]) + zone
    text = _clip_utf8(record.text, MAX_TEXT)
    if text:
        flags |= _FLAG_TEXT
        tail += bytes([len(text)]) + text
    mask = 0
    for category in record.categories:
        mask |= 1 << _index(category, CATEGORIES, "category")
    first = RECORD_VERSION << 6 | _index(record.msg_type, MSG_TYPES, "msgType") << 3
    first |= _index(record.status, STATUSES, "status")
    usc = _index(record.urgency, URGENCIES, "urgency") << 13
    usc |= (
        _index(record.severity, SEVERITIES, "severity") << 10
        | _index(record.certainty, CERTAINTIES, "certainty") << 7
    )
    for name, value, limit in (("key id", record.key_id, 0xFFFFFFFF), ("seq", record.seq, 0xFFFFFFFF)):
        if not 0 <= value <= limit:
            raise RecordError(f"{name} {value} outside 0..{limit}")
    if (
        not 0 <= record.sent <= 0xFFFFFFFF
        or not 0 <= record.incident <= 0xFFFF
        or not 0 <= record.alarm_type <= 255
    ):
        raise RecordError("sent, incident or alarm type out of range")
    head = _FIXED.pack(
        first,
        record.key_id,
        record.seq,
        record.sent,
        record.incident,
        mask << 4 | flags,
        record.alarm_type,
        usc,
    )
    return head + tail


def decode_record(data: bytes) -> AlarmRecord:
    """Decode untrusted record bytes; any violation raises :class:`RecordError` naming the field."""
    if len(data) > MAX_RECORD:
        raise RecordError(f"record of {len(data)} bytes exceeds {MAX_RECORD}")
    if len(data) < _FIXED.size + 1:
        raise RecordError(f"record of {len(data)} bytes is shorter than the {_FIXED.size + 1}-byte minimum")
    first, key_id, seq, sent, incident, mask_flags, alarm_type, usc = _FIXED.unpack_from(data)
    if first >> 6 != RECORD_VERSION:
        raise RecordError(f"record version {first >> 6} unsupported (want {RECORD_VERSION})")
    msg_type, status = first >> 3 & 7, first & 7
    urgency, severity, certainty = usc >> 13, usc >> 10 & 7, usc >> 7 & 7
    if msg_type >= len(MSG_TYPES) or status >= len(STATUSES):
        raise RecordError("msgType or status code out of range")
    if (
        urgency >= len(URGENCIES)
        or severity >= len(SEVERITIES)
        or certainty >= len(CERTAINTIES)
        or usc & 0x7F
    ):
        raise RecordError("urgency/severity/certainty field out of range")
    mask, flags = mask_flags >> 4, mask_flags & 0xF
    categories = tuple(c for i, c in enumerate(CATEGORIES) if mask >> i & 1)
    offset = _FIXED.size
    try:
        lat = lon = None
        uncertainty = 0
        if flags & _FLAG_LOCATION:
            lat, lon, uncertainty = _LOCATION.unpack_from(data, offset)
            offset += _LOCATION.size
            if not (-900_000_000 <= lat <= 900_000_000 and -1_800_000_000 <= lon <= 1_800_000_000):
                raise RecordError("location outside lat -90..90 / lon -180..180")
        floor = None
        if flags & _FLAG_FLOOR:
            (floor,) = struct.unpack_from(">b", data, offset)
            offset += 1
        reference = None
        if flags & _FLAG_REFERENCE:
            reference = _REFERENCE.unpack_from(data, offset)
            offset += _REFERENCE.size
        zone, offset = _text(data, offset, MAX_ZONE, "zone")
        text = ""
        if flags & _FLAG_TEXT:
            text, offset = _text(data, offset, MAX_TEXT, "text")
            if not text:
                raise RecordError("text flag set but text empty")
    except struct.error:
        raise RecordError("record truncated") from None
    if offset != len(data):
        raise RecordError(f"{len(data) - offset} unexpected bytes after the record")
    return AlarmRecord(
        MSG_TYPES[msg_type], STATUSES[status], key_id, seq, sent, incident, categories, alarm_type,
        URGENCIES[urgency], SEVERITIES[severity], CERTAINTIES[certainty], lat, lon, uncertainty, floor,
        (reference[0], reference[1]) if reference else None, zone, text,
    )  # fmt: skip


def _text(data: bytes, offset: int, limit: int, name: str) -> tuple[str, int]:
    if offset >= len(data):
        raise RecordError(f"record truncated before {name}")
    length = data[offset]
    if length > limit or offset + 1 + length > len(data):
        raise RecordError(f"{name} length {length} invalid")
    try:
        value = data[offset + 1 : offset + 1 + length].decode("utf-8")
    except UnicodeDecodeError:
        raise RecordError(f"{name} is not UTF-8") from None
    return value, offset + 1 + length
