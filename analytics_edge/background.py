"""Finding objects left behind without knowing what they are: a dual background model.

Two running backgrounds are kept on a shrunken grey image. The *long* one learns only where
nothing is in front of it, so a bag put down never becomes part of it; the *short* one follows
everything within about a second. A pixel that differs from the long background but agrees with
the short one is a *static foreground* pixel: something new that stopped moving. Pixels static for
long enough, grouped into connected blobs, are the candidates; rules then drop those covered by a
person (someone standing still is not an abandoned object).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
from PIL import Image

from analytics_edge.tracking import Box


@dataclass(frozen=True, slots=True)
class BackgroundConfig:
    scale: int = 4  # work on 1/scale of the frame in each direction
    threshold: float = 30.0  # grey-level difference that counts as "different"
    long_tau_s: float = 60.0  # how slowly the long background follows (lighting drift)
    short_tau_s: float = 1.0  # how quickly the short background absorbs a new still object
    min_static_s: float = 5.0  # how long a blob must stay still to be reported
    min_area_px: int = 400  # smallest blob in full-frame pixels


class StaticObjectModel:
    """Sans-I/O: ``update(frame, now, exclude)`` returns boxes of long-static foreground blobs."""

    def __init__(self, config: BackgroundConfig | None = None) -> None:
        self.config = config or BackgroundConfig()
        self._long: np.ndarray | None = None
        self._short: np.ndarray | None = None
        self._known: np.ndarray | None = None  # pixels whose background has been seen
        self._static_since: np.ndarray | None = None
        self._last_time = 0.0

    def update(self, frame: np.ndarray, now: float, exclude: list[Box]) -> list[Box]:
        """Boxes of blobs static for ``min_static_s``; ``exclude`` are people (boxes in pixels)."""
        cfg = self.config
        grey = _shrink_grey(frame, cfg.scale)
        people = np.zeros(grey.shape, dtype=bool)
        for x1, y1, x2, y2 in exclude:
            s = cfg.scale
            people[max(0, int(y1 // s)) : math.ceil(y2 / s), max(0, int(x1 // s)) : math.ceil(x2 / s)] = True
        if self._long is None or self._short is None or self._known is None or self._static_since is None:
            self._long, self._short = grey.copy(), grey.copy()
            self._known = np.zeros(grey.shape, dtype=bool)
            self._static_since = np.full(grey.shape, np.nan)
            self._last_time = now
        # the background is learnt only where no person stands: no "ghost" where someone was at start
        learn = ~self._known & ~people
        self._long[learn], self._short[learn] = grey[learn], grey[learn]
        self._known |= learn
        dt = max(now - self._last_time, 0.0)
        self._last_time = now
        long_rate = 1 - math.exp(-dt / cfg.long_tau_s)
        short_rate = 1 - math.exp(-dt / cfg.short_tau_s)
        foreground = (np.abs(grey - self._long) > cfg.threshold) & self._known
        moving = np.abs(grey - self._short) > cfg.threshold
        self._long = np.where(foreground, self._long, self._long + long_rate * (grey - self._long))
        self._short += short_rate * (grey - self._short)
        static = foreground & ~moving
        self._static_since = np.where(
            static, np.where(np.isnan(self._static_since), now, self._static_since), np.nan
        )
        with np.errstate(invalid="ignore"):
            settled = static & (now - self._static_since >= cfg.min_static_s) & ~people
        min_cells = max(1, cfg.min_area_px // (cfg.scale * cfg.scale))
        return [
            (x1 * cfg.scale, y1 * cfg.scale, (x2 + 1) * cfg.scale, (y2 + 1) * cfg.scale)
            for (x1, y1, x2, y2), cells in _blobs(_dilate(settled))
            if cells >= min_cells
        ]


def _shrink_grey(frame: np.ndarray, scale: int) -> np.ndarray:
    """Grey image averaged over ``scale`` x ``scale`` blocks (Pillow's C code: fast enough per frame)."""
    grey = Image.fromarray(frame).convert("L").reduce(scale)
    return np.asarray(grey, dtype=np.float32)


def _dilate(mask: np.ndarray) -> np.ndarray:
    """Grow ``mask`` by one cell in 8 directions, so the parts of one object form one blob."""
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    wide = grown.copy()
    wide[:, 1:] |= grown[:, :-1]
    wide[:, :-1] |= grown[:, 1:]
    return wide


def _blobs(mask: np.ndarray) -> list[tuple[tuple[int, int, int, int], int]]:
    """4-connected components of ``mask``: (bounding box x1, y1, x2, y2 inclusive, cell count)."""
    seen = np.zeros_like(mask, dtype=bool)
    height, width = mask.shape
    found = []
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        queue = deque([(int(y0), int(x0))])
        x1, y1, x2, y2, cells = int(x0), int(y0), int(x0), int(y0), 0
        while queue:
            y, x = queue.popleft()
            cells += 1
            x1, y1, x2, y2 = min(x1, x), min(y1, y), max(x2, x), max(y2, y)
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        found.append(((x1, y1, x2, y2), cells))
    return found
