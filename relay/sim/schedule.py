"""Up/down schedules of simulated links: when a contact between two nodes exists.

A schedule is a sorted tuple of disjoint half-open *up* intervals ``[start, end)`` within the
simulated horizon; everything else is down. Random schedules are drawn from a caller-given
``random.Random`` so a run is reproducible from its seed.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass

Interval = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Schedule:
    up: tuple[Interval, ...]

    def __post_init__(self) -> None:
        previous_end = -math.inf
        for start, end in self.up:
            if not start < end:
                raise ValueError(f"an up interval must have start < end, got [{start}, {end})")
            if start < previous_end:
                raise ValueError("up intervals must be sorted and must not overlap")
            previous_end = end

    @classmethod
    def always(cls, horizon: float) -> Schedule:
        return cls(((0.0, horizon),))

    @classmethod
    def never(cls) -> Schedule:
        return cls(())

    @classmethod
    def from_up(cls, intervals: Iterable[Interval]) -> Schedule:
        """Sorts and merges possibly overlapping intervals."""
        merged: list[Interval] = []
        for start, end in sorted(intervals):
            if end <= start:
                continue
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        return cls(tuple(merged))

    @classmethod
    def random_blocks(
        cls, rng: random.Random, *, up_fraction: float, mean_cycle_s: float, horizon: float
    ) -> Schedule:
        """Alternating up and down blocks of exponential length, up ``up_fraction`` of the time on average.

        A cycle (one up block and one down block) lasts ``mean_cycle_s`` on average; the first
        block is up with probability ``up_fraction``.
        """
        if not 0.0 <= up_fraction <= 1.0:
            raise ValueError("up_fraction must be between 0 and 1")
        if mean_cycle_s <= 0:
            raise ValueError("mean_cycle_s must be positive")
        if up_fraction == 1.0:
            return cls.always(horizon)
        if up_fraction == 0.0:
            return cls.never()
        mean_up = up_fraction * mean_cycle_s
        mean_down = (1.0 - up_fraction) * mean_cycle_s
        up = rng.random() < up_fraction
        t = 0.0
        intervals: list[Interval] = []
        while t < horizon:
            length = rng.expovariate(1.0 / (mean_up if up else mean_down))
            end = min(t + length, horizon)
            if up and end > t:
                intervals.append((t, end))
            t = end
            up = not up
        return cls(tuple(intervals))

    def _index(self, t: float) -> int:
        """Index of the last interval starting at or before ``t`` (-1 if none)."""
        return bisect.bisect_right(self.up, (t, math.inf)) - 1

    def is_up(self, t: float) -> bool:
        i = self._index(t)
        return i >= 0 and t < self.up[i][1]

    def interval_at_or_after(self, t: float) -> Interval | None:
        """The up interval containing ``t``, else the next one to start, else None."""
        i = self._index(t)
        if i >= 0 and t < self.up[i][1]:
            return self.up[i]
        if i + 1 < len(self.up):
            return self.up[i + 1]
        return None

    def minus(self, down: Iterable[Interval]) -> Schedule:
        """This schedule with the given down intervals (outages, partitions) cut out."""
        result = list(self.up)
        for cut_start, cut_end in down:
            next_result: list[Interval] = []
            for start, end in result:
                if end <= cut_start or start >= cut_end:
                    next_result.append((start, end))
                    continue
                if start < cut_start:
                    next_result.append((start, cut_start))
                if end > cut_end:
                    next_result.append((cut_end, end))
            result = next_result
        return Schedule(tuple(result))

    def intersect(self, other: Schedule) -> Schedule:
        out: list[Interval] = []
        i = j = 0
        while i < len(self.up) and j < len(other.up):
            start = max(self.up[i][0], other.up[j][0])
            end = min(self.up[i][1], other.up[j][1])
            if start < end:
                out.append((start, end))
            if self.up[i][1] < other.up[j][1]:
                i += 1
            else:
                j += 1
        return Schedule(tuple(out))

    def up_time(self, horizon: float) -> float:
        return sum(min(end, horizon) - start for start, end in self.up if start < horizon)
