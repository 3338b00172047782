"""Per-link transmit scheduling: strict priority between classes, round robin between flows.

A link asks for one frame whenever it is idle, so the only head-of-line blocking a FLASH bundle
suffers is the frame already on the air. Within a class, flows (one per origin) take turns, so a
chatty camera cannot starve a responder's messages of the same class. The token bucket turns the
link profile into a send budget: seconds of channel time, refilled at ``duty_cycle`` seconds per
second, where one frame costs ``per_frame_overhead_s + len / bitrate``.

Round robin alone does not stop one origin (a flooding insider, a spoofed building panel behind one
gateway) from spending the hour's budget, FLASH reserve included, before a real alarm arrives. So
each origin may spend a small share of the window (:data:`ORIGIN_SHARE`, at least
:data:`ORIGIN_MIN_FRAMES` full frames) on FLASH, and as much on IMMEDIATE. Past that its frames of
that class are kept and still sent, but only after every other origin's frames of the class; on a
duty-cycled link they are also paced to :data:`OVER_CAP_AIR_SHARE` of the air (LoRa is a shared
medium: a flood sent back to back keeps every radio in range off the channel; the fragments of a
bundle already started go on, and the next bundle waits for all of them) and never spend the
last ``origin_cap`` of the budget, which stays for origins within their cap. Control frames (flow
``b""``: custody ACKs, summaries) of those classes are not capped, but may not spend that last share
either: a flood's ACKs must not eat it.

An end-to-end receipt travels at its subject's class, but it is the answer to another origin's
traffic, so it spends a share apart from its sender's own bundles: the flow of that sender's receipts
(:func:`flow_of`). A command post that answered an enrolled rogue's 60 FLASH bundles spent its own
share on the receipts, and its own FLASH (a revocation of the rogue) was then paced like the flood.
Now its receipts go over their cap (counted in ``over_cap_frames`` under that flow) and its own
alarms are untouched; receipts sent to a node never count against that node's own alarms. The flow
is the sender's, not the answered origin's: keyed by destination, an enrolled rogue sending FLASH
"receipts" to a hundred made-up nodes would have had a hundred fresh shares, where it now has two
(its bundles and its receipts). The price: a post's receipts for real alarms queue behind its
receipts to a flood (a FLASH receipt is a status for the sender's screen, not the alarm itself).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Generic, TypeVar

from relay.bundle import Bundle, Kind, Priority
from relay.links.base import LinkProfile

T = TypeVar("T", bound=Hashable)

DUTY_WINDOW_S = 3600.0  # regulatory duty cycles are averaged over an hour (EU 868)
FLASH_RESERVE = 0.25  # share of a duty-cycled link's window that only FLASH may spend
IP_BURST_S = 1.0  # an unregulated link may burst one second of its bitrate
ORIGIN_SHARE = 0.02  # of a window, what one origin's FLASH (or IMMEDIATE) may spend before it yields
ORIGIN_MIN_FRAMES = 4  # ... but never less than this many full frames
CAPPED = frozenset({Priority.FLASH, Priority.IMMEDIATE})
OVER_CAP_AIR_SHARE = 0.1  # on a duty-cycled link, an origin over its cap is paced to this share of time
RECEIPT_KINDS = frozenset({Kind.RECEIPT, Kind.RECEIPTS})
RECEIPT_FLOW = b"\x00receipts from "  # + the sender: never a node id (those are 16 bytes)
_FLASH = Priority.FLASH  # a module alias: an enum member read costs ten times a global's (3.11)
_PRIORITIES = tuple(Priority)  # iterating the enum itself costs a generator per call
SKIP_SCAN = 1024  # items of one flow looked at for one whose peer has room (FairQueue.peek_skipping)
_EPSILON = 1e-6  # float slack (epoch-sized times step by ~1.5e-8 s), so "fits now" and "fits at
# available_at" always agree


def flow_of(bundle: Bundle) -> bytes:
    """The flow whose share of a link ``bundle``'s frames spend: its origin's own, or for a receipt,
    its origin's receipts."""
    if bundle.kind in RECEIPT_KINDS:
        return RECEIPT_FLOW + bundle.origin
    return bundle.origin


def receipts_sender(flow: bytes) -> bytes | None:
    """The origin whose receipts a flow is (None: the flow is an origin's own bundles, or control)."""
    return flow[len(RECEIPT_FLOW) :] if flow.startswith(RECEIPT_FLOW) else None


@dataclass
class _Class(Generic[T]):
    flows: dict[bytes, deque[T]] = field(default_factory=dict)
    turn: deque[bytes] = field(default_factory=deque)  # flows in round-robin order


