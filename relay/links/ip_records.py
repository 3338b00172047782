"""Authenticated records after the IP link handshake, and the batch of frames a DATA record carries.

Every pynng message after the handshake is one record::

    kind(1) | counter(8, big endian) | ChaCha20-Poly1305(body), associated data = kind | counter

Each direction has its own key and counts from 0. The receiver accepts only the next counter, so a
record that is injected, altered, replayed, reordered or dropped is refused with
:class:`RecordError` (pynng over TCP delivers in order, so a gap can only be tampering). This holds
on plain ``tcp://`` as well as on ``tls+tcp://``.

A DATA body packs several link frames, each ``length(4, big endian) | frame``, so one socket send
carries many frames: pynng's asyncio path costs ~200 µs per message, far more than packing does.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from enum import IntEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from relay.links.base import LinkError

MAX_FRAME = 64 * 1024  # the link MTU
BATCH_TARGET = 64 * 1024  # pack frames until a batch would exceed this (a batch holds at least one frame)
MAX_BODY = BATCH_TARGET + MAX_FRAME + 4  # a full batch plus one more frame at most
_HEADER = struct.Struct(">BQ")
_TAG_LEN = 16
MAX_RECORD = _HEADER.size + MAX_BODY + _TAG_LEN
_FRAME_LEN = struct.Struct(">I")
_PING = struct.Struct(">Q")
_MAX_COUNTER = (1 << 64) - 1


class RecordError(LinkError):
    """A record after the handshake was not authentic, not in sequence or malformed."""


class RecordKind(IntEnum):
    DATA = 1  # a batch of frames
    PING = 2  # keepalive; the body is an 8-byte ping id, echoed in PONG
    PONG = 3


class SessionCipher:
    """Seals outgoing and opens incoming records of one session; holds the two counters."""

    def __init__(self, send_key: bytes, receive_key: bytes) -> None:
        if len(send_key) != 32 or len(receive_key) != 32:
            raise ValueError("session keys must be 32 bytes")
        self._send = ChaCha20Poly1305(send_key)
        self._receive = ChaCha20Poly1305(receive_key)
        self._send_counter = 0
        self._receive_counter = 0

    def seal(self, kind: RecordKind, body: bytes) -> bytes:
        if len(body) > MAX_BODY:
            raise RecordError(f"record body of {len(body)} bytes exceeds {MAX_BODY}")
        if self._send_counter == _MAX_COUNTER:
            raise RecordError("session counter exhausted; reconnect for fresh keys")
        header = _HEADER.pack(kind, self._send_counter)
        nonce = b"\x00\x00\x00\x00" + header[1:]
        self._send_counter += 1
        return header + self._send.encrypt(nonce, body, header)

    def open(self, record: bytes) -> tuple[RecordKind, bytes]:
        """Return (kind, body) or raise RecordError; a refused record leaves the counter unchanged."""
        if len(record) > MAX_RECORD:
            raise RecordError(f"record of {len(record)} bytes exceeds {MAX_RECORD}")
        if len(record) < _HEADER.size + _TAG_LEN:
            raise RecordError(f"record of {len(record)} bytes is shorter than header and tag")
        kind_value, counter = _HEADER.unpack_from(record)
        if kind_value not in RecordKind._value2member_map_:
            raise RecordError(f"unknown record kind {kind_value}")
        if counter != self._receive_counter:
            raise RecordError(
                f"record counter {counter}, expected {self._receive_counter} (replay or injection)"
            )
        header = record[: _HEADER.size]
        try:
            body = self._receive.decrypt(b"\x00\x00\x00\x00" + header[1:], record[_HEADER.size :], header)
        except InvalidTag as exc:
            raise RecordError("record failed authentication (injected or altered)") from exc
        self._receive_counter += 1
        return RecordKind(kind_value), body


def pack_frames(frames: Sequence[bytes]) -> bytes:
    """Pack frames into one DATA body (the caller keeps it within BATCH_TARGET, see ``take_batch``)."""
    parts: list[bytes] = []
    for frame in frames:
        if not 0 < len(frame) <= MAX_FRAME:
            raise RecordError(f"frame of {len(frame)} bytes outside 1..{MAX_FRAME}")
        parts.append(_FRAME_LEN.pack(len(frame)))
        parts.append(frame)
    return b"".join(parts)


def unpack_frames(body: bytes) -> list[bytes]:
    """Split a DATA body into frames, strictly: no empty frame, none over the MTU, no trailing bytes."""
    if len(body) > MAX_BODY:
        raise RecordError(f"batch of {len(body)} bytes exceeds {MAX_BODY}")
    if not body:
        raise RecordError("empty batch")
    frames: list[bytes] = []
    offset = 0
    while offset < len(body):
        if len(body) - offset < _FRAME_LEN.size:
            raise RecordError("batch truncated inside a frame length")
        (length,) = _FRAME_LEN.unpack_from(body, offset)
        offset += _FRAME_LEN.size
        if not 0 < length <= MAX_FRAME:
            raise RecordError(f"frame length {length} outside 1..{MAX_FRAME}")
        if len(body) - offset < length:
            raise RecordError(f"batch truncated: frame of {length} bytes, {len(body) - offset} left")
        frames.append(body[offset : offset + length])
        offset += length
    return frames


def batch_size(frames: Sequence[bytes]) -> int:
    return sum(_FRAME_LEN.size + len(frame) for frame in frames)


def encode_ping(ping_id: int) -> bytes:
    return _PING.pack(ping_id)


def decode_ping(body: bytes) -> int:
    if len(body) != _PING.size:
        raise RecordError(f"ping body of {len(body)} bytes, expected {_PING.size}")
    (ping_id,) = _PING.unpack(body)
    return int(ping_id)
