"""The Meshtastic stream-API framing: ``0x94 0xC3``, a 16-bit big-endian length, then a protobuf.

A sans-I/O decoder with the firmware's rules: frames longer than 512 bytes are dropped and the
decoder resynchronises on the next ``0x94``; bytes outside frames (the library's 32-byte wake-up of
``0xC3``, device log text) are skipped. The buffer never holds more than one frame.
"""

from __future__ import annotations

START1 = 0x94
START2 = 0xC3
HEADER_LEN = 4
MAX_FRAME_PAYLOAD = 512


class FrameTooLarge(ValueError):
    """A payload to encode exceeds the stream API's 512-byte limit."""


def encode_frame(payload: bytes) -> bytes:
    """Wrap one protobuf for the stream; FrameTooLarge if it would be refused by the other side."""
    if len(payload) > MAX_FRAME_PAYLOAD:
        raise FrameTooLarge(
            f"stream frame of {len(payload)} bytes exceeds the {MAX_FRAME_PAYLOAD}-byte limit"
        )
    return bytes((START1, START2, len(payload) >> 8, len(payload) & 0xFF)) + payload


class StreamDecoder:
    """Feed it received bytes; it returns the complete frame payloads found so far."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.skipped_bytes = 0
        self.oversize_frames = 0

    def feed(self, data: bytes) -> list[bytes]:
        frames: list[bytes] = []
        self._buf.extend(data)
        while self._buf:
            start = self._buf.find(START1)
            if start < 0:
                self.skipped_bytes += len(self._buf)
                self._buf.clear()
                break
            if start:
                self.skipped_bytes += start
                del self._buf[:start]
            if len(self._buf) < 2:
                break
            if self._buf[1] != START2:
                self.skipped_bytes += 1
                del self._buf[:1]
                continue
            if len(self._buf) < HEADER_LEN:
                break
            length = (self._buf[2] << 8) | self._buf[3]
            if length > MAX_FRAME_PAYLOAD:
                self.oversize_frames += 1
                del self._buf[:1]
                continue
            if len(self._buf) < HEADER_LEN + length:
                break
            frames.append(bytes(self._buf[HEADER_LEN : HEADER_LEN + length]))
            del self._buf[: HEADER_LEN + length]
        return frames
