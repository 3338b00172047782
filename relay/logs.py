"""Log output for operators: ISO 8601 UTC timestamps, JSON lines on request, floods folded into counts.

A hostile transmitter can make a node log one warning per frame it refuses (67,000 lines in 47 s in
the field test), which buries everything else and fills the disk. :class:`RepeatFilter` lets the
same warning (same logger, same message template) through at most once per window and says how
many were held back on the next one that passes.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

REPEAT_WINDOW_S = 10.0
REPEAT_BURST = 8  # lines of one template let through per window before the rest are counted
_MAX_KEYS = 4096  # distinct templates remembered; beyond this, stale ones are forgotten
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def iso_time(created: float) -> str:
    """``2026-12-05T20:34:13.123Z``: UTC with milliseconds, sortable, unambiguous across time zones."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return iso_time(record.created)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra=`` fields appear as keys of their own."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": iso_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD and k not in entry})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


@dataclass
class _Seen:
    passed_at: float  # start of the current window
    passed: int = 1  # lines let through in this window
    held: int = 0


class RepeatFilter(logging.Filter):
    """Passes a warning (or worse) at most ``burst`` times per ``window_s`` per logger and message
    template: a few distinct refusals stay readable, a flood of them folds.

    The next one let through after a quiet spell carries the count of those held back, in its text
    ("… (repeated 1234 times in the last 10 s)") and as the ``repeated`` field of JSON logs. Records
    below ``min_level`` always pass: info lines are one per event, not per hostile frame.
    """

    def __init__(
        self,
        window_s: float = REPEAT_WINDOW_S,
        burst: int = REPEAT_BURST,
        min_level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.window_s = window_s
        self.burst = burst
        self.min_level = min_level
        self._clock = clock
        self._seen: dict[tuple[str, int, str], _Seen] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.min_level:
            return True
        now = self._clock()
        key = (record.name, record.levelno, str(record.msg))
        seen = self._seen.get(key)
        if seen is not None and now - seen.passed_at < self.window_s:
            if seen.passed < self.burst and not seen.held:
                seen.passed += 1
                return True
            seen.held += 1
            return False
        if seen is not None and seen.held:
            record.msg = f"{record.msg} (repeated {seen.held} times in the last {now - seen.passed_at:.0f} s)"
            record.repeated = seen.held
        self._seen[key] = _Seen(now)
        if len(self._seen) > _MAX_KEYS:
            self._seen = {k: v for k, v in self._seen.items() if now - v.passed_at < self.window_s}
        return True


def setup_logging(
    level: str, as_json: bool, *, stream: IO[str] | None = None, repeat_window_s: float = REPEAT_WINDOW_S
) -> None:
    """Route every logger to one handler on ``stream`` (stderr by default), flood-limited."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    handler.addFilter(RepeatFilter(repeat_window_s))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
