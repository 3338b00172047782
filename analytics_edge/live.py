"""Live video from a field unit: camera or clip frames, faces blurred on the device, as an aiortc track.

Privacy before the wire: every frame goes through :class:`analytics_edge.privacy.Anonymiser` before it
is encoded, exactly as snapshots do; the cost per frame is kept in :attr:`LiveVideoTrack.blur_ms`.

Low bitrates: aiortc clamps VP8 to 250-1,500 kbit/s, 2.5x too much for a 100 kbit/s path.
:func:`allow_low_bitrates` moves those bounds (module constants of ``aiortc.codecs.vpx``, read at each
use, so it applies to every encoder in the process). Within them the encoder follows the receiver's
estimate (REMB), and the track degrades resolution and frame rate with it (:data:`LADDER`) before the
picture would freeze: at 64 kbit/s it sends 160x120 at 6 fps.

Measuring without trusting the sender: each frame carries its number and its capture time (ms,
modulo 2**24) painted into the top rows as black and white blocks with a checksum
(:func:`stamp`); the receiver reads them back from the decoded pixels (:func:`read_stamp`), so fps,
glass-to-glass latency and freezes are measured on what was actually shown.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.codecs import vpx

from analytics_edge.detectors.base import resize_rgb
from analytics_edge.privacy import Anonymiser

VIDEO_CLOCK = 90_000  # RTP video clock rate
STAMP_ROWS, STAMP_COLUMNS = 3, 16  # 48 bits: frame number (16), capture ms (24), checksum (8)
_MS_MODULO = 1 << 24


@dataclass(frozen=True, slots=True)
class Step:
    """One rung of the ladder: used while the encoder's target is at least ``min_bps``."""

    min_bps: int
    width: int
    height: int
    fps: float


LADDER = (
    Step(600_000, 640, 480, 15.0),
    Step(250_000, 320, 240, 12.0),
    Step(120_000, 240, 180, 8.0),
    Step(0, 160, 120, 6.0),
)


def allow_low_bitrates(floor_bps: int = 30_000, start_bps: int = 64_000, cap_bps: int = 1_500_000) -> None:
    """Let VP8 go down to ``floor_bps`` (libwebrtc's own floor is 30 kbit/s) and start at
    ``start_bps`` (what the path is expected to carry) instead of aiortc's 250 and 500 kbit/s."""
    if not 0 < floor_bps <= start_bps <= cap_bps:
        raise ValueError(f"need 0 < floor <= start <= cap, got {floor_bps}, {start_bps}, {cap_bps}")
    vpx.MIN_BITRATE, vpx.DEFAULT_BITRATE, vpx.MAX_BITRATE = floor_bps, start_bps, cap_bps


def step_for(bitrate_bps: int) -> Step:
    return next(step for step in LADDER if bitrate_bps >= step.min_bps)


def stamp(frame: np.ndarray, number: int, sent_ms: int) -> None:
    """Paint ``number`` (mod 2**16) and ``sent_ms`` (mod 2**24) into the top rows of ``frame``."""
    value = ((number & 0xFFFF) << 24) | (sent_ms % _MS_MODULO)
    bits = [(value >> (39 - i)) & 1 for i in range(40)]
    check = _checksum(value)
    bits += [(check >> (7 - i)) & 1 for i in range(8)]
    block_w, block_h = _block(frame)
    for index, bit in enumerate(bits):
        row, column = divmod(index, STAMP_COLUMNS)
        y, x = row * block_h, column * block_w
        frame[y : y + block_h, x : x + block_w] = 255 if bit else 0


def read_stamp(frame: np.ndarray) -> tuple[int, int] | None:
    """(frame number, capture ms) painted by :func:`stamp`, or None if the checksum fails."""
    block_w, block_h = _block(frame)
    luma = frame[..., :3].mean(axis=2) if frame.ndim == 3 else frame
    bits = []
    for index in range(STAMP_ROWS * STAMP_COLUMNS):
        row, column = divmod(index, STAMP_COLUMNS)
        y, x = row * block_h, column * block_w
        inner = luma[
            y + block_h // 4 : y + block_h - block_h // 4, x + block_w // 4 : x + block_w - block_w // 4
        ]
        bits.append(1 if inner.mean() > 127 else 0)
    value = int("".join(map(str, bits[:40])), 2)
    if int("".join(map(str, bits[40:])), 2) != _checksum(value):
        return None
    return value >> 24, value & (_MS_MODULO - 1)


def latency_ms(sent_ms: int, received_ms: int) -> int:
    """Capture-to-display time from a stamp (both clocks on the same host or synchronised)."""
    return (received_ms - sent_ms) % _MS_MODULO


class LiveVideoTrack(MediaStreamTrack):
    """Frames from ``source(t)`` (RGB, any size; ``t`` in seconds since the start), anonymised,
    scaled to the ladder's rung for ``bitrate()`` (bits/s, e.g. the encoder's target), stamped."""

    kind = "video"

    def __init__(
        self,
        source: Callable[[float], np.ndarray],
        anonymiser: Anonymiser | None,
        bitrate: Callable[[], int] = lambda: vpx.DEFAULT_BITRATE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self._source = source
        self._anonymiser = anonymiser
        self._bitrate = bitrate
        self._clock = clock
        self._started: float | None = None
        self._next = 0.0
        self.frames = 0
        self.blur_ms: list[float] = []  # the anonymiser's cost per frame
        self.steps: list[Step] = []  # the rung of each frame sent

    async def recv(self) -> av.VideoFrame:
        step = step_for(self._bitrate())
        now = time.monotonic()
        if self._started is None:
            self._started = self._next = now
        self._next = max(self._next + 1.0 / step.fps, now)
        await asyncio.sleep(self._next - now)
        elapsed = self._next - self._started
        picture = self._source(elapsed)
        if self._anonymiser is not None:
            began = time.perf_counter()
            picture = self._anonymiser.anonymise(picture, [])
            self.blur_ms.append((time.perf_counter() - began) * 1000)
        picture = np.array(resize_rgb(picture, step.width, step.height))  # a writable copy
        stamp(picture, self.frames, int(self._clock() * 1000))
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        frame.pts = int(elapsed * VIDEO_CLOCK)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.frames += 1
        self.steps.append(step)
        return frame


def encoder_bitrate(sender: object) -> int | None:
    """The VP8 encoder's current target (bits/s) of an aiortc ``RTCRtpSender``, once it encodes.
    aiortc keeps the encoder private; this is the one place that reaches for it."""
    encoder = getattr(sender, "_RTCRtpSender__encoder", None)
    target = getattr(encoder, "target_bitrate", None)
    return target if isinstance(target, int) else None


def _block(frame: np.ndarray) -> tuple[int, int]:
    height, width = frame.shape[:2]
    return width // STAMP_COLUMNS, max(4, height // 20)


def _checksum(value: int) -> int:
    total = 0x5A
    for shift in range(0, 40, 8):
        total = (total * 31 + ((value >> shift) & 0xFF)) & 0xFF
    return total
