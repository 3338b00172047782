"""The follow-up: the whole CAP and PIDF-LO of an alarm, a second bundle linked to its first frame.

The first frame (:mod:`ng112.record`) carries what a responder acts on first; everything else the
panel sent (description, instruction, contacts, parameters, areas, the PIDF-LO with its civic
address, RFC 7852 blocks, text) follows in one IMMEDIATE bundle of kind ``NG112_FOLLOWUP``. It names
its first frame by ``(key id, seq, sent)``; the command post also checks that the CAP inside digests
to that seq (:func:`ng112.record.alarm_seq`), so a follow-up cannot be pinned to another alarm.

Layout, big endian::

    byte  0      version (= 1)
    bytes 1-4    key id, bytes 5-8 seq, bytes 9-12 sent (unix seconds) of the first frame
    bytes 13-    zlib stream (preset dictionary :data:`DICTIONARY`) of the parts:
                 type (1 byte: 1 canonical CAP 1.2, 2 PIDF-LO, 3 RFC 7852 block, 4 text),
                 content type (length byte + ASCII, blocks only), length (uint32) + bytes

The CAP travels as canonical CAP 1.2 (:func:`ng112.cap.build_cap_xml`): the panel's element order,
``Z`` times and CAP 1.0/1.1 namespaces are normalised, nothing the CAP model holds is dropped; the
PIDF-LO and the blocks travel as received. Over LoRa the core fragments the bundle (at most 8
fragments for a non-FLASH bundle on a costly link, about 1.7 kB); a bigger follow-up waits for an IP
path, while the first frame has already crossed.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from ng112.cap import CapAlert, build_cap_xml, parse_cap
from ng112.errors import CapError, RecordError
from ng112.record import AlarmRecord, alarm_seq
from ng112.request import EmergencyRequest

FOLLOWUP_VERSION = 1
MAX_EXPANDED = 256 * 1024  # bounds the decompressed parts (a zip bomb stops here)
_HEAD = struct.Struct(">BIII")
_PART = struct.Struct(">BI")
_CAP, _PIDF, _BLOCK, _TEXT = 1, 2, 3, 4

# Strings common to canonical CAP 1.2 and PIDF-LO: deflate refers back to them from the first byte.
# Part of the wire format: never change it without a new FOLLOWUP_VERSION.
DICTIONARY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf" '
    b'xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10" xmlns:gml="http://www.opengis.net/gml" '
    b'xmlns:gs="http://www.opengis.net/pidflo/1.0" '
    b'xmlns:ca="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr" entity="'
    b'<tuple id="><status><gp:geopriv><gp:location-info><gs:Circle srsName="urn:ogc:def:crs:EPSG::4326">'
    b'<gml:pos></gml:pos><gs:radius uom="urn:ogc:def:uom:EPSG::9001"></gs:radius></gs:Circle>'
    b"<ca:civicAddress><ca:country></ca:country><ca:A1></ca:A1><ca:A3></ca:A3><ca:RD></ca:RD>"
    b"<ca:HNO></ca:HNO><ca:PC></ca:PC><ca:FLR></ca:FLR><ca:ROOM></ca:ROOM><ca:NAM></ca:NAM>"
    b"</ca:civicAddress></gp:location-info><gp:usage-rules/><gp:method></gp:method></gp:geopriv>"
    b"</status><timestamp></timestamp></tuple></presence>\n"
    b"<?xml version='1.0' encoding='UTF-8'?>\n"
    b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">\n  <identifier></identifier>\n'
    b"  <sender>sip:</sender>\n  <sent>T+00:00</sent>\n  <status>Actual</status>\n"
    b"  <msgType>Alert</msgType>\n  <scope>Private</scope>\n  <incidents></incidents>\n  <info>\n"
    b"    <language>en-US</language>\n    <category>Fire</category>\n    <event></event>\n"
    b"    <urgency>Immediate</urgency>\n    <severity>Extreme</severity>\n"
    b"    <certainty>Observed</certainty>\n    <senderName></senderName>\n    <headline></headline>\n"
    b"    <description></description>\n    <instruction></instruction>\n    <contact></contact>\n"
    b"    <parameter>\n      <valueName></valueName>\n      <value></value>\n    </parameter>\n"
    b"    <area>\n      <areaDesc></areaDesc>\n      <circle></circle>\n    </area>\n  </info>\n"
    b"</alert>\n"
)


@dataclass(frozen=True, slots=True)
class FollowUp:
    key_id: int
    seq: int
    sent: int
    cap_xml: bytes | None = None  # canonical CAP 1.2
    location_xml: bytes | None = None  # PIDF-LO as received
    blocks: tuple[tuple[str, bytes], ...] = ()  # RFC 7852 blocks: (content type, body)
    text: str | None = None

    @property
    def key(self) -> tuple[int, int]:
        return self.key_id, self.seq


def follows(request: EmergencyRequest) -> bool:
    """Whether an accepted request has more than its first frame can carry (a follow-up is sent)."""
    return bool(request.cap or request.location_xml or request.additional_data or request.text)


def followup_for(record: AlarmRecord, request: EmergencyRequest) -> FollowUp:
    return FollowUp(
        record.key_id,
        record.seq,
        record.sent,
        build_cap_xml(request.cap) if request.cap else None,
        request.location_xml,
        tuple((block.content_type, block.body) for block in request.additional_data),
        request.text,
    )


def encode_followup(followup: FollowUp) -> bytes:
    parts = b""
    for kind, body in ((_CAP, followup.cap_xml), (_PIDF, followup.location_xml)):
        if body is not None:
            parts += _PART.pack(kind, len(body)) + body
    for content_type, body in followup.blocks:
        label = content_type.encode("ascii", "replace")[:255]
        parts += bytes([_BLOCK, len(label)]) + label + struct.pack(">I", len(body)) + body
    if followup.text is not None:
        text = followup.text.encode("utf-8")
        parts += _PART.pack(_TEXT, len(text)) + text
    compressor = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, DICTIONARY)
    packed = compressor.compress(parts) + compressor.flush()
    return _HEAD.pack(FOLLOWUP_VERSION, followup.key_id, followup.seq, followup.sent) + packed


def decode_followup(data: bytes) -> FollowUp:
    """Decode untrusted follow-up bytes; any violation raises :class:`RecordError`."""
    if len(data) < _HEAD.size + 2:
        raise RecordError(f"follow-up of {len(data)} bytes is too short")
    version, key_id, seq, sent = _HEAD.unpack_from(data)
    if version != FOLLOWUP_VERSION:
        raise RecordError(f"follow-up version {version} unsupported (want {FOLLOWUP_VERSION})")
    inflater = zlib.decompressobj(15, DICTIONARY)
    try:
        parts = inflater.decompress(data[_HEAD.size :], MAX_EXPANDED)
    except zlib.error as exc:
        raise RecordError(f"follow-up does not inflate: {exc}") from None
    if inflater.unconsumed_tail:
        raise RecordError(f"follow-up expands beyond {MAX_EXPANDED} bytes")
    if not inflater.eof or inflater.unused_data:
        raise RecordError("follow-up compressed stream truncated or followed by junk")
    found: dict[int, bytes] = {}
    blocks: list[tuple[str, bytes]] = []
    offset = 0
    try:
        while offset < len(parts):
            kind = parts[offset]
            label = ""
            if kind == _BLOCK:
                size = parts[offset + 1]
                label = parts[offset + 2 : offset + 2 + size].decode("ascii")
                offset += 1 + size
                (length,) = struct.unpack_from(">I", parts, offset + 1)
            else:
                _, length = _PART.unpack_from(parts, offset)
            body = parts[offset + 5 : offset + 5 + length]
            if len(body) != length:
                raise RecordError("follow-up part truncated")
            offset += 5 + length
            if kind == _BLOCK:
                blocks.append((label, body))
            elif kind in (_CAP, _PIDF, _TEXT) and kind not in found:
                found[kind] = body
            else:
                raise RecordError(f"follow-up part type {kind} unknown or repeated")
        text = found[_TEXT].decode("utf-8") if _TEXT in found else None
    except (struct.error, IndexError, UnicodeDecodeError):
        raise RecordError("follow-up parts damaged") from None
    return FollowUp(key_id, seq, sent, found.get(_CAP), found.get(_PIDF), tuple(blocks), text)


def check_followup(followup: FollowUp) -> CapAlert | None:
    """The follow-up's CAP, refused (:class:`RecordError`) unless it digests to the first frame's seq."""
    if followup.cap_xml is None:
        return None
    try:
        alert, _ = parse_cap(followup.cap_xml)
    except CapError as exc:
        raise RecordError(f"follow-up CAP unusable: {exc}") from None
    if alarm_seq(alert.sender, alert.identifier, alert.sent) != followup.seq:
        raise RecordError("follow-up CAP does not match its first frame (sender, identifier, sent)")
    return alert
