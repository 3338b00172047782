"""The compact alarm record: an NG112 alarm (or its acknowledgement) in one LoRa frame.

The first frame carries what a responder acts on first (research/ng112.md §7): the hazard and the
substance from the code tables in :mod:`ng112.hazards`, the CAP event text when the table's name is
not the CAP's own, severity/urgency/certainty, position with its uncertainty, floor and zone, the
language, and the headline cut at a word boundary. Everything else (description, instruction,
contacts, parameters, civic address, RFC 7852 blocks) follows as a linked follow-up bundle
(:mod:`ng112.followup`). The building's enrolment (:mod:`ng112.buildings`) is looked up by the sender
key id. Fixed layout, big endian::

    byte  0      version (2 bits, = 2) | msgType (3 bits) | status (3 bits)
    bytes 1-4    sender key id
    bytes 5-8    seq: digest of the CAP (sender, identifier, sent), see alarm_seq()
    bytes 9-12   sent, unix seconds (UTC)
    bytes 13-14  incident: 16-bit hash of the CAP <incidents> (grouping)
    bytes 15-16  category bit mask (12 bits, CAP 1.2 order) | flags (4 bits: location, floor, reference, text)
    byte  17     code: the Hazard in an alarm, the AckCode in an Ack
    byte  18     substance (Substance; 0 = none)
    bytes 19-20  urgency (3) | severity (3) | certainty (3) | flags (language, event, text cut,
                 event cut, follow-up coming, unauthenticated: 1 bit each) | 0 (1 bit)
    [location]   lat, lon int32 in 1e-7 degrees, uncertainty uint8 (r = 2^(u/8) - 1 metres, rounded up)
    [floor]      int8
    [reference]  key id uint32, seq uint32 of the alarm this Update/Cancel/Ack refers to
    byte         zone length (0-12), then the zone/room/detector in UTF-8
    [language]   length (1-12), then the CAP language tag in ASCII (absent: en-US)
    [event]      length (1-48), then the CAP event in UTF-8 (absent: the hazard table's event)
    [text]       length (1-255), then the headline or ack text in UTF-8

A whole record is at most :data:`MAX_RECORD` = 158 bytes: with the frame type byte, the 16-byte
compact bundle header, 32 bytes of end-to-end crypto and the LoRa link's 12-byte hop tag it fills one
219-byte LoRa frame. Texts that do not fit are cut at a word boundary (:func:`cut_words`) and flagged as cut.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import IntEnum

from ng112.cap import CATEGORIES, CERTAINTIES, MSG_TYPES, SEVERITIES, STATUSES, URGENCIES
from ng112.errors import RecordError
from ng112.hazards import HAZARDS, Hazard

RECORD_VERSION = 2
MAX_ZONE = 12
MAX_LANGUAGE = 12
MAX_EVENT = 48
MAX_RECORD = 158
LORA_FRAME = 219
COMPACT_HEADER = 16
CRYPTO_BUDGET = 32
FRAME_TYPE = 1
HOP_TAG = 12  # the LoRa link's per-hop authenticator (crypto/hop.py)

_FIXED = struct.Struct(">BIIIHHBBH")
_LOCATION = struct.Struct(">iiB")
_REFERENCE = struct.Struct(">II")
_FLAG_LOCATION, _FLAG_FLOOR, _FLAG_REFERENCE, _FLAG_TEXT = 8, 4, 2, 1
_FLAG_LANGUAGE, _FLAG_EVENT, _FLAG_TEXT_CUT, _FLAG_EVENT_CUT, _FLAG_FOLLOWUP = 64, 32, 16, 8, 4
_FLAG_UNAUTHENTICATED = 2  # the panel did not prove its building's secret (ng112.gateway)


class AckCode(IntEnum):
    """What an Ack record says; :mod:`ng112.acks` renders each as a whole phrase per language."""

    RECEIVED = 1  # the command post has the alarm (the automatic receipt, or an operator saying so)
    DISPATCHED = 2
    EN_ROUTE = 3
    ON_SCENE = 4
    FALSE_ALARM = 5
    CANCELLED = 6
    MESSAGE = 7  # free text from the operator


def alarm_seq(sender: str, identifier: str, sent: datetime) -> int:
    """The record seq of a CAP alert: a 32-bit digest of its identity ``(sender, identifier, sent)``.

    Stateless, so a retransmitted or replayed CAP maps to the same record (the command post merges
    it), a CAP ``<references>`` entry maps to the seq of the alert it names, and the follow-up that
    carries the whole CAP ties back to its first frame.
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


