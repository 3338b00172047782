"""Authenticated records after the IP link handshake, and the batch of frames a DATA record carries.

Every pynng message after the handshake is one record::

    kind(1) | counter(8, big endian) | ChaCha20-Poly1305(body), associated data = kind | counter

Each direction has its own key and counts from 0. The receiver accepts only the next counter, so a
record that is injected, altered, replayed, reordered or dropped is refused with
:class:`RecordError`. This holds on plain ``tcp://`` as well as on ``tls+tcp://``. TCP delivers in
order, but nng does not deliver everything: a listener's polyamorous Pair1 socket discards a record
when the connection's send queue is full. An authentic record after such a gap raises
:class:`RecordsLost`: every later record would be refused too, so the session ends at once.

The DATA bodies of one direction, concatenated, are a stream of link frames, each
``length(4, big endian) | frame``. A record carries whatever slice of that stream the sender's window
allows: several small frames (pynng's asyncio path costs ~200 µs per message, far more than packing
does) or part of a large one, so a record never has to be larger than the path can carry in about a
second. :class:`FrameReassembler` cuts the stream back into frames, strictly and with bounded memory.

ACK records (version 2 of the link) acknowledge records cumulatively: the body is the number of the
peer's records received so far, which lets the sender bound what it has in flight
(:mod:`relay.links.ip_window`).
"""

from __future__ import annotations

import struct
from collections import deque
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
_PING = struct.Struct(">QI")  # ping id, the sender's keepalive interval in ms
# The slowest keepalive a peer may ask for: its silence is believed for three of them, and its routes
# live three of them (a phone on battery asks for 60 s), so one peer cannot stretch either for days.
MAX_KEEPALIVE_S = 600.0
_ACK = struct.Struct(">Q")
_MAX_COUNTER = (1 << 64) - 1


class RecordError(LinkError):
    """A record after the handshake was not authentic, not in sequence or malformed."""


class RecordsLost(RecordError):
    """An authentic record came with a counter past the next one: the peer's records between were
    lost on the way (nng dropped them), so this session can never open another record."""


class RecordKind(IntEnum):
    DATA = 1  # a batch of frames
    PING = 2  # keepalive; the body is a ping id and the sender's keepalive interval, echoed in PONG
    PONG = 3
    ACK = 4  # the body is the count of the peer's records received so far (cumulative)


class SessionCipher:
    """Seals outgoing and opens incoming records of one session; holds the two counters."""

    def __init__(self, send_key: bytes, receive_key: bytes) -> None:
        if len(send_key) != 32 or len(receive_key) != 32:
            raise ValueError("session keys must be 32 bytes")
        self._send = ChaCha20Poly1305(send_key)
        self._receive = ChaCha20Poly1305(receive_key)
        self._send_counter = 0
        self._receive_counter = 0

    @property
    def sealed(self) -> int:
        """Records sealed so far; the next one gets this counter."""
        return self._send_counter

    @property
    def opened(self) -> int:
        """Records opened so far: what an ACK tells the peer."""
        return self._receive_counter

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
        header = record[: _HEADER.size]
        expected = self._receive_counter
        try:
            body = self._receive.decrypt(b"\x00\x00\x00\x00" + header[1:], record[_HEADER.size :], header)
        except InvalidTag as exc:
            if counter != expected:
                raise RecordError(
                    f"record counter {counter}, expected {expected} (replay or injection)"
                ) from exc
            raise RecordError("record failed authentication (injected or altered)") from exc
        if counter > expected:  # authentic under its own counter: the records between were lost
            raise RecordsLost(
                f"record counter {counter}, expected {expected}: {counter - expected} lost on the way"
            )
        if counter < expected:
            raise RecordError(f"record counter {counter}, expected {expected} (replay or injection)")
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
    """Split a complete run of the stream into frames, strictly: no partial frame may be left over."""
    if len(body) > MAX_BODY:
        raise RecordError(f"batch of {len(body)} bytes exceeds {MAX_BODY}")
    if not body:
        raise RecordError("empty batch")
    reassembler = FrameReassembler()
    frames = reassembler.feed(body)
    if reassembler.pending:
        raise RecordError(f"batch truncated: {reassembler.pending} bytes of an unfinished frame")
    return frames


