"""A tiny explicit binary encoding for certificates, revocation lists and key messages.

Big-endian fixed-width integers and length-prefixed fields. The reader checks every length against
what is left and against the caller's limit, and raises :class:`DecodeError` naming the field, so
hostile bytes never reach a constructor half-parsed.
"""

from __future__ import annotations

import struct

from crypto.errors import DecodeError


def u8(value: int) -> bytes:
    return struct.pack(">B", value)


def u16(value: int) -> bytes:
    return struct.pack(">H", value)


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


def short_bytes(value: bytes, field: str, limit: int = 255) -> bytes:
    """One length byte, then the bytes."""
    if len(value) > limit:
        raise ValueError(f"{field} is {len(value)} bytes, at most {limit} allowed")
    return u8(len(value)) + value


def short_text(value: str, field: str, limit: int = 255) -> bytes:
    return short_bytes(value.encode(), field, limit)


class Reader:
    """Reads fields from ``data`` front to back; :meth:`finish` insists nothing is left over."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str, max_len: int) -> None:
        if len(data) > max_len:
            raise DecodeError(f"{what} is {len(data)} bytes, at most {max_len} allowed")
        self._data = bytes(data)
        self._pos = 0
        self._what = what

    def take(self, n: int, field: str) -> bytes:
        if n > len(self._data) - self._pos:
            raise DecodeError(f"{self._what} is truncated in {field}")
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def u8(self, field: str) -> int:
        return int(self.take(1, field)[0])

    def u16(self, field: str) -> int:
        value: int = struct.unpack(">H", self.take(2, field))[0]
        return value

    def u32(self, field: str) -> int:
        value: int = struct.unpack(">I", self.take(4, field))[0]
        return value

    def short_bytes(self, field: str, limit: int = 255) -> bytes:
        n = self.u8(field)
        if n > limit:
            raise DecodeError(f"{self._what} field {field} is {n} bytes, at most {limit} allowed")
        return self.take(n, field)

    def short_text(self, field: str, limit: int = 255) -> str:
        raw = self.short_bytes(field, limit)
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise DecodeError(f"{self._what} field {field} is not UTF-8") from None

    @property
    def consumed(self) -> bytes:
        """Everything read so far (what a trailing signature covers)."""
        return self._data[: self._pos]

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def finish(self) -> None:
        if self._pos != len(self._data):
            raise DecodeError(f"{self._what} has {len(self._data) - self._pos} unexpected trailing bytes")