def cut_words(text: str, limit: int) -> tuple[str, bool]:
    """``text`` in at most ``limit`` UTF-8 bytes, cut at a word boundary; (text, whether it was cut).

    A single word longer than the limit is cut at a character boundary: a part of it is still
    better than nothing for a responder."""
    text = " ".join(text.split())
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text, False
    head = data[: limit + 1].decode("utf-8", "ignore")
    if " " in head:
        return head[: head.rindex(" ")].rstrip(" ,;:-"), True
    return data[:limit].decode("utf-8", "ignore"), True


@dataclass(frozen=True, slots=True)
class AlarmRecord:
    msg_type: str  # CAP msgType
    status: str  # CAP status
    key_id: int
    seq: int
    sent: int  # unix seconds
    incident: int = 0
    categories: tuple[str, ...] = ("Other",)
    code: int = Hazard.OTHER  # Hazard in an alarm, AckCode in an Ack
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
    substance: int = 0
    language: str = ""  # CAP language tag; "" = not given (CAP default en-US)
    event: str = ""  # CAP event; "" = the hazard table's event
    text_cut: bool = False
    event_cut: bool = False
    followup: bool = False  # the whole CAP/PIDF-LO follows in a linked bundle (ng112.followup)
    unauthenticated: bool = False  # the gateway could not tell that the building sent it

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

    @property
    def hazard(self) -> Hazard:
        return Hazard(self.code) if self.code in Hazard._value2member_map_ else Hazard.OTHER

    @property
    def event_text(self) -> str:
        """The CAP event as the first frame knows it."""
        return self.event or HAZARDS[self.hazard].event

    def encode(self) -> bytes:
        return encode_record(self)


def fitted(record: AlarmRecord) -> AlarmRecord:
    """``record`` with zone, event and text cut at word boundaries so it encodes in MAX_RECORD bytes."""
    event, event_cut = cut_words(record.event, MAX_EVENT)
    zone = cut_words(record.zone, MAX_ZONE)[0]
    bare = replace(record, zone=zone, event=event, event_cut=record.event_cut or event_cut, text="")
    budget = min(255, MAX_RECORD - len(encode_record(bare)) - 1)
    text, text_cut = cut_words(record.text, budget)
    return replace(bare, text=text, text_cut=record.text_cut or text_cut)


def _index(value: str, options: tuple[str, ...], name: str) -> int:
    try:
        return options.index(value)
    except ValueError:
        raise RecordError(f"{name} {value!r} is not one of {', '.join(options)}") from None


def _short(text: str, limit: int, name: str, ascii_only: bool = False) -> bytes:
    try:
        data = text.encode("ascii" if ascii_only else "utf-8")
    except UnicodeEncodeError:
        raise RecordError(f"{name} {text[:20]!r} cannot be encoded") from None
    if len(data) > limit:
        raise RecordError(f"{name} of {len(data)} bytes exceeds {limit}")
    return bytes([len(data)]) + data