class FrameReassembler:
    """Cuts the DATA stream of one direction back into frames, whatever slices the records carried.

    It holds at most one unfinished frame (``length(4) | frame``, so at most ``4 + MAX_FRAME`` bytes):
    a length outside 1..MAX_FRAME is refused as soon as its 4 bytes have arrived.
    """

    def __init__(self) -> None:
        self._pending = b""

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held now."""
        return len(self._pending)

    def feed(self, chunk: bytes) -> list[bytes]:
        """Return the frames ``chunk`` completes; RecordError if the stream is malformed."""
        if not chunk:
            raise RecordError("empty DATA record")
        if len(chunk) > MAX_BODY:
            raise RecordError(f"DATA record body of {len(chunk)} bytes exceeds {MAX_BODY}")
        data = self._pending + chunk if self._pending else chunk
        frames: list[bytes] = []
        offset, size = 0, len(data)
        while size - offset >= _FRAME_LEN.size:
            (length,) = _FRAME_LEN.unpack_from(data, offset)
            if not 0 < length <= MAX_FRAME:
                raise RecordError(f"frame length {length} outside 1..{MAX_FRAME}")
            end = offset + _FRAME_LEN.size + length
            if end > size:
                break
            frames.append(data[offset + _FRAME_LEN.size : end])
            offset = end
        self._pending = data[offset:]
        return frames


class FrameQueue:
    """Frames waiting to be sent, seen as the DATA stream: ``take`` cuts it into records of any size.

    A frame can span records; frames not yet started can be handed to another connection. A FLASH
    frame goes ahead of the frames not yet started, behind the FLASH frames that went ahead before it.
    """

    def __init__(self) -> None:
        self._frames: deque[bytes] = deque()
        self._started = b""  # the rest of a frame (length prefix included) a record began to carry
        self.bytes = 0  # stream bytes waiting, length prefixes included
        self._ahead = 0  # frames at the front of ``_frames`` that went ahead
        self.ahead_bytes = 0  # their stream bytes

    def __len__(self) -> int:
        return len(self._frames) + (1 if self._started else 0)

    def append(self, frame: bytes, ahead: bool = False) -> None:
        if not 0 < len(frame) <= MAX_FRAME:
            raise RecordError(f"frame of {len(frame)} bytes outside 1..{MAX_FRAME}")
        encoded = _FRAME_LEN.size + len(frame)
        if ahead:
            self._frames.insert(self._ahead, frame)
            self._ahead += 1
            self.ahead_bytes += encoded
        else:
            self._frames.append(frame)
        self.bytes += encoded

    def take(self, limit: int) -> tuple[bytes, int]:
        """The next ``limit`` bytes of the stream (fewer if less waits) and how many frames they finish."""
        parts: list[bytes] = []
        size = finished = 0
        if self._started:
            parts.append(self._started[:limit])
            self._started = self._started[limit:]
            size = len(parts[0])
            finished = 0 if self._started else 1
        while self._frames and size < limit:
            frame = self._frames.popleft()
            encoded = _FRAME_LEN.size + len(frame)
            if self._ahead:
                self._ahead -= 1
                self.ahead_bytes -= encoded
            if size + encoded <= limit:
                parts += (_FRAME_LEN.pack(len(frame)), frame)
                size += encoded
                finished += 1
            else:
                whole = _FRAME_LEN.pack(len(frame)) + frame
                parts.append(whole[: limit - size])
                self._started = whole[limit - size :]
                size = limit
        self.bytes -= size
        return b"".join(parts), finished

    def take_unstarted(self) -> tuple[list[bytes], int]:
        """Remove and return the frames no record has begun to carry, and how many of them (at
        the front) went ahead."""
        frames, ahead = list(self._frames), self._ahead
        self._frames.clear()
        self.bytes = len(self._started)
        self._ahead = self.ahead_bytes = 0
        return frames, ahead


def encode_ping(ping_id: int, keepalive_interval: float) -> bytes:
    """The interval tells the peer how often this side pings (see :mod:`relay.links.ip_session`)."""
    return _PING.pack(ping_id, min(round(keepalive_interval * 1000), 0xFFFFFFFF))


def encode_ack(records_received: int) -> bytes:
    return _ACK.pack(records_received)


def decode_ack(body: bytes) -> int:
    if len(body) != _ACK.size:
        raise RecordError(f"ack body of {len(body)} bytes, expected {_ACK.size}")
    (received,) = _ACK.unpack(body)
    return int(received)


def decode_ping(body: bytes) -> tuple[int, float]:
    """The ping id and the sender's keepalive interval in seconds, at most :data:`MAX_KEEPALIVE_S`."""
    if len(body) != _PING.size:
        raise RecordError(f"ping body of {len(body)} bytes, expected {_PING.size}")
    ping_id, interval_ms = _PING.unpack(body)
    if interval_ms == 0:
        raise RecordError("ping announces a keepalive interval of 0 ms")
    return int(ping_id), min(interval_ms / 1000, MAX_KEEPALIVE_S)
