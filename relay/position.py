"""A unit's position report: the payload of a ``Kind.POSITION`` bundle, sized for one LoRa frame.

A responder's node reports where it is; the command post keeps the last fix per unit. Positions
travel at ``PRIORITY`` with a short lifetime (a fix a quarter of an hour old says little about
where a moving unit is now), so the payload is small and fixed-size, 16 bytes, big endian::

    bytes  0-3    latitude, int32, 1e-7 degrees (about 1 cm), |lat| <= 90
    bytes  4-7    longitude, int32, 1e-7 degrees, |lon| <= 180
    bytes  8-11   fix time, uint32, seconds since the Mesh112 epoch (2024-01-01T00:00:00Z)
    bytes 12-13   horizontal accuracy, uint16, whole metres rounded up; 0xFFFF: not reported
    bytes 14-15   altitude, int16, whole metres; -32768: not reported

There is no version byte: the layout is defined by its exact length, so a future layout with
another length is refused by this decoder rather than misread. Decoding is strict (exact length,
ranges) and raises :class:`PositionDecodeError` naming the field, because the payload comes off
the air from another node and may be damaged or hostile.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from relay.bundle import EPOCH_UNIX, MAX_U32

POSITION_LEN = 16
POSITION_LIFETIME_S = 15 * 60  # a stale position is worth little; a quarter of an hour, then it expires
MAX_FIX_AHEAD_S = 600  # a fix further in the future than this comes from a wrong clock and is refused
MAX_ACCURACY_M = 0xFFFE
MAX_ALTITUDE_M = 0x7FFF
_NO_ACCURACY = 0xFFFF
_NO_ALTITUDE = -0x8000
_SCALE = 10_000_000  # 1e-7 degrees
_LAYOUT = struct.Struct(">iiIHh")


class InvalidPositionError(ValueError):
    """A position that cannot exist (latitude beyond a pole, NaN, fix time outside the encodable range)."""


class PositionDecodeError(ValueError):
    """Bytes that are not a valid position payload; the message names the field and what was expected."""


@dataclass(frozen=True, slots=True)
class Position:
    """One fix: where the unit was (degrees, WGS 84), when (Unix seconds) and how sure its receiver was."""

    lat: float
    lon: float
    fixed: int
    accuracy_m: int | None = None
    altitude_m: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lat) and -90.0 <= self.lat <= 90.0):
            raise InvalidPositionError(f"latitude {self.lat} is not between -90 and 90 degrees")
        if not (math.isfinite(self.lon) and -180.0 <= self.lon <= 180.0):
            raise InvalidPositionError(f"longitude {self.lon} is not between -180 and 180 degrees")
        if not EPOCH_UNIX <= self.fixed <= EPOCH_UNIX + MAX_U32:
            raise InvalidPositionError(
                f"fix time {self.fixed} is outside {EPOCH_UNIX}..{EPOCH_UNIX + MAX_U32} (Unix seconds); "
                "is the clock set?"
            )
        if self.accuracy_m is not None and not 0 <= self.accuracy_m <= MAX_ACCURACY_M:
            raise InvalidPositionError(f"accuracy {self.accuracy_m} m is not between 0 and {MAX_ACCURACY_M}")
        if self.altitude_m is not None and not -MAX_ALTITUDE_M <= self.altitude_m <= MAX_ALTITUDE_M:
            raise InvalidPositionError(
                f"altitude {self.altitude_m} m is not between {-MAX_ALTITUDE_M} and {MAX_ALTITUDE_M}"
            )

    @classmethod
    def from_fix(
        cls,
        lat: float,
        lon: float,
        fixed: float,
        accuracy_m: float | None = None,
        altitude_m: float | None = None,
    ) -> Position:
        """A position from a receiver's readings: accuracy rounded up (never claim a better fix than
        reported), altitude and time rounded to whole units."""
        if accuracy_m is not None and not math.isfinite(accuracy_m):
            raise InvalidPositionError(f"accuracy {accuracy_m} is not a number of metres")
        if altitude_m is not None and not math.isfinite(altitude_m):
            raise InvalidPositionError(f"altitude {altitude_m} is not a number of metres")
        if not math.isfinite(fixed):
            raise InvalidPositionError(f"fix time {fixed} is not a time")
        return cls(
            lat,
            lon,
            int(fixed),
            None if accuracy_m is None else math.ceil(accuracy_m),
            None if altitude_m is None else round(altitude_m),
        )


def check_not_ahead(position: Position, now: float) -> None:
    """Refuse a fix from a clock running far ahead: the command post keeps the newest fix per unit,
    so such a fix would hide every true one after it until its time came."""
    ahead = position.fixed - now
    if ahead > MAX_FIX_AHEAD_S:
        raise InvalidPositionError(f"fix time is {ahead:.0f} s in the future; check the device's clock")


def encode_position(position: Position) -> bytes:
    return _LAYOUT.pack(
        round(position.lat * _SCALE),
        round(position.lon * _SCALE),
        position.fixed - EPOCH_UNIX,
        _NO_ACCURACY if position.accuracy_m is None else position.accuracy_m,
        _NO_ALTITUDE if position.altitude_m is None else position.altitude_m,
    )


def decode_position(data: bytes) -> Position:
    """The position in ``data``, or :class:`PositionDecodeError` saying which field is wrong."""
    if len(data) != POSITION_LEN:
        raise PositionDecodeError(
            f"a position payload is exactly {POSITION_LEN} bytes, got {len(data)} "
            "(a different layout, or damaged in transit)"
        )
    lat, lon, fixed, accuracy, altitude = _LAYOUT.unpack(data)
    if abs(lat) > 90 * _SCALE:
        raise PositionDecodeError(f"latitude {lat / _SCALE} is not between -90 and 90 degrees")
    if abs(lon) > 180 * _SCALE:
        raise PositionDecodeError(f"longitude {lon / _SCALE} is not between -180 and 180 degrees")
    return Position(
        lat / _SCALE,
        lon / _SCALE,
        EPOCH_UNIX + fixed,
        None if accuracy == _NO_ACCURACY else accuracy,
        None if altitude == _NO_ALTITUDE else altitude,
    )
