"""Where a bundle originated here is: its states, and every transition between them in one table.

As h11 keeps its connection states in one table, the status of a bundle moves only through
:data:`TRANSITIONS`; the core reports *events* and never sets a state itself::

    unknown --originated--> queued --custody--> forwarded --custody--> forwarded (a later hop)
    queued | forwarded --receipt--> delivered
    queued | forwarded --lifetime ended--> expired
    queued | forwarded --evicted--> evicted (with the store's reason)
    expired | evicted --receipt--> delivered (the receipt proves it arrived after all)
    delivered | expired | evicted --forgotten--> unknown (an hour after it became final)
    queued | forwarded --not stored--> unknown (its commit failed after its frame left)

A few events change nothing and are allowed (:data:`IGNORED`): a custody ACK or a second receipt
that crossed the first receipt, an eviction of a copy the store had not yet dropped after delivery
or expiry, a failed commit of a bundle whose receipt came first. Any other pair is a bug in the
core and raises :class:`IllegalTransitionError`.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from relay.bundle import BundleId, from_epoch

__all__ = [
    "IGNORED",
    "STATUS_MEMORY_S",
    "TRANSITIONS",
    "BundleStatus",
    "Event",
    "IllegalTransitionError",
    "State",
    "Statuses",
]

STATUS_MEMORY_S = 3600.0  # how long an origin can still ask about a bundle once it is final


class State(Enum):
    # Members are singletons and compare by identity: hash them so, in C. Enum's own __hash__ is a
    # Python call (hash of the name), and each transition looks two up (three moves per bundle sent).
    __hash__ = object.__hash__

    UNKNOWN = "unknown"
    QUEUED = "queued"
    FORWARDED = "forwarded"
    DELIVERED = "delivered"
    EXPIRED = "expired"
    EVICTED = "evicted"


class Event(Enum):
    __hash__ = object.__hash__  # as State's

    ORIGINATED = "originated"  # made here and durable in the store
    CUSTODY = "custody"  # a neighbour took custody of it
    RECEIPT = "receipt"  # the destination's end-to-end receipt arrived
    LIFETIME_ENDED = "lifetime ended"
    EVICTED = "evicted"  # the store dropped it for higher-priority traffic
    FORGOTTEN = "forgotten"  # final long enough that nobody will ask any more
    NOT_STORED = "not stored"  # its frame left before the commit, which failed: the app was refused


TRANSITIONS: Mapping[tuple[State, Event], State] = {
    (State.UNKNOWN, Event.ORIGINATED): State.QUEUED,
    (State.QUEUED, Event.CUSTODY): State.FORWARDED,
    (State.FORWARDED, Event.CUSTODY): State.FORWARDED,
    (State.QUEUED, Event.RECEIPT): State.DELIVERED,
    (State.FORWARDED, Event.RECEIPT): State.DELIVERED,
    (State.EXPIRED, Event.RECEIPT): State.DELIVERED,
    (State.EVICTED, Event.RECEIPT): State.DELIVERED,
    (State.QUEUED, Event.LIFETIME_ENDED): State.EXPIRED,
    (State.FORWARDED, Event.LIFETIME_ENDED): State.EXPIRED,
    (State.QUEUED, Event.EVICTED): State.EVICTED,
    (State.FORWARDED, Event.EVICTED): State.EVICTED,
    (State.DELIVERED, Event.FORGOTTEN): State.UNKNOWN,
    (State.EXPIRED, Event.FORGOTTEN): State.UNKNOWN,
    (State.EVICTED, Event.FORGOTTEN): State.UNKNOWN,
    (State.QUEUED, Event.NOT_STORED): State.UNKNOWN,
    (State.FORWARDED, Event.NOT_STORED): State.UNKNOWN,
}

IGNORED: frozenset[tuple[State, Event]] = frozenset(
    {
        (State.DELIVERED, Event.CUSTODY),
        (State.DELIVERED, Event.RECEIPT),
        (State.DELIVERED, Event.EVICTED),
        (State.EXPIRED, Event.EVICTED),
        (State.DELIVERED, Event.NOT_STORED),  # the receipt proves it arrived: forgotten in an hour
    }
)

FINAL = frozenset({State.DELIVERED, State.EXPIRED, State.EVICTED})
# module aliases for the members read per bundle sent: an enum member read from its class is a
# Python __getattr__ on 3.11
_UNKNOWN, _QUEUED, _FORWARDED, _DELIVERED = State.UNKNOWN, State.QUEUED, State.FORWARDED, State.DELIVERED
_ORIGINATED, _CUSTODY, _RECEIPT = Event.ORIGINATED, Event.CUSTODY, Event.RECEIPT


class IllegalTransitionError(RuntimeError):
    """The core reported an event its table does not allow in the bundle's state: a bug, not input."""


