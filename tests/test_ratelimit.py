"""The one token-bucket rate limiter the API and the NG112 gateway share."""

from __future__ import annotations

import pytest

from relay.ratelimit import RateLimiter


def test_burst_then_refill_and_wait_time() -> None:
    limiter: RateLimiter[str] = RateLimiter(rate_per_s=2.0, burst=3)
    assert [limiter.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a", 0.0) == pytest.approx(0.5)  # one token back after half a second
    assert limiter.take("b", 0.0) == 0.0  # another key has its own bucket
    assert limiter.take("a", 0.5) == 0.0
    assert limiter.take("a", 0.5) > 0.0
    assert limiter.take("a", 100.0) == 0.0  # refilled, but never above the burst
    assert [limiter.take("a", 100.0) for _ in range(3)][-1] > 0.0


def test_memory_is_bounded_least_recently_used_out() -> None:
    limiter: RateLimiter[int] = RateLimiter(rate_per_s=0.001, burst=1, max_keys=100)
    for key in range(10_000):
        limiter.take(key, 0.0)
    assert len(limiter) == 100
    assert limiter.take(9_999, 0.0) > 0.0  # recent: still remembered as spent
    assert limiter.take(0, 0.0) == 0.0  # forgotten: starts full again (why callers keep a global bucket)


def test_a_clock_going_back_does_not_mint_tokens() -> None:
    limiter: RateLimiter[str] = RateLimiter(rate_per_s=1.0, burst=1)
    assert limiter.take("a", 10.0) == 0.0
    assert limiter.take("a", 5.0) > 0.0


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        RateLimiter(rate_per_s=0.0, burst=1)