class FairQueue(Generic[T]):
    """Items by priority class, then by flow in round robin, FIFO within a flow. Items are unique.

    ``over_cap(priority, flow)``, when set, names flows that spent their share of the class: they
    take their turn only when no other flow of the class has anything waiting."""

    def __init__(self, over_cap: Callable[[Priority, bytes], bool] | None = None) -> None:
        self._classes: list[_Class[T]] = [_Class() for _ in Priority]
        self._by_class = list(zip(_PRIORITIES, self._classes, strict=True))  # peek's order, made once
        self._where: dict[T, tuple[Priority, bytes]] = {}
        self._places: dict[tuple[Priority, bytes], tuple[Priority, bytes]] = {}  # one per class and flow
        self.over_cap = over_cap

    def __len__(self) -> int:
        return len(self._where)

    def size(self) -> int:
        """``len()`` as a plain method call: the slot behind ``len()`` of a Python class costs three
        times as much (Python 3.11), and a link's queue is counted after every event."""
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
        place = (priority, flow)
        self._where[item] = self._places.setdefault(place, place)  # 100,000 items share a few tuples
        return True

    def priority_of(self, item: T) -> Priority:
        return self._where[item][0]

    def place_of(self, item: T) -> tuple[Priority, bytes]:
        """``item``'s class and flow in one lookup (the link's next frame needs both)."""
        return self._where[item]

    def stays(self, item: T, priority: Priority) -> bool:
        """True if ``item`` is queued at ``priority`` or a more urgent class, last in its flow, and
        taking it out and pushing it again at its class would change nothing (its flow keeps other
        items, or takes its turn last). One call with one lookup: a receiver asks it for each custody
        ACK it queues, where asking whether queued, the class and whether last took three."""
        where = self._where.get(item)
        if where is None or priority < where[0]:
            return False
        cls = self._classes[where[0]]
        queue = cls.flows[where[1]]
        return queue[-1] == item and (len(queue) > 1 or cls.turn[-1] == where[1])

    def flow_of(self, item: T) -> bytes:
        return self._where[item][1]

    def peek(self) -> T | None:
        """The next item: highest class first, then the flow whose turn it is (flows over their cap last)."""
        if not self._where:
            return None  # an idle link asks after every frame: most often there is nothing
        for priority, cls in self._by_class:
            if cls.turn:  # an uncapped class (most frames) serves its turn's first: no _next_flow call
                flow = cls.turn[0] if priority not in CAPPED else self._next_flow(priority, cls)
                return cls.flows[flow][0]
        return None

    def peek_skipping(self, skipped: Callable[[T], bool]) -> T | None:
        """As :meth:`peek`, passing over the items ``skipped`` names (their peer has no room now): the
        first other item of the flow whose turn it is, else of the flows after it, else of the next
        class. Only the first :data:`SKIP_SCAN` items of a flow are looked at, so a backlog for a
        stalled peer costs a bounded walk, not one over all of it."""
        if not self._where:
            return None
        for priority, cls in self._by_class:
            if not cls.turn:
                continue
            for flow in self._flows_in_turn(priority, cls):
                for item in islice(cls.flows[flow], SKIP_SCAN):
                    if not skipped(item):
                        return item
        return None

    def _flows_in_turn(self, priority: Priority, cls: _Class[T]) -> list[bytes]:
        """The class's flows in the order :meth:`peek` would serve them: within their cap first."""
        if self.over_cap is None or priority not in CAPPED:
            return list(cls.turn)
        over_cap = self.over_cap
        capped = [flow for flow in cls.turn if over_cap(priority, flow)]
        return [flow for flow in cls.turn if flow not in capped] + capped

    def following(self, item: T) -> Iterator[T]:
        """The items queued behind ``item`` in its flow, in order (what a read-ahead fetches)."""
        where = self._where.get(item)
        if where is None:
            return iter(())
        queue = self._classes[where[0]].flows[where[1]]
        return islice(queue, 1, None) if queue[0] == item else iter(())

    def pop(self) -> T | None:
        item = self.peek()
        if item is not None:
            self.take(item)
        return item

    def take(self, item: T) -> None:
        """Remove ``item`` (the one :meth:`peek` gave) and pass the turn to the next flow."""
        priority, flow = self._where.pop(item)
        cls = self._classes[priority]
        queue = cls.flows[flow]
        queue.remove(item)
        cls.turn.remove(flow)
        if queue:
            cls.turn.append(flow)
        else:
            del cls.flows[flow]

    def _next_flow(self, priority: Priority, cls: _Class[T]) -> bytes:
        if self.over_cap is None or priority not in CAPPED:
            return cls.turn[0]
        over_cap = self.over_cap
        for flow in cls.turn:  # a loop, not next() over a generator: asked for every FLASH frame
            if not over_cap(priority, flow):
                return flow
        return cls.turn[0]

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
        # cost()'s terms and whether limit() is the capacity, read per frame (a profile is frozen)
        self._overhead, self._bitrate = profile.per_frame_overhead_s, profile.bitrate
        self._regulated = profile.duty_cycle < 1
        self.window = DUTY_WINDOW_S if profile.duty_cycle < 1 else IP_BURST_S
        self._full_cost = self.cost(profile.mtu)  # a full frame's, which limit() asks for every frame
        self.capacity = max(profile.duty_cycle * self.window, self._full_cost)
        self.origin_cap = max(ORIGIN_SHARE * self.capacity, ORIGIN_MIN_FRAMES * self.cost(profile.mtu))
        self._spent: deque[tuple[float, float, tuple[Priority, bytes] | None]] = deque()  # oldest first
        self._total = 0.0
        self._by_origin: dict[tuple[Priority, bytes], float] = {}  # channel seconds in the window
        self._paced_until: dict[tuple[Priority, bytes], float] = {}  # over-cap origins' next frame
        self.over_cap_frames: Counter[bytes] = Counter()  # frames sent while their origin was over its cap
        self._version = 0  # counts changes of what the window holds: a charge, a frame aged out
        # the last answer later than its ``now``: (until when it stands, version, its arguments, it)
        self._later: tuple[float, int, int, Priority, bytes | None, bool, float] | None = None

    def cost(self, size: int) -> float:
        """Seconds of channel time one frame of ``size`` bytes takes."""
        return self._overhead + size / self._bitrate

    def _forget(self, now: float) -> None:
        while self._spent and self._spent[0][0] <= now - self.window:
            _, cost, origin = self._spent.popleft()
            self._total -= cost
            self._version += 1
            if origin is not None:
                left = self._by_origin.pop(origin, 0.0) - cost
                if left > _EPSILON:
                    self._by_origin[origin] = left
        if not self._spent:
            self._total = 0.0
            self._by_origin.clear()
        if self._paced_until:  # most often empty: no list to build
            for key in [k for k, until in self._paced_until.items() if until <= now]:
                del self._paced_until[key]

    def over_cap(self, priority: Priority, origin: bytes | None) -> bool:
        """Whether ``origin`` spent its share of the window on ``priority`` (FLASH, IMMEDIATE)."""
        if priority not in CAPPED or not origin:
            return False
        return self._by_origin.get((priority, origin), 0.0) >= self.origin_cap - _EPSILON

    def limit(self, priority: Priority, over_cap: bool = False) -> float:
        """Channel seconds per window that frames of ``priority`` may fill; an origin over its cap
        leaves the last share of a duty-cycled budget to the others."""
        if not self._regulated:
            return self.capacity
        base = self.capacity if priority is _FLASH else self.capacity * (1 - FLASH_RESERVE)
        if over_cap:
            base -= self.origin_cap
        return self._full_cost if self._full_cost > base else base  # not max(): asked per frame

    def available_at(
        self,
        size: int,
        now: float,
        priority: Priority = Priority.FLASH,
        origin: bytes | None = None,
        continuing: bool = False,
    ) -> float:
        """The earliest time a frame of ``size`` bytes fits the budget (``now`` if it fits already).
        ``origin``: the frame's flow (``b""`` for control frames); None counts against no origin.
        ``continuing``: a further fragment of a bundle already on its way (not held by pacing).

        A frame that does not fit gets the same answer until it fits, or until a charge or the
        oldest frame spent ageing out changes the window: a link over its budget is asked again
        after every event of its node (the simulator: 6,800 times a reference run), and the walk
        through what was spent is kept."""
        later = self._later
        if (
            later is not None
            and now < later[0]
            and later[1] == self._version
            and later[2] == size
            and later[3] is priority
            and later[4] == origin
            and later[5] is continuing
        ):
            return later[6]  # nothing aged out before ``now`` (_forget would do nothing)
        self._forget(now)
        over_cap = priority in CAPPED and self.over_cap(priority, origin)  # no call for uncapped classes
        restricted = over_cap or (priority in CAPPED and origin == b"")
        at = now
        if over_cap and origin and not continuing:
            at = max(now, self._paced_until.get((priority, origin), now))
        # cost() and limit() written out: asked for every frame a link takes
        limit = self.limit(priority, restricted) if self._regulated else self.capacity
        excess = self._total + (self._overhead + size / self._bitrate) - limit
        if excess > _EPSILON:
            freed = 0.0
            for when, cost, _ in self._spent:
                freed += cost
                if freed >= excess - _EPSILON:
                    at = max(at, when + self.window)
                    break
            else:
                return max(at, now + self.window)  # more than the window holds: not kept
        if at > now:
            until = self._spent[0][0] + self.window if self._spent else at
            self._later = (min(at, until), self._version, size, priority, origin, continuing, at)
        return at

    def spend(
        self,
        size: int,
        now: float,
        priority: Priority = Priority.FLASH,
        origin: bytes | None = None,
        continuing: bool = False,
    ) -> bool:
        """Take the cost of one frame of ``priority`` from ``origin`` if the budget allows it."""
        if self.available_at(size, now, priority, origin, continuing) > now:
            return False
        self.charge(size, now, priority, origin)
        return True

    def charge(self, size: int, now: float, priority: Priority, origin: bytes | None) -> None:
        """Take the cost of one frame that :meth:`available_at` said fits ``now``."""
        cost = self._overhead + size / self._bitrate  # cost(), written out: once per frame
        key = (priority, origin) if priority in CAPPED and origin else None
        if key is not None:
            if self.over_cap(*key):
                self.over_cap_frames[key[1]] += 1
                if self._regulated:
                    start = max(now, self._paced_until.get(key, now))
                    self._paced_until[key] = start + cost / OVER_CAP_AIR_SHARE
            self._by_origin[key] = self._by_origin.get(key, 0.0) + cost
        self._spent.append((now, cost, key))
        self._total += cost
        self._version += 1
