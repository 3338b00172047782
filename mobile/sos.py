"""The SOS on the wire: a raise or a cancel (kind 48) and the command post's acknowledgement (kind 49).

Both fit one LoRa frame with room to spare. The responder's identity is not in the payload: the
bundle's origin is authenticated end to end, and the command post names the SOS after its origin's
certificate. Layouts (big-endian)::

    SosRecord  version(1)=1 flags(1) number(u16) raised(u32 unix s) [position(16)] [text, UTF-8]
               flags: bit 0 cancel, bit 1 a position follows
    SosAck     version(1)=1 number(u16) [text, UTF-8: who acknowledged and what they said]

``number`` counts the SOSes of one device; (origin, number) names an SOS everywhere, so a raise
sent twice (after a crash between the two writes that make it) is one SOS at the command post.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from relay.position import POSITION_LEN, Position, PositionDecodeError, decode_position, encode_position

VERSION = 1
MAX_TEXT = 80  # bytes of UTF-8: a short note ("trapped, 2nd floor") still fits one LoRa frame
MAX_ACK_TEXT = 120
_HEAD = struct.Struct(">BBHI")
_ACK_HEAD = struct.Struct(">BH")
_CANCEL = 0x01
_HAS_POSITION = 0x02


class SosDecodeError(ValueError):
    """An SOS or SOS acknowledgement payload of the wrong shape; the message says which part."""


@dataclass(frozen=True, slots=True)
class SosRecord:
    number: int
    raised: int  # unix seconds, when the responder confirmed it
    cancel: bool = False
    position: Position | None = None
    text: str = ""

    def __post_init__(self) -> None:
        if not 1 <= self.number <= 0xFFFF:
            raise ValueError(f"an SOS number is 1-65535, got {self.number}")
        if len(self.text.encode()) > MAX_TEXT:
            raise ValueError(f"an SOS note is at most {MAX_TEXT} bytes of UTF-8")


@dataclass(frozen=True, slots=True)
class SosAck:
    number: int
    text: str = ""


def _cut(text: str, limit: int) -> str:
    data = text.encode()[:limit]
    return data.decode("utf-8", errors="ignore")


def encode_sos(record: SosRecord) -> bytes:
    flags = (_CANCEL if record.cancel else 0) | (_HAS_POSITION if record.position else 0)
    out = _HEAD.pack(VERSION, flags, record.number, record.raised)
    if record.position is not None:
        out += encode_position(record.position)
    return out + record.text.encode()


def decode_sos(data: bytes) -> SosRecord:
    if len(data) < _HEAD.size:
        raise SosDecodeError(f"an SOS payload is at least {_HEAD.size} bytes, got {len(data)}")
    version, flags, number, raised = _HEAD.unpack_from(data)
    if version != VERSION:
        raise SosDecodeError(f"SOS payload version {version} is not {VERSION} (update the app)")
    if flags & ~(_CANCEL | _HAS_POSITION):
        raise SosDecodeError(f"unknown SOS flags {flags:#04x}")
    rest = data[_HEAD.size :]
    position = None
    if flags & _HAS_POSITION:
        try:
            position = decode_position(rest[:POSITION_LEN])
        except PositionDecodeError as exc:
            raise SosDecodeError(f"SOS position: {exc}") from None
        rest = rest[POSITION_LEN:]
    try:
        text = rest.decode()
        return SosRecord(number, raised, bool(flags & _CANCEL), position, text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SosDecodeError(f"SOS payload: {exc}") from None


def encode_sos_ack(ack: SosAck) -> bytes:
    return _ACK_HEAD.pack(VERSION, ack.number) + _cut(ack.text, MAX_ACK_TEXT).encode()


def decode_sos_ack(data: bytes) -> SosAck:
    if len(data) < _ACK_HEAD.size:
        raise SosDecodeError(f"an SOS acknowledgement is at least {_ACK_HEAD.size} bytes, got {len(data)}")
    version, number = _ACK_HEAD.unpack_from(data)
    if version != VERSION:
        raise SosDecodeError(f"SOS acknowledgement version {version} is not {VERSION}")
    try:
        return SosAck(number, data[_ACK_HEAD.size :].decode())
    except UnicodeDecodeError as exc:
        raise SosDecodeError(f"SOS acknowledgement text: {exc}") from None
