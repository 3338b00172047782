"""Per-link transmit scheduling: strict priority between classes, round robin between flows.

A link asks for one frame whenever it is idle, so the only head-of-line blocking a FLASH bundle
suffers is the frame already on the air. Within a class, flows (one per origin) take turns, so a
chatty camera cannot starve a responder's messages of the same class. The token bucket turns the
link profile into a send budget: seconds of channel time, refilled at ``duty_cycle`` seconds per
second, where one frame costs ``per_frame_overhead_s + len / bitrate``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from relay.bundle import Priority
from relay.links.base import LinkProfile

T = TypeVar("T", bound=Hashable)

DUTY_WINDOW_S = 3600.0  # regulatory duty cycles are averaged over an hour (EU 868)
FLASH_RESERVE = 0.25  # share of a duty-cycled link's window that only FLASH may spend
IP_BURST_S = 1.0  # an unregulated link may burst one second of its bitrate
_EPSILON = 1e-6  # float slack (epoch-sized times step by ~1.5e-8 s), so "fits now" and "fits at
# available_at" always agree


@dataclass
class _Class(Generic[T]):
    flows: dict[bytes, deque[T]] = field(default_factory=dict)
    turn: deque[bytes] = field(default_factory=deque)  # flows in round-robin order


class FairQueue(Generic[T]):
    """Items by priority class, then by flow in round robin, FIFO within a flow. Items are unique."""

    def __init__(self) -> None:
        self._classes: list[_Class[T]] = [_Class() for _ in Priority]
        self._where: dict[T, tuple[Priority, bytes]] = {}

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, item: T) -> bool:
        return item in self._where

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._where))

    def push(self, item: T, priority: Priority, flow: bytes, *, front: bool = False) -> bool:
        """Queue ``item``; False if it is already queued. ``front`` puts it first in its flow."""
        if item in self._where:
            return False
        cls = self._classes[priority]
        queue = cls.flows.get(flow)
        if queue is None:
            queue = cls.flows[flow] = deque()
            cls.turn.append(flow)
        if front:
            queue.appendleft(item)
        else:
            queue.append(item)
        self._where[item] = (priority, flow)
        return True

    def priority_of(self, item: T) -> Priority:
        return self._where[item][0]

    def peek(self) -> T | None:
        for cls in self._classes:
            if cls.turn:
                return cls.flows[cls.turn[0]][0]
        return None

    def pop(self) -> T | None:
        """The next item: highest class first, then the flow whose turn it is."""
        for cls in self._classes:
            if not cls.turn:
                continue
            flow = cls.turn.popleft()
            queue = cls.flows[flow]
            item = queue.popleft()
            if queue:
                cls.turn.append(flow)
            else:
                del cls.flows[flow]
            del self._where[item]
            return item
        return None

    def remove(self, item: T) -> bool:
        where = self._where.pop(item, None)
        if where is None:
            return False
        priority, flow = where
        cls = self._classes[priority]
        queue = cls.flows[flow]
        queue.remove(item)
        if not queue:
            del cls.flows[flow]
            cls.turn.remove(flow)
        return True


class TokenBucket:
    """Channel time a link may spend: at most ``duty_cycle`` of any sliding window.

    The window is an hour for a regulated radio (as EU 868 and the Meshtastic firmware count duty
    cycle) and one second for IP. A sliding window, unlike a bucket that starts full, can never let
    a rolling hour exceed the duty cycle.
    """

    def __init__(self, profile: LinkProfile, now: float) -> None:
        if profile.bitrate <= 0 or not 0 < profile.duty_cycle <= 1:
            raise ValueError(f"link {profile.name}: bitrate must be > 0 and duty cycle in (0, 1]")
        self.profile = profile
        self.window = DUTY_WINDOW_S if profile.duty_cycle < 1 else IP_BURST_S
        self.capacity = max(profile.duty_cycle * self.window, self.cost(profile.mtu))
        self._spent: deque[tuple[float, float]] = deque()  # (when, channel seconds), oldest first
        self._total = 0.0

    def cost(self, size: int) -> float:
        """Seconds of channel time one frame of ``size`` bytes takes."""
        return self.profile.per_frame_overhead_s + size / self.profile.bitrate

    def _forget(self, now: float) -> None:
        while self._spent and self._spent[0][0] <= now - self.window:
            self._total -= self._spent.popleft()[1]
        if not self._spent:
            self._total = 0.0

    def limit(self, priority: Priority) -> float:
        """Channel seconds per window that frames of ``priority`` may fill."""
        if priority is Priority.FLASH or self.profile.duty_cycle >= 1:
            return self.capacity
        return max(self.capacity * (1 - FLASH_RESERVE), self.cost(self.profile.mtu))

    def available_at(self, size: int, now: float, priority: Priority = Priority.FLASH) -> float:
        """The earliest time a frame of ``size`` bytes fits the budget (``now`` if it fits already)."""
        self._forget(now)
        excess = self._total + self.cost(size) - self.limit(priority)
        if excess <= _EPSILON:
            return now
        freed = 0.0
        for when, cost in self._spent:
            freed += cost
            if freed >= excess - _EPSILON:
                return when + self.window
        return now + self.window

    def spend(self, size: int, now: float, priority: Priority = Priority.FLASH) -> bool:
        """Take the cost of one frame of ``priority`` if the budget allows it."""
        if self.available_at(size, now, priority) > now:
            return False
        cost = self.cost(size)
        self._spent.append((now, cost))
        self._total += cost
        return True