@dataclass(slots=True)  # not frozen: three per bundle sent, and a frozen init costs 1.41 µs, not 0.25
class BundleStatus:
    """The answer to "where is my bundle": queued, forwarded to ``peer`` over ``link``, delivered,
    expired, or evicted (``reason`` says why).

    Once delivered, ``hops`` and ``path`` come from the receipt: ``path`` holds the short ids of the
    last ``len(path)`` nodes that took custody (the destination last), and ``names`` their display
    names where the node knows them (the engine fills them in; the core knows no names). ``peer``
    and ``link`` keep the first hop: the neighbour that last took custody from this node. The path
    is informational: relays write it and nothing authenticates it hop by hop.
    """

    state: State
    peer: bytes | None = None
    link: str | None = None
    at: float | None = None  # seconds since the Mesh112 epoch
    hops: int | None = None
    path: tuple[bytes, ...] = ()
    names: tuple[str, ...] = ()
    reason: str | None = None  # why an evicted bundle was dropped

    @property
    def path_complete(self) -> bool:
        """Whether ``path`` names every hop (False before delivery or when hops went unrecorded)."""
        return self.hops is not None and len(self.path) >= self.hops

    def path_labels(self) -> tuple[str, ...]:
        """Display names where known, the short id in hex otherwise."""
        if len(self.names) == len(self.path):
            return self.names
        return tuple(entry.hex() for entry in self.path)

    def __str__(self) -> str:
        if self.state is State.FORWARDED and self.peer is not None:
            return f"forwarded to {self.peer.hex()[:8]} over {self.link}"
        if self.state is State.EVICTED and self.reason:
            return f"evicted: {self.reason}"
        if self.state is not State.DELIVERED:
            return str(self.state.value)
        text = "delivered"
        if self.at is not None:
            text += time.strftime(" at %H:%M:%S UTC", time.gmtime(from_epoch(self.at)))
        if self.hops is None:
            return text + " (the receipt reports no path)"
        steps = list(self.path_labels())
        if not self.path_complete:
            missing = self.hops - len(self.path)
            steps.insert(0, f"[{missing} hop{'s' if missing != 1 else ''} not recorded]")
        if steps:
            text += " via " + " → ".join(steps)
        text += f", {self.hops} hop{'s' if self.hops != 1 else ''}"
        if self.link is not None:
            text += f" (first over {self.link})"
        return text


def next_state(state: State, event: Event) -> State:
    """The state ``event`` leads to from ``state`` (itself if the event is ignored there)."""
    found = TRANSITIONS.get((state, event))
    if found is not None:
        return found
    if (state, event) in IGNORED:
        return state
    raise IllegalTransitionError(f"a bundle that is {state.value} cannot be {event.value}")


@dataclass(slots=True)
class _Entry:
    status: BundleStatus
    deadline: float  # pending: when its lifetime ends; final: when it is forgotten


