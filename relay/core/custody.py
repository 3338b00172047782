"""Hop-by-hop custody: what we sent to whom, when to send it again, and when the neighbour took it.

A neighbour acknowledges a bundle only once it is durable in its store. Until then the copy is
"in flight" and is retransmitted with exponential backoff; the sender never forgets it because
a frame went out. Retransmission stops when the neighbour acknowledges, the link goes down (the
router then looks for another way) or the bundle expires.

The first timeout adapts to each link as TCP's does (RFC 6298): a smoothed round trip (send to
custody ACK, which includes the neighbour's durable commit) plus four deviations, measured only
on copies sent once (Karn), never below the link's frame-time floor.

On an ordered link (``LinkProfile.ordered``: an IP session, where frames arrive in the order sent
and are lost only with the connection) a copy whose timeout passes is not sent again while the
neighbour keeps acknowledging (its last ACK less than the copy's timeout ago): it waits in the
neighbour's queue. A loaded receiver reads records faster than it stores their bundles, so seconds
of frames can wait there; resending them (15,061 resends of a 20,000-bundle backlog at load 7)
only added to its work. The copy becomes due a timeout after the neighbour's last ACK, or a
timeout after a due check first found a copy sent after it acknowledged (the neighbour refused it;
the grace covers the receiver finishing its two batches in flight out of order, which made a
whole batch of 256 due at once). A neighbour silent for a whole timeout (a stalled disk, a paused
process) gets one copy again, the oldest, as TCP probes with one segment; the others wait until it
answers or a timeout later, and the connection's end (``link_down``) hands every copy back at once.
Resending a stalled receiver's whole backlog (11,713 copies in one 20,000-bundle run at load 5)
only gave it more work when it woke.

It also keeps, per neighbour on each link, how often a copy's timeout passed against how often an
ACK came (:meth:`CustodyTracker.loss`), and per link how many outcomes ago its last timeout was:
the sender repeats FLASH frames on a link that lost a copy lately, or to a neighbour it has seen
lose them (:mod:`relay.core.transmit`), where waiting for a timeout would cost an alarm seconds.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass

from relay.bundle import BundleId
from relay.links.base import LinkProfile

MIN_RTO_S = 2.0
MAX_RTO_S = 600.0
RTO_FRAMES = 4.0  # floor of the timeout: this many full-frame times (covers the ACK's own trip on LoRa)
STALE_HEAP_MIN = 1024  # outdated deadline entries tolerated before the heap is rebuilt
LOSS_GAIN = 0.125  # weight of one outcome (a timeout or an ACK) in a neighbour's loss estimate
LOSSY = 0.05  # a neighbour whose copies time out at least this often (estimate) is lossy
LINK_MEMORY = 64  # a link whose copies (to any neighbour) timed out within this many outcomes is lossy


def initial_rto(profile: LinkProfile) -> float:
    rto = RTO_FRAMES * (profile.per_frame_overhead_s + profile.mtu / profile.bitrate)
    # conditionals, not min() and max(): the builtins parse their arguments on every call (3.11)
    return MIN_RTO_S if rto < MIN_RTO_S else MAX_RTO_S if rto > MAX_RTO_S else rto


@dataclass(slots=True)
class InFlight:
    bundle_id: BundleId
    peer: bytes
    link: str
    rto: float
    deadline: float
    first_sent: float
    attempts: int = 1
    order: int = 0  # when it was first tracked: due copies come back in this order
    overtaken_at: float | None = None  # ordered links: when a copy sent after it was seen ACKed
    lost: bool = False  # the link reported a frame of it lost, and it was made due early (once)
    early: bool = False  # due early for that: the resend does not back off


@dataclass
class _RoundTrip:
    srtt: float
    rttvar: float


class CustodyTracker:
    """Copies handed to neighbours and not yet acknowledged, keyed by (bundle id, peer)."""

    def __init__(self) -> None:
        self._flights: dict[tuple[BundleId, bytes], InFlight] = {}
        # the peers of each bundle's copies in flight: a tuple (most bundles have one), not a set
        self._by_bundle: dict[BundleId, tuple[bytes, ...]] = {}
        self._rtt: dict[str, _RoundTrip] = {}
        # per link: the profile and its first timeout, until the next round-trip sample on it (a
        # burst of first sends between two ACK frames computes it once, not once per copy)
        self._rtos: dict[str, tuple[LinkProfile, float]] = {}
        # (deadline, order, id, peer) for every deadline set; an entry whose copy moved on or left is
        # skipped. Scanning every copy in flight on each timer, deadline query and ACK frame cost a
        # sender with thousands of copies in flight about a tenth of its time. A deadline no earlier
        # than the last one queued (a backlog's copies, sent in turn with one timeout) goes in the
        # FIFO, the rest in the heap: ACKed copies leave the FIFO's front in O(1), where popping them
        # off a heap of thousands took 6 % of a sender's time (py-spy, one-hop 100 B backlog).
        self._deadlines: list[tuple[float, int, BundleId, bytes]] = []
        self._fifo: deque[tuple[float, int, BundleId, bytes]] = deque()
        self._orders = itertools.count()
        # next_deadline's answer, kept until a deadline is scheduled or a copy leaves (the relay asks
        # after every event, some 31,000 times a reference run, and most events change neither)
        self._next: tuple[float | None] | None = None
        # per (peer, link): no copy in flight there has a longer timeout than this, so an ACK need
        # not look for copies to stop backing off while the link's base timeout is at least this
        self._rto_bound: dict[tuple[bytes, str], float] = {}
        # per (link, peer): share of recent outcomes that were timeouts, as an exponential average;
        # absent until a timeout, so a neighbour that never lost a copy costs nothing to look up
        self._loss: dict[tuple[str, bytes], float] = {}
        # per link: outcomes since its last timeout, absent when none in the last LINK_MEMORY. A
        # neighbour's own estimate alone forgot a 10 %-lossy link after seven ACKs in a row (half of
        # the time), and a relay sends each responder a few frames an hour, so its first alarm to
        # one of them went once on a medium that had just lost frames to the others
        self._since_timeout: dict[str, int] = {}
        self.retries = 0  # copies sent again because their timeout passed
        self._ordered: set[str] = set()  # links whose profile is ordered (IP sessions)
        # per (link, peer) of an ordered link: when its last ACK came, and the latest order it ACKed
        self._progress: dict[tuple[str, bytes], tuple[float, int]] = {}
        # per (link, peer) of an ordered link whose neighbour fell silent: until when its other due
        # copies wait for the one copy sent again (the probe) to be answered
        self._probing: dict[tuple[str, bytes], float] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def get(self, bundle_id: BundleId, peer: bytes) -> InFlight | None:
        return self._flights.get((bundle_id, peer))

    def rto(self, profile: LinkProfile) -> float:
        """The first timeout for a copy sent on ``profile`` now."""
        cached = self._rtos.get(profile.name)
        if cached is not None and cached[0] is profile:
            return cached[1]
        rto = floor = initial_rto(profile)
        measured = self._rtt.get(profile.name)
        if measured is not None:
            rto = measured.srtt + 4 * measured.rttvar
            rto = floor if floor > rto else MAX_RTO_S if rto > MAX_RTO_S else rto
        self._rtos[profile.name] = (profile, rto)
        return rto

    def loss(self, link: str, peer: bytes) -> float:
        """How often copies to ``peer`` on ``link`` lately needed their timeout (0: never seen)."""
        return self._loss.get((link, peer), 0.0)

    def lossy(self, link: str, peer: bytes) -> bool:
        """Whether a copy to ``peer`` on ``link`` may well be lost: the link lost a copy within its
        last LINK_MEMORY outcomes (or has not had that many since it came, :meth:`unproven`), or
        this neighbour's own estimate is at least LOSSY."""
        return link in self._since_timeout or self._loss.get((link, peer), 0.0) >= LOSSY

    def unproven(self, link: str) -> None:
        """A new link that does not resend lost frames itself: lossy until LINK_MEMORY outcomes in a
        row were ACKs, as if it had just lost a copy. Its loss is not known yet, and a responder
        sends a few frames an hour: taken as none, its first alarm went once and, lost, waited a
        custody timeout (8-16 s on LoRa)."""
        self._since_timeout[link] = 0

    def touch(self, bundle_id: BundleId, peer: bytes, profile: LinkProfile, now: float) -> InFlight:
        """A frame of this copy went out: the timeout runs from now (a first send starts tracking)."""
        key = (bundle_id, peer)
        flight = self._flights.get(key)
        if flight is None or flight.link != profile.name:
            link = profile.name
            if profile.ordered:
                self._ordered.add(link)
            rto = self.rto(profile)
            if flight is None:
                order = next(self._orders)
                peers = self._by_bundle.get(bundle_id)
                self._by_bundle[bundle_id] = (peer,) if peers is None else (*peers, peer)
            else:
                order = flight.order
            # positional (attempts 1, then order): a keyword makes the dataclass's init match names
            flight = InFlight(bundle_id, peer, link, rto, now + rto, now, 1, order)
            self._flights[key] = flight
            self._bound(flight)
        else:
            flight.deadline = now + flight.rto
        self._schedule(flight)
        return flight

    def retry(self, bundle_id: BundleId, peer: bytes, now: float) -> None:
        """The timeout passed and the copy is queued again: back off (double, up to MAX_RTO_S), except
        for the early resend of a lost frame (:meth:`lost`)."""
        flight = self._flights.get((bundle_id, peer))
        if flight is not None:
            self.retries += 1
            self._outcome(flight.link, peer, lost=True)
            flight.attempts += 1
            if flight.early:
                flight.early = False
            else:
                flight.rto = flight.rto * 2 if flight.rto * 2 < MAX_RTO_S else MAX_RTO_S
            flight.deadline = now + flight.rto
            self._bound(flight)
            self._schedule(flight)

    def lost(self, bundle_id: BundleId, peer: bytes, link: str, now: float, delay: float) -> bool:
        """The link gave up on a frame of this copy (the radio's MAX_RETRANSMIT): make it due in
        ``delay`` rather than at its timeout, once per copy. That resend does not back off: the next
        comes a timeout after it, then doubling as before, so a neighbour that is gone gets one
        frame more than before, and the intervals after it are the same. False if nothing changed."""
        flight = self._flights.get((bundle_id, peer))
        if flight is None or flight.link != link or flight.lost or flight.deadline <= now + delay:
            return False
        flight.lost = flight.early = True
        flight.deadline = now + delay
        self._schedule(flight)
        return True

    def progress(self, bundle_id: BundleId, peer: bytes, profile: LinkProfile, now: float) -> None:
        """The neighbour reported progress (a fragment status): it is alive, so end the backoff."""
        flight = self._flights.get((bundle_id, peer))
        if flight is not None:
            flight.rto = self.rto(profile)
            flight.deadline = now + flight.rto
            self._bound(flight)
            self._schedule(flight)

    def peer_alive(self, peer: bytes, profile: LinkProfile, now: float) -> None:
        """An ACK came from ``peer``: losses on this link are random, not a dead peer or congestion
        (the token bucket bounds the load), so its other copies stop backing off."""
        base = self.rto(profile)
        if self._rto_bound.get((peer, profile.name), 0.0) <= base:
            return  # no copy there backs off beyond the base: nothing to scan
        for flight in self._flights.values():
            if flight.peer == peer and flight.link == profile.name and flight.rto > base:
                flight.rto = base
                flight.deadline = min(flight.deadline, now + base)
                self._schedule(flight)
        self._rto_bound[(peer, profile.name)] = base

    def acknowledged(self, bundle_id: BundleId, peer: bytes, now: float | None = None) -> InFlight | None:
        """The neighbour took the copy (``now``: its ACK came now; None: it had it already)."""
        flight = self._pop(bundle_id, peer)
        if flight is not None and now is not None:
            if flight.link in self._ordered:
                key = (flight.link, peer)
                progress = self._progress.get(key)
                order = flight.order  # conditionals, not max(): asked per copy acknowledged
                self._progress[key] = (now, order if progress is None or progress[1] < order else progress[1])
                if self._probing:  # most often empty: no pop
                    self._probing.pop(key, None)
            if self._loss or flight.link in self._since_timeout:  # else an ACK changes neither
                self._outcome(flight.link, peer, lost=False)
            if flight.attempts == 1:  # a round-trip sample (Karn: a copy sent once), here, not in a call
                link, rtt = flight.link, now - flight.first_sent
                self._rtos.pop(link, None)
                measured = self._rtt.get(link)
                if measured is None:
                    self._rtt[link] = _RoundTrip(rtt, rtt / 2)
                else:
                    measured.rttvar = 0.75 * measured.rttvar + 0.25 * abs(measured.srtt - rtt)
                    measured.srtt = 0.875 * measured.srtt + 0.125 * rtt
        return flight

    def due(self, now: float) -> list[InFlight]:
        """Copies whose timeout passed, in the order they were first sent; the caller queues them
        again and calls ``retry`` (a copy it leaves alone stays due)."""
        heap, fifo = self._deadlines, self._fifo
        if not (heap and heap[0][0] <= now) and not (fifo and fifo[0][0] <= now):
            return []  # asked on every timer, and most often nothing is due
        due: dict[tuple[BundleId, bytes], InFlight] = {}
        while self._deadlines and self._deadlines[0][0] <= now:
            entry = heapq.heappop(self._deadlines)
            flight = self._current(entry)
            if flight is not None:
                due[(flight.bundle_id, flight.peer)] = flight
        while self._fifo and self._fifo[0][0] <= now:
            flight = self._current(self._fifo.popleft())
            if flight is not None:
                due[(flight.bundle_id, flight.peer)] = flight
        flights = sorted(due.values(), key=lambda f: f.order)
        for flight in flights:
            queued_until = self._queued_until(flight, now)
            if queued_until is not None:
                flight.deadline = queued_until
            self._schedule(flight)
        return [flight for flight in flights if flight.deadline <= now]

    def _queued_until(self, flight: InFlight, now: float) -> float | None:
        """When a due copy on an ordered link becomes due after all, if its neighbour is still
        working through older copies or a probe is out to a silent neighbour (see the module
        docstring); None if it is due now."""
        if flight.link not in self._ordered:
            return None
        key = (flight.link, flight.peer)
        progress = self._progress.get(key)
        acked_at, latest = progress if progress is not None else (flight.first_sent, -1)
        until = acked_at + flight.rto
        if until <= now:  # the neighbour fell silent: one copy, the oldest due, goes again
            probe_until = self._probing.get(key, now)
            if probe_until > now:
                return probe_until
            self._probing[key] = now + flight.rto
            return None
        if latest > flight.order:  # overtaken: refused, or its batch finishes after a later one
            if flight.overtaken_at is None:
                flight.overtaken_at = now
            until = min(until, flight.overtaken_at + flight.rto)
        return until if until > now else None

    def forget_bundle(self, bundle_id: BundleId) -> None:
        for peer in self._by_bundle.get(bundle_id, ()):  # a tuple: _pop replaces it, not changes it
            self._pop(bundle_id, peer)

    def forget_link(self, link: str, peer: bytes) -> list[InFlight]:
        self._progress.pop((link, peer), None)
        self._probing.pop((link, peer), None)
        gone = [f for f in self._flights.values() if f.link == link and f.peer == peer]
        for flight in gone:
            self._pop(flight.bundle_id, flight.peer)
        return gone

    def next_deadline(self) -> float | None:
        kept = self._next
        if kept is not None:
            return kept[0]
        heap, fifo = self._deadlines, self._fifo
        while heap and self._current(heap[0]) is None:
            heapq.heappop(heap)
        while fifo and self._current(fifo[0]) is None:
            fifo.popleft()
        first = None
        if heap and fifo:
            first = heap[0][0] if heap[0][0] <= fifo[0][0] else fifo[0][0]  # min() without its call
        elif heap or fifo:
            first = (heap or fifo)[0][0]
        self._next = (first,)
        return first

    def _schedule(self, flight: InFlight) -> None:
        self._next = None  # every deadline set is scheduled here
        entry = (flight.deadline, flight.order, flight.bundle_id, flight.peer)
        if not self._fifo or self._fifo[-1][0] <= flight.deadline:
            self._fifo.append(entry)
        else:
            heapq.heappush(self._deadlines, entry)
        if len(self._deadlines) + len(self._fifo) > 2 * len(self._flights) + STALE_HEAP_MIN:
            entries = ((f.deadline, f.order, f.bundle_id, f.peer) for f in self._flights.values())
            self._fifo = deque(sorted(entries))
            self._deadlines = []

    def _current(self, entry: tuple[float, int, BundleId, bytes]) -> InFlight | None:
        """The copy a deadline entry is for, if it is still in flight with that deadline."""
        deadline, order, bundle_id, peer = entry
        flight = self._flights.get((bundle_id, peer))
        if flight is None or flight.deadline != deadline or flight.order != order:
            return None
        return flight

    def _bound(self, flight: InFlight) -> None:
        key = (flight.peer, flight.link)
        if flight.rto > self._rto_bound.get(key, 0.0):
            self._rto_bound[key] = flight.rto

    def _pop(self, bundle_id: BundleId, peer: bytes) -> InFlight | None:
        flight = self._flights.pop((bundle_id, peer), None)
        if flight is not None:  # _by_bundle names exactly the peers of the copies in _flights
            self._next = None
            peers = self._by_bundle.pop(bundle_id)
            if len(peers) > 1:
                self._by_bundle[bundle_id] = tuple(other for other in peers if other != peer)
        return flight

    def _outcome(self, link: str, peer: bytes, *, lost: bool) -> None:
        if lost:
            self._since_timeout[link] = 0
        elif link in self._since_timeout:
            since = self._since_timeout[link] + 1
            if since >= LINK_MEMORY:
                del self._since_timeout[link]  # clean for long: forgotten
            else:
                self._since_timeout[link] = since
        key = (link, peer)
        before = self._loss.get(key)
        if before is None and not lost:
            return
        after = (1 - LOSS_GAIN) * (before or 0.0) + (LOSS_GAIN if lost else 0.0)
        if after < LOSSY * LOSS_GAIN:
            del self._loss[key]  # long clean again: forgotten, as if never lost
        else:
            self._loss[key] = after
