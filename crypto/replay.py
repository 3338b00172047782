"""Replay protection: refuse an id already accepted and anything outside its lifetime.

Memory stays bounded: an id is remembered only until its message expires (after that the lifetime
check refuses it anyway), and a hard cap refuses new ids rather than forgetting live ones, since
forgetting would reopen the door to replays.
"""

from __future__ import annotations

import heapq

from crypto.errors import ReplayError

DEFAULT_MAX_ENTRIES = 200_000
DEFAULT_CLOCK_SKEW_S = 300


class ReplayGuard:
    """Remembers accepted ids until they expire. Times are integers in one caller-chosen clock."""

    def __init__(
        self, max_entries: int = DEFAULT_MAX_ENTRIES, clock_skew: int = DEFAULT_CLOCK_SKEW_S
    ) -> None:
        self._expiry: dict[bytes, int] = {}
        self._heap: list[tuple[int, bytes]] = []
        self._max_entries = max_entries
        self._clock_skew = clock_skew

    def __len__(self) -> int:
        return len(self._expiry)

    def check_and_remember(self, id_key: bytes, created: int, expires: int, now: int) -> None:
        """Accept ``id_key`` once, or raise :class:`ReplayError` saying why not."""
        self._forget_expired(now)
        if now >= expires:
            raise ReplayError("message has expired; dropped")
        if created > now + self._clock_skew:
            raise ReplayError(
                f"message claims to be created {created - now} s in the future; check the sender's clock"
            )
        if id_key in self._expiry:
            raise ReplayError("message id was already accepted (replay or duplicate)")
        if len(self._expiry) >= self._max_entries:
            raise ReplayError(f"replay memory is full ({self._max_entries} live ids); try again later")
        self._expiry[id_key] = expires
        heapq.heappush(self._heap, (expires, id_key))

    def _forget_expired(self, now: int) -> None:
        while self._heap and self._heap[0][0] <= now:
            _, id_key = heapq.heappop(self._heap)
            del self._expiry[id_key]