class Statuses:
    """The status of every bundle originated here, each moved only through :data:`TRANSITIONS`.

    Sans-I/O: ``now`` is passed in. Methods return the new status when it changed (for a
    ``StatusChanged`` action), None when the event changed nothing.
    """

    def __init__(self) -> None:
        self._entries: dict[BundleId, _Entry] = {}
        # Every deadline set, as a heap of the distinct deadlines and the ids given each one (in the
        # order set); an id whose entry moved on or left is skipped, and dropped from its list's end
        # (a lone id costs what a (deadline, id) pair did). A scan of every entry on each timer made
        # a node holding 20,000 of its own bundles spend its time in due() and next_deadline(); a
        # heap of (deadline, id) pairs then compared ids on every tie (a backlog's bundles share
        # their expiry second): 14.5 us per bundle for its three events, each followed by a deadline
        # query; 9.8 us now.
        self._deadlines: list[float] = []
        self._ids: dict[float, list[BundleId]] = {}
        # next_deadline's answer, kept until a deadline is set, an entry goes or one comes due (the
        # relay asks after every event)
        self._next: tuple[float | None] | None = None

    def get(self, bundle_id: BundleId) -> BundleStatus | None:
        entry = self._entries.get(bundle_id)
        return entry.status if entry is not None else None

    def originated(self, bundle_id: BundleId, now: float, expires: float) -> None:
        """A bundle made here (or reloaded after a restart) is queued until ``expires``."""
        entries = self._entries
        entry = entries.get(bundle_id)
        next_state(entry.status.state if entry is not None else _UNKNOWN, _ORIGINATED)
        entries[bundle_id] = _Entry(BundleStatus(_QUEUED, None, None, now), expires)
        if entry is None or entry.deadline != expires:
            self._due_at(bundle_id, expires)

    def custody(self, bundle_id: BundleId, peer: bytes, link: str, now: float) -> BundleStatus | None:
        entry = self._move(bundle_id, _CUSTODY)
        if entry is None:
            return None
        status = entry.status = BundleStatus(_FORWARDED, peer, link, now)  # not final: same deadline
        return status

    def receipt(
        self, bundle_id: BundleId, now: float, hops: int | None, path: tuple[bytes, ...]
    ) -> BundleStatus | None:
        """Delivered; the first hop (``peer``, ``link``) is kept from the status before."""
        entry = self._move(bundle_id, _RECEIPT)
        if entry is None:
            return None
        old = entry.status
        status = BundleStatus(_DELIVERED, old.peer, old.link, now, hops, path)
        return self._final(bundle_id, entry, status, now)

    def evicted(self, bundle_id: BundleId, reason: str, now: float) -> BundleStatus | None:
        entry = self._move(bundle_id, Event.EVICTED)
        if entry is None:
            return None
        old = entry.status
        status = BundleStatus(State.EVICTED, old.peer, old.link, now, reason=reason)
        return self._final(bundle_id, entry, status, now)

    def not_stored(self, bundle_id: BundleId) -> None:
        """Forget a bundle whose commit failed: the application was refused and never got its id."""
        entry = self._entries.get(bundle_id)
        if entry is not None and next_state(entry.status.state, Event.NOT_STORED) is State.UNKNOWN:
            del self._entries[bundle_id]  # its deadline is skipped when due
            self._next = None

    def due(self, now: float) -> tuple[list[tuple[BundleId, BundleStatus]], list[BundleId]]:
        """(pending bundles whose lifetime ended, now expired; final ones forgotten at last)."""
        expired: list[tuple[BundleId, BundleStatus]] = []
        forgotten: list[BundleId] = []
        while self._deadlines and self._deadlines[0] <= now:
            self._next = None
            deadline = heapq.heappop(self._deadlines)
            for bundle_id in sorted(self._ids.pop(deadline)):  # the order of the (deadline, id) heap
                entry = self._entries.get(bundle_id)
                if entry is None or entry.deadline != deadline:
                    continue  # moved on since this deadline was set
                if entry.status.state in FINAL:
                    next_state(entry.status.state, Event.FORGOTTEN)
                    del self._entries[bundle_id]
                    forgotten.append(bundle_id)
                    continue
                if self._move(bundle_id, Event.LIFETIME_ENDED) is not None:
                    status = self._final(bundle_id, entry, BundleStatus(State.EXPIRED, at=now), now)
                    expired.append((bundle_id, status))
        return expired, forgotten

    def tracked(self, bundle_id: BundleId) -> bool:
        return bundle_id in self._entries

    def next_deadline(self) -> float | None:
        kept = self._next
        if kept is not None:
            return kept[0]
        first = None
        while self._deadlines:
            deadline = self._deadlines[0]
            ids = self._ids[deadline]
            while ids:
                entry = self._entries.get(ids[-1])
                if entry is not None and entry.deadline == deadline:
                    first = deadline
                    break
                ids.pop()
            if first is not None:
                break
            heapq.heappop(self._deadlines)
            del self._ids[deadline]
        self._next = (first,)
        return first

    def _due_at(self, bundle_id: BundleId, deadline: float) -> None:
        self._next = None
        ids = self._ids.get(deadline)
        if ids is None:
            ids = self._ids[deadline] = []
            heapq.heappush(self._deadlines, deadline)
        ids.append(bundle_id)

    def _move(self, bundle_id: BundleId, event: Event) -> _Entry | None:
        """The entry ``event`` moves on through :data:`TRANSITIONS` (the caller sets its new status),
        or None if the event is ignored in its state; an event the table does not allow raises."""
        entry = self._entries.get(bundle_id)
        if entry is None:  # only origination starts a status
            raise IllegalTransitionError(f"bundle {bundle_id} has no status here; it cannot be {event.value}")
        state = entry.status.state
        if (state, event) in TRANSITIONS:
            return entry
        next_state(state, event)  # raises unless ignored
        return None

    def _final(self, bundle_id: BundleId, entry: _Entry, status: BundleStatus, now: float) -> BundleStatus:
        """Set ``status``, a final one, in ``entry``: remembered STATUS_MEMORY_S past its deadline (the
        lifetime's end) or past now, whichever is later, or afresh when it was final already."""
        if entry.status.state in FINAL:  # a receipt after expiry or eviction
            deadline = entry.deadline if entry.deadline > now + STATUS_MEMORY_S else now + STATUS_MEMORY_S
        else:
            deadline = (entry.deadline if entry.deadline > now else now) + STATUS_MEMORY_S
        entry.status = status  # in place: no new entry per move (two per bundle sent)
        if deadline != entry.deadline:
            entry.deadline = deadline
            self._due_at(bundle_id, deadline)
        return status
