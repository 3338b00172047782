"""Position from gpsd (laptops, vehicle relays): its JSON protocol over TCP, one line per report.

``?WATCH={"enable":true,"json":true}`` makes gpsd push TPV reports as fixes arrive; nothing is polled.
A lost gpsd is retried with a back-off, and the last fix stays until a new one comes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Protocol

from mobile.state import AppState

log = logging.getLogger("mesh112.mobile.gps")

WATCH = b'?WATCH={"enable":true,"json":true}\n'
RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0)


class FixSink(Protocol):
    fix: tuple[float, float, float] | None


def parse_tpv(line: bytes) -> tuple[float, float, float] | None:
    """(lat, lon, horizontal accuracy m or 0) from a TPV report with a 2D/3D fix, else None."""
    try:
        report: Any = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(report, dict) or report.get("class") != "TPV" or int(report.get("mode", 0)) < 2:
        return None
    lat, lon = report.get("lat"), report.get("lon")
    if not isinstance(lat, int | float) or not isinstance(lon, int | float):
        return None
    errors = [report.get(k) for k in ("eph", "epx", "epy")]
    accuracy = max((e for e in errors if isinstance(e, int | float)), default=0.0)
    return float(lat), float(lon), float(accuracy)


async def follow_gpsd(where: str, sink: FixSink, state: AppState) -> None:
    host, _, port = where.rpartition(":")
    attempt = 0
    while True:
        try:
            reader, writer = await asyncio.open_connection(host or "127.0.0.1", int(port or 2947))
        except OSError as exc:
            delay = RETRY_S[min(attempt, len(RETRY_S) - 1)]
            log.info("gpsd at %s not reachable (%s); again in %.0f s", where, exc, delay)
            attempt += 1
            await asyncio.sleep(delay)
            continue
        attempt = 0
        try:
            writer.write(WATCH)
            await writer.drain()
            while line := await reader.readline():
                fix = parse_tpv(line)
                if fix is not None:
                    sink.fix = fix
                    state.own_position(fix[0], fix[1])
        finally:
            writer.close()
        await asyncio.sleep(RETRY_S[0])
