"""The app's position from gpsd: a real gpsd started by gpsfake replays an NMEA log (a walk near the
Old Town Square); the app's gpsd reader (mobile/gps.py) follows the fixes it pushes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import operator
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from system_tools import require_tool

from field.harness import free_port_base
from mobile.gps import follow_gpsd, parse_tpv
from mobile.runtime import FixedPosition
from mobile.settings import AppSettings
from mobile.state import AppState

WALK = [(50.0875 + i * 0.0001, 14.4213 + i * 0.0002) for i in range(20)]


def _nmea(body: str) -> str:
    checksum = functools.reduce(operator.xor, body.encode(), 0)
    return f"${body}*{checksum:02X}\r\n"


def _degrees(value: float, hemispheres: str, width: int) -> tuple[str, str]:
    hemisphere = hemispheres[0] if value >= 0 else hemispheres[1]
    value = abs(value)
    whole = int(value)
    return f"{whole:0{width}d}{(value - whole) * 60:07.4f}", hemisphere


def nmea_log(path: Path) -> None:
    lines = []
    for second, (lat, lon) in enumerate(WALK):
        stamp = f"1200{second:02d}.00"
        la, ns = _degrees(lat, "NS", 2)
        lo, ew = _degrees(lon, "EW", 3)
        lines.append(_nmea(f"GPRMC,{stamp},A,{la},{ns},{lo},{ew},1.2,45.0,051226,,,A"))
        lines.append(_nmea(f"GPGGA,{stamp},{la},{ns},{lo},{ew},1,09,0.9,240.0,M,45.0,M,,"))
    path.write_text("".join(lines))


@contextlib.contextmanager
def gpsfake(log: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    binary = require_tool("gpsfake", "gpsd-clients")
    require_tool("gpsd", "gpsd")
    process = subprocess.Popen(
        [binary, "-q", "-c", "0.1", "-P", str(port), str(log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # gpsfake starts gpsd: both are stopped through the group
    )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_parse_tpv() -> None:
    fix = parse_tpv(b'{"class":"TPV","mode":3,"lat":50.1,"lon":14.2,"eph":7.5,"epx":3.1}')
    assert fix == (50.1, 14.2, 7.5)
    assert parse_tpv(b'{"class":"TPV","mode":1}') is None  # no fix
    assert parse_tpv(b'{"class":"SKY"}') is None
    assert parse_tpv(b"not json") is None


async def test_follows_gpsd_replaying_an_nmea_log(tmp_path: Path) -> None:
    log = tmp_path / "walk.nmea"
    nmea_log(log)
    port = free_port_base(1)
    position = FixedPosition(AppSettings())
    state = AppState()
    seen: list[tuple[float, float]] = []
    state.listen(lambda what: seen.append(state.position) if what == "units" and state.position else None)
    with gpsfake(log, port):
        reader = asyncio.create_task(follow_gpsd(f"127.0.0.1:{port}", position, state))
        try:
            async with asyncio.timeout(30):
                while len(seen) < 3:
                    await asyncio.sleep(0.05)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    for lat, lon in seen:
        assert any(abs(lat - a) < 1e-6 and abs(lon - b) < 1e-6 for a, b in WALK), (lat, lon)
    fix = position()
    assert fix is not None and any(abs(fix.lat - a) < 1e-6 for a, _ in WALK)
    if len(set(seen)) < 2:
        pytest.fail(f"gpsd pushed the same fix only: {seen}")
