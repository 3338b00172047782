"""Token-bucket rate limiting per key (sans I/O): the API per operator, the NG112 gateway per source
address and globally.

Memory is bounded: at most ``max_keys`` buckets are kept, least recently used first out. A key that
was forgotten starts again with a full bucket, which is why a caller facing many keys (spoofable or
not) also keeps one global bucket.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class RateLimiter(Generic[K]):
    """``burst`` requests at once per key, refilled at ``rate_per_s``."""

    def __init__(self, rate_per_s: float, burst: float, max_keys: int = 10_000) -> None:
        if rate_per_s <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate limiter: rate_per_s > 0, burst >= 1 and max_keys >= 1 are required")
        self.rate_per_s, self.burst, self.max_keys = rate_per_s, float(burst), max_keys
        self._buckets: OrderedDict[K, tuple[float, float]] = OrderedDict()

    def take(self, key: K, now: float) -> float:
        """Spend one token of ``key``: 0.0 if allowed, else the seconds until a token is back."""
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate_per_s)
        wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate_per_s
        self._buckets[key] = (tokens - 1.0 if wait == 0.0 else tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)
