"""The position payload: round trips, exact layout, and a strict decoder for bytes off the air.

A short fuzz pass runs by default; ``make fuzz`` (``-m long -k fuzz``) runs the long one.
"""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.bundle import EPOCH_UNIX, MAX_U32
from relay.position import (
    POSITION_LEN,
    InvalidPositionError,
    Position,
    PositionDecodeError,
    decode_position,
    encode_position,
)

SHORT = settings(max_examples=500, deadline=None)
LONG = settings(max_examples=100_000, deadline=None)

positions = st.builds(
    Position,
    lat=st.floats(-90, 90, allow_nan=False),
    lon=st.floats(-180, 180, allow_nan=False),
    fixed=st.integers(EPOCH_UNIX, EPOCH_UNIX + MAX_U32),
    accuracy_m=st.none() | st.integers(0, 0xFFFE),
    altitude_m=st.none() | st.integers(-0x7FFF, 0x7FFF),
)


@SHORT
@given(positions)
def test_round_trip_keeps_every_field_to_the_encoded_precision(position: Position) -> None:
    data = encode_position(position)
    assert len(data) == POSITION_LEN
    decoded = decode_position(data)
    assert math.isclose(decoded.lat, position.lat, abs_tol=0.6e-7)
    assert math.isclose(decoded.lon, position.lon, abs_tol=0.6e-7)
    assert (decoded.fixed, decoded.accuracy_m, decoded.altitude_m) == (
        position.fixed,
        position.accuracy_m,
        position.altitude_m,
    )
    assert encode_position(decoded) == data  # decoding is the identity on what it decoded


def test_known_layout() -> None:
    position = Position(52.5200066, 13.404954, EPOCH_UNIX + 1000, accuracy_m=5, altitude_m=34)
    assert encode_position(position) == struct.pack(">iiIHh", 525200066, 134049540, 1000, 5, 34)
    unknown = Position(-33.8688, 151.2093, EPOCH_UNIX)
    assert encode_position(unknown)[12:] == b"\xff\xff\x80\x00"
    assert decode_position(encode_position(unknown)) == unknown


def test_extremes_round_trip_exactly() -> None:
    for lat, lon in ((90.0, 180.0), (-90.0, -180.0), (0.0, 0.0)):
        position = Position(lat, lon, EPOCH_UNIX + MAX_U32, 0xFFFE, -0x7FFF)
        assert decode_position(encode_position(position)) == position


def test_from_fix_rounds_accuracy_up_and_refuses_non_numbers() -> None:
    position = Position.from_fix(48.1, 11.5, EPOCH_UNIX + 10.9, accuracy_m=3.2, altitude_m=519.6)
    assert (position.fixed, position.accuracy_m, position.altitude_m) == (EPOCH_UNIX + 10, 4, 520)
    for bad in (
        {"accuracy_m": math.inf},
        {"altitude_m": math.nan},
        {"fixed": math.nan},
        {"lat": math.nan},
        {"lat": 90.0001},
        {"lon": -180.5},
        {"fixed": 0.0},
        {"accuracy_m": -1.0},
        {"accuracy_m": 70_000.0},
        {"altitude_m": 40_000.0},
    ):
        readings: dict[str, float] = {"lat": 1.0, "lon": 2.0, "fixed": EPOCH_UNIX + 5.0, **bad}
        with pytest.raises(InvalidPositionError):
            Position.from_fix(**readings)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"", "exactly 16 bytes, got 0"),
        (bytes(15), "exactly 16 bytes, got 15"),
        (bytes(17), "exactly 16 bytes, got 17"),
        (bytes(4096), "exactly 16 bytes, got 4096"),
        (struct.pack(">iiIHh", 900_000_001, 0, 0, 0, 0), "latitude"),
        (struct.pack(">iiIHh", -(2**31), 0, 0, 0, 0), "latitude"),
        (struct.pack(">iiIHh", 0, 1_800_000_001, 0, 0, 0), "longitude"),
        (struct.pack(">iiIHh", 0, -(2**31), 0, 0, 0), "longitude"),
    ],
)
def test_hostile_payloads_are_refused_with_the_field_named(data: bytes, field: str) -> None:
    with pytest.raises(PositionDecodeError, match=field):
        decode_position(data)


def _decode_or_refuse(data: bytes) -> None:
    try:
        position = decode_position(data)
    except PositionDecodeError:
        assert (
            len(data) != POSITION_LEN
            or abs(struct.unpack(">i", data[:4])[0]) > 900_000_000
            or abs(struct.unpack(">i", data[4:8])[0]) > 1_800_000_000
        )
        return
    assert -90 <= position.lat <= 90 and -180 <= position.lon <= 180
    assert encode_position(position) == data


@SHORT
@given(st.binary(max_size=40))
def test_fuzz_decode_position(data: bytes) -> None:
    _decode_or_refuse(data)


@SHORT
@given(st.binary(min_size=POSITION_LEN, max_size=POSITION_LEN))
def test_fuzz_decode_position_exact_length(data: bytes) -> None:
    _decode_or_refuse(data)


@pytest.mark.long
@LONG
@given(st.binary(min_size=POSITION_LEN, max_size=POSITION_LEN) | st.binary(max_size=64))
def test_fuzz_decode_position_long(data: bytes) -> None:
    _decode_or_refuse(data)