def encode_record(record: AlarmRecord) -> bytes:
    flags = extra = 0
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
    tail += _short(record.zone, MAX_ZONE, "zone")
    if record.language:
        tail += _short(record.language, MAX_LANGUAGE, "language", ascii_only=True)
        extra |= _FLAG_LANGUAGE
    if record.event:
        tail += _short(record.event, MAX_EVENT, "event")
        extra |= _FLAG_EVENT
    if record.text:
        tail += _short(record.text, 255, "text")
        flags |= _FLAG_TEXT
    extra |= (_FLAG_TEXT_CUT if record.text_cut else 0) | (_FLAG_EVENT_CUT if record.event_cut else 0)
    extra |= _FLAG_FOLLOWUP if record.followup else 0
    extra |= _FLAG_UNAUTHENTICATED if record.unauthenticated else 0
    mask = 0
    for category in record.categories:
        mask |= 1 << _index(category, CATEGORIES, "category")
    first = RECORD_VERSION << 6 | _index(record.msg_type, MSG_TYPES, "msgType") << 3
    first |= _index(record.status, STATUSES, "status")
    usc = _index(record.urgency, URGENCIES, "urgency") << 13
    usc |= (
        _index(record.severity, SEVERITIES, "severity") << 10
        | _index(record.certainty, CERTAINTIES, "certainty") << 7
        | extra
    )
    for name, value, limit in (("key id", record.key_id, 0xFFFFFFFF), ("seq", record.seq, 0xFFFFFFFF)):
        if not 0 <= value <= limit:
            raise RecordError(f"{name} {value} outside 0..{limit}")
    if (
        not 0 <= record.sent <= 0xFFFFFFFF
        or not 0 <= record.incident <= 0xFFFF
        or not 0 <= record.code <= 255
        or not 0 <= record.substance <= 255
    ):
        raise RecordError("sent, incident, code or substance out of range")
    head = _FIXED.pack(
        first, record.key_id, record.seq, record.sent, record.incident, mask << 4 | flags, record.code,
        record.substance, usc,
    )  # fmt: skip
    wire = head + tail
    if len(wire) > MAX_RECORD:
        raise RecordError(f"record of {len(wire)} bytes exceeds {MAX_RECORD} (use fitted())")
    return wire


def decode_record(data: bytes) -> AlarmRecord:
    """Decode untrusted record bytes; any violation raises :class:`RecordError` naming the field."""
    if len(data) > MAX_RECORD:
        raise RecordError(f"record of {len(data)} bytes exceeds {MAX_RECORD}")
    if len(data) < _FIXED.size + 1:
        raise RecordError(f"record of {len(data)} bytes is shorter than the {_FIXED.size + 1}-byte minimum")
    first, key_id, seq, sent, incident, mask_flags, code, substance, usc = _FIXED.unpack_from(data)
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
        or usc & 0x01
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
        texts: dict[str, str] = {}
        for flag, name, limit in (
            (usc & _FLAG_LANGUAGE, "language", MAX_LANGUAGE),
            (usc & _FLAG_EVENT, "event", MAX_EVENT),
            (flags & _FLAG_TEXT, "text", 255),
        ):
            texts[name] = ""
            if flag:
                texts[name], offset = _text(data, offset, limit, name)
                if not texts[name]:
                    raise RecordError(f"{name} flag set but {name} empty")
        if not texts["language"].isascii():
            raise RecordError("language is not an ASCII tag")
    except struct.error:
        raise RecordError("record truncated") from None
    if offset != len(data):
        raise RecordError(f"{len(data) - offset} unexpected bytes after the record")
    return AlarmRecord(
        MSG_TYPES[msg_type], STATUSES[status], key_id, seq, sent, incident, categories, code,
        URGENCIES[urgency], SEVERITIES[severity], CERTAINTIES[certainty], lat, lon, uncertainty, floor,
        (reference[0], reference[1]) if reference else None, zone, texts["text"], substance,
        texts["language"], texts["event"], bool(usc & _FLAG_TEXT_CUT), bool(usc & _FLAG_EVENT_CUT),
        bool(usc & _FLAG_FOLLOWUP), bool(usc & _FLAG_UNAUTHENTICATED),
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
