"""Position reports wait for a new fix or the still-standing report; nothing polls (issue 17)."""

from __future__ import annotations

import asyncio
import time

import pytest

from mobile import runtime
from mobile.runtime import FixedPosition, report_position
from mobile.settings import AppSettings


class Reports:
    """Records when the app reported its position (the Responder's send_position)."""

    def __init__(self, position: FixedPosition) -> None:
        self.position = position
        self.at: list[float] = []

    async def send_position(self) -> None:
        assert self.position() is not None
        self.at.append(time.monotonic())


async def test_reports_at_start_when_still_and_when_moved_and_sleeps_between(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "POSITION_STILL_S", 0.6)
    monkeypatch.setattr(runtime, "POSITION_CHECK_S", 0.3)
    position = FixedPosition(AppSettings(position=(50.0875, 14.4213)))
    reports = Reports(position)
    started = time.monotonic()
    task = asyncio.create_task(report_position(reports, position))  # type: ignore[arg-type]
    try:
        await asyncio.sleep(0.9)
        assert len(reports.at) == 2  # at once, then standing still 0.6 s later: nothing between
        assert reports.at[1] - reports.at[0] == pytest.approx(0.6, abs=0.15)
        position.fix = (50.0875, 14.4213, 0.0)  # the same place pushed again: looked at, not sent
        await asyncio.sleep(0.05)
        assert len(reports.at) == 2
        await asyncio.sleep(0.4)  # "a minute" (0.3 s here) since the last report passed
        position.fix = (50.0885, 14.4213, 0.0)  # 111 m north: reported at once
        await asyncio.sleep(0.1)
        assert len(reports.at) == 3 and reports.at[2] - started < 1.6
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_without_a_fix_nothing_is_sent_until_one_comes() -> None:
    position = FixedPosition(AppSettings())
    reports = Reports(position)
    task = asyncio.create_task(report_position(reports, position))  # type: ignore[arg-type]
    try:
        await asyncio.sleep(0.2)
        assert reports.at == []
        position.fix = (50.0875, 14.4213, 5.0)  # gpsd's first fix
        await asyncio.sleep(0.1)
        assert len(reports.at) == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
