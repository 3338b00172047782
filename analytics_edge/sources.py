"""Camera sources through PyAV: video files, RTSP/HTTP streams and local camera devices.

A source yields RGB frames sampled down to a target rate (detection at 2-5 fps is plenty for
people on foot, and it is what a small CPU can afford). Live sources that drop (a camera reboots,
a cellular modem flaps) are reopened with a bounded exponential backoff; after too many failures in
a row the source gives up with :class:`SourceError`, which the operator sees.

Timestamps are stream seconds, continuous across reconnects and loops, so rules measuring dwell
time never see time run backwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import av
import av.error
import numpy as np


class SourceError(Exception):
    """A camera source cannot be opened or read (the message names the source and the cause)."""


@dataclass(frozen=True, slots=True)
class Frame:
    image: np.ndarray  # H x W x 3 uint8 RGB
    timestamp: float  # seconds since the source started, continuous across reconnects
    index: int  # count of frames yielded so far


@dataclass(frozen=True, slots=True)
class SourceConfig:
    url: str  # file path, rtsp://, http(s)://, or a device such as /dev/video0
    target_fps: float = 5.0
    live: bool | None = None  # None: streams and devices are live, files are not
    loop: bool = False  # files: start again at the end (the demo camera)
    device_format: str | None = None  # e.g. "v4l2"; guessed for /dev/video*
    max_reconnects: int = 5  # consecutive failures before giving up
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    timeout_s: float = 5.0  # open and read timeout for network streams

    def __post_init__(self) -> None:
        if not 0 < self.target_fps <= 60:
            raise SourceError(f"target_fps must be in (0, 60], got {self.target_fps}")
        if self.max_reconnects < 0 or self.backoff_initial_s <= 0 or self.backoff_max_s <= 0:
            raise SourceError("max_reconnects must be >= 0 and backoff times positive")

    @property
    def is_live(self) -> bool:
        if self.live is not None:
            return self.live
        return "://" in self.url or self.url.startswith("/dev/video")


class FrameSampler:
    """Keeps one frame per ``1 / fps`` seconds of stream time, dropping the rest."""

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self._next_due: float | None = None

    def keep(self, timestamp: float) -> bool:
        if self._next_due is not None and timestamp < self._next_due - 1e-6:
            return False
        due = self._next_due if self._next_due is not None else timestamp
        # stay on the grid, but after a long gap start a new grid instead of catching up
        late = timestamp - due >= self.period
        self._next_due = (timestamp if late else due) + self.period
        return True


class VideoSource:
    """Frames from one camera. ``sleep`` is injectable so tests of the backoff need not wait."""

    def __init__(self, config: SourceConfig, sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self._sleep = sleep
        self.reconnects = 0  # total reopenings, for metrics

    def frames(self, max_frames: int | None = None) -> Iterator[Frame]:
        cfg = self.config
        sampler = FrameSampler(cfg.target_fps)
        offset = 0.0  # stream time already consumed by earlier connections or loops
        last = -1.0
        index = 0
        failures = 0
        while True:
            try:
                container = self._open()
            except SourceError:
                if not cfg.is_live:
                    raise
                failures = self._backoff(failures)
                continue
            try:
                for image, stream_time in _decode(container, sampler, offset):
                    failures = 0
                    last = stream_time
                    yield Frame(image, stream_time, index)
                    index += 1
                    if max_frames is not None and index >= max_frames:
                        return
            except (av.error.FFmpegError, OSError) as exc:
                if not cfg.is_live:
                    raise SourceError(f"cannot read {cfg.url}: {exc}") from exc
            finally:
                container.close()
            offset = last + sampler.period if last >= 0 else offset
            if cfg.is_live:
                failures = self._backoff(failures)  # end of a live stream is a loss: reconnect
            elif not cfg.loop:
                return

    def _open(self) -> Any:
        cfg = self.config
        options: dict[str, str] = {}
        fmt = cfg.device_format
        if cfg.url.startswith("rtsp://"):
            options["rtsp_transport"] = "tcp"
        if fmt is None and cfg.url.startswith("/dev/video"):
            fmt = "v4l2"
        try:
            return av.open(cfg.url, format=fmt, options=options, timeout=cfg.timeout_s)
        except (av.error.FFmpegError, OSError) as exc:
            raise SourceError(f"cannot open camera source {cfg.url}: {exc}") from exc

    def _backoff(self, failures: int) -> int:
        cfg = self.config
        if failures >= cfg.max_reconnects:
            raise SourceError(f"camera source {cfg.url} lost: gave up after {failures} reconnect attempts")
        self._sleep(min(cfg.backoff_max_s, cfg.backoff_initial_s * (2**failures)))
        self.reconnects += 1
        return failures + 1


def _decode(container: Any, sampler: FrameSampler, offset: float) -> Iterator[tuple[np.ndarray, float]]:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    rate = float(stream.average_rate or 25)
    first: float | None = None  # live streams start at arbitrary timestamps: count from the first frame
    for position, frame in enumerate(container.decode(stream)):
        local = float(frame.time) if frame.time is not None else position / rate
        first = local if first is None else first
        stream_time = offset + max(0.0, local - first)
        if sampler.keep(stream_time):
            yield frame.to_ndarray(format="rgb24"), stream_time
