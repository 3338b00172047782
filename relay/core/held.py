"""What the relay keeps in memory for each bundle it holds, and the set of them.

A relay may hold 100,000 bundles on a small device (issue 15: RSS ≤ 100 MB with the interpreter).
So a held bundle is one slotted record of what scheduling needs (id, class, destination, expiry,
frame sizes, summary hash) and of what happened to it (who has it, where it is queued, copies
handed on): about 150 bytes, where a decoded bundle with its payload and byte strings costs 500 or
more. Equal destinations, lifetimes, peers, routes and tuples of them are one shared object each,
so the holders and routes most records have cost nothing of their own.

The decoded bundle stays in memory only when it is urgent (FLASH, IMMEDIATE: never a disk read
before it goes on the air) or while the resident budget has room; otherwise its full encoding is
read back from the store when a frame is built (``load``), and an IP frame is made from those bytes
without decoding them (relay.core.frames.forwarded_data_frame; a compact LoRa frame decodes them).
A read fetches the bundles queued behind it in the link's flow too, up to :data:`READ_AHEAD` of
them (one SELECT, not 12-20 µs per bundle each with its own): they wait in a small cache bounded by
:data:`AHEAD_BYTES` until their frames are built. FLASH and IMMEDIATE are always in memory, so no
read, and no read-ahead, ever comes before their frames. A core with no ``load`` (unit tests) keeps
every bundle in memory.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, ItemsView, Iterable, Sequence, ValuesView
from dataclasses import dataclass
from itertools import islice
from typing import TypeVar

from relay.bundle import (
    COMPACT_HEADER_LEN,
    Bundle,
    BundleDecodeError,
    BundleId,
    Destination,
    Priority,
    decode_full,
    full_size,
)
from relay.core.frames import id_hash
from relay.core.scheduler import RECEIPT_KINDS, flow_of

RESIDENT_BYTES = 2 << 20  # memory for decoded non-urgent bundles (a link's burst of small ones)
RESIDENT_OVERHEAD = 400  # Python bytes of a decoded bundle beyond its encoded size (measured)
MAX_SHARED = 4096  # distinct destinations, routes and peers shared; past that each record keeps its own
STALE_HEAP_MIN = 1024  # expiry heap entries of dropped bundles tolerated before it is rebuilt
# bundles read from the store in one go: the one a frame needs and those queued next. A read costs
# about 70 µs besides its rows (the store's thread commits between two reads, so each starts with the
# reader's page cache cold): 100 B rows cost 3.7 µs each read 32 at a time, 2.1 at 128 (in process)
READ_AHEAD = 128
AHEAD_BYTES = 256 << 10  # encoded bytes of bundles read ahead and not yet sent (oldest dropped first;
# a read brings at most half of it, so 32 bundles of 10 kB are not read to drop the first five unsent)

Route = tuple[bytes, str, bool]  # (peer, link, directed): where a held bundle is queued or in flight
Loader = Callable[[Sequence[BundleId]], dict[BundleId, bytes]]  # the full encodings of those still held
V = TypeVar("V")
_IMMEDIATE = Priority.IMMEDIATE  # a module alias: an enum member read costs ten times a global's (3.11)


class DamagedStoreError(RuntimeError):
    """A held bundle read back from the store does not decode: the store's file is damaged. Not a
    ValueError, so the engine does not take it for a neighbour's bad frame."""

    def __init__(self, bundle_id: BundleId, reason: str) -> None:
        super().__init__(
            f"held bundle {bundle_id} read back from the store is corrupt ({reason}): the store's file "
            "is damaged; restore it from a backup or move it aside"
        )
        self.bundle_id = bundle_id
        self.reason = reason  # the decoder's: what a dropped bundle's status says


@dataclass(slots=True, eq=False)
class Held:
    id: BundleId
    priority: Priority
    destination: Destination
    lifetime: int  # seconds (a shared int: a few lifetimes serve every bundle)
    local: bool
    copies: int
    full_size: int  # the DATA frame's size with the full encoding
    compact_size: int  # ... and with the compact one
    bundle: Bundle | None  # None: only in the store (see the module docstring)
    flow: bytes  # whose share of a link its frames spend (scheduler.flow_of): its origin, or its receipts
    holders: tuple[bytes, ...] = ()  # neighbours known to have it
    named: tuple[bytes, ...] = ()  # neighbours whose summary named its hash (no custody: a hash is no id)
    routed: tuple[Route, ...] = ()
    given: dict[bytes, int] | None = None  # copies handed to a peer (spray-and-wait)
    routed_at: dict[bytes, float] | None = None  # FLASH only: peer -> when last queued for it
    _digest: int = -1  # the summary hash once computed (see ``digest``); -1: not yet

    @property
    def digest(self) -> int:
        """The id's summary hash (frames.id_hash) as an int: summaries name bundles by it. Computed
        on first use: a relay that hands a bundle on before it sends a summary never needs it, and
        the BLAKE2b was 0.7 µs of every bundle held."""
        digest = self._digest
        if digest < 0:
            digest = self._digest = int.from_bytes(id_hash(self.id), "big")
        return digest

    @property
    def origin(self) -> bytes:
        return self.id.origin

    @property
    def expires(self) -> int:
        """Seconds since the Mesh112 epoch."""
        return self.id.created + self.lifetime

    def is_expired(self, now: float) -> bool:  # routing asks for every held bundle: no property call
        return now >= self.id.created + self.lifetime

    def __lt__(self, other: Held) -> bool:  # the expiry heap's order
        return self.id.created + self.lifetime < other.id.created + other.lifetime

    def route(self, peer: bytes) -> Route | None:
        for route in self.routed:
            if route[0] == peer:
                return route
        return None

    def unroute(self, peer: bytes) -> Route | None:
        """Forget where the bundle was queued for ``peer``; that route, or None."""
        route = self.route(peer)
        if route is not None:
            routed = self.routed  # most often that route alone: no generator and tuple() per ACK
            self.routed = () if len(routed) == 1 else tuple(other for other in routed if other is not route)
        return route

    def directed(self, peer: bytes, default: bool) -> bool:
        """Whether the bundle goes to ``peer`` on a directed path (``default`` if not routed to it)."""
        route = self.route(peer)
        return default if route is None else route[2]


class _Shared:
    """One object per equal value, so 100,000 records naming one destination share it (bounded:
    an insider naming endless group names makes records keep their own copies, not this grow)."""

    def __init__(self) -> None:
        self._values: dict[object, object] = {}

    def share(self, value: V) -> V:
        """The shared object equal to ``value`` (``value`` itself, now shared, if none was). A
        method, not ``__call__``: calling an instance goes through its type's slot in C, about a
        thousand instructions more per call than a method (Python 3.11), and a record held costs
        two or three."""
        shared = self._values.get(value)
        if shared is not None:
            return shared  # type: ignore[return-value]  # equal to value, hence of its type
        if len(self._values) < MAX_SHARED:
            self._values[value] = value
        return value

    def find(self, value: V) -> V | None:
        """The shared object equal to ``value``, or None: a caller whose value is most often shared
        already looks it up before sharing its parts."""
        return self._values.get(value)  # type: ignore[return-value]  # equal to value, hence of its type


def _resident_bytes(size: int, bundle: Bundle) -> int:
    """What a decoded bundle held in memory counts against the resident budget: its frame's
    ``size`` and the decoder's overhead, and as much again for a received bundle's kept encoding
    (``Bundle.encoded``)."""
    return size + RESIDENT_OVERHEAD + (size if bundle.encoded is not None else 0)


class HeldBundles:
    """Every bundle the node holds, by id, ordered by expiry, with the decoded bundles kept in
    memory within the resident budget."""

    def __init__(self, load: Loader | None = None, resident_bytes: int | None = None) -> None:
        self._load = load
        self._resident_left = RESIDENT_BYTES if resident_bytes is None else resident_bytes
        self._held: dict[BundleId, Held] = {}
        # the held record of an id, or None: the dict's own get, not a method around it (a Python
        # call per lookup, and a frame sent and its ACK look a bundle up three times). Bound to this
        # dict: a copy of the object (copy.deepcopy) would look in the original's; none is made.
        self.get: Callable[[BundleId], Held | None] = self._held.get
        # Expiry order, where records of dropped bundles are skipped and pruned: the records added in
        # it (most: a backlog's bundles come in the order they were made) in a FIFO, the others in a
        # heap, whose every push compares records through Held.__lt__, a Python call made from C
        self._in_order: deque[Held] = deque()
        self._expiry: list[Held] = []
        self._stale = 0
        self._shared = _Shared()
        # the last destination held, as given and as shared: the decoder gives one object per node
        # destination, and a backlog names a few, so most adds skip its dataclass hash (0.23 µs)
        self._destination: tuple[Destination, Destination] | None = None
        self._lifetime = 0  # the last lifetime held, as shared: a backlog's bundles share one
        self._ahead: dict[BundleId, bytes] = {}  # read ahead: the stored full encodings
        self._ahead_bytes = 0
        self.changes = 0  # bundles added or removed: a summary of what is held stands while it does

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, bundle_id: BundleId) -> bool:
        return bundle_id in self._held

    def __getitem__(self, bundle_id: BundleId) -> Held:
        return self._held[bundle_id]

    def values(self) -> ValuesView[Held]:
        return self._held.values()

    def items(self) -> ItemsView[BundleId, Held]:
        return self._held.items()

    def add(self, bundle: Bundle, local: bool, copies: int) -> Held:
        """Hold ``bundle`` (the held record if it is held already). Positional parameters: the core
        calls it for every bundle it takes, and keywords are matched by name per call."""
        held = self._held.get(bundle.id)
        if held is not None:
            return held
        # the DATA frame's type byte and the full encoding (a received bundle's, kept: no call)
        size = 1 + (len(bundle.encoded) if bundle.encoded is not None else full_size(bundle))
        resident = self._load is None or bundle.priority <= _IMMEDIATE
        if not resident and (cost := _resident_bytes(size, bundle)) <= self._resident_left:
            resident = True
            self._resident_left -= cost
        # a record with the bundle in memory shares its id; one without it shares the origin
        bundle_id = bundle.id
        if not resident:
            bundle_id = BundleId(self._shared.share(bundle.origin), bundle.created, bundle.seq)
        last = self._destination
        if last is None or last[0] is not bundle.destination:
            last = self._destination = (bundle.destination, self._shared.share(bundle.destination))
        lifetime = self._lifetime
        if lifetime != bundle.lifetime:  # an int compare, not the table's call and look-up
            lifetime = self._lifetime = self._shared.share(bundle.lifetime)
        held = self._held[bundle_id] = Held(
            bundle_id,
            bundle.priority,
            last[1],
            lifetime,
            local,
            copies,
            size,
            1 + COMPACT_HEADER_LEN + len(bundle.payload),
            bundle if resident else None,
            # a shared object: the id's own origin, or one per origin for its receipts
            bundle_id.origin if bundle.kind not in RECEIPT_KINDS else self._shared.share(flow_of(bundle)),
        )
        in_order = self._in_order
        if (
            not in_order
            or (newest := in_order[-1]).id.created + newest.lifetime <= bundle.created + bundle.lifetime
        ):
            in_order.append(held)
        else:
            heapq.heappush(self._expiry, held)
        self.changes += 1
        return held

    def remove(self, bundle_id: BundleId) -> Held | None:
        """Stop holding ``bundle_id``; its record, or None if it was not held."""
        held = self._held.pop(bundle_id, None)
        if held is None:
            return None
        self.changes += 1
        if held.bundle is not None and self._load is not None and held.priority > _IMMEDIATE:
            self._resident_left += _resident_bytes(held.full_size, held.bundle)
        held.bundle = None  # the expiry order keeps the record until pruned, not the payload
        if self._ahead:  # most often empty (bundles in memory): no call
            self._unahead(bundle_id)
        self._stale += 1
        if self._stale > STALE_HEAP_MIN and self._stale > len(self._held):  # max() without its call
            self._expiry = list(self._held.values())
            heapq.heapify(self._expiry)
            self._in_order = deque()
            self._stale = 0
        return held

    def with_hashes(self, digests: Iterable[bytes]) -> list[Held]:
        """The held bundles whose summary hash is one of ``digests``. A scan, not an index: an index
        cost 90 bytes per held bundle, and a summary's arrival re-routes every held bundle anyway."""
        wanted = {int.from_bytes(digest, "big") for digest in digests}
        if not wanted:
            return []
        # the slot, not the property, for records hashed already (most, after the first summary)
        return [
            held
            for held in self._held.values()
            if (held._digest if held._digest >= 0 else held.digest) in wanted
        ]

    def expired(self, now: float) -> list[BundleId]:
        """The held bundles whose lifetime ended by ``now`` (still held: the caller drops them)."""
        due: list[BundleId] = []
        heap, in_order = self._expiry, self._in_order
        while True:  # the earlier of the two firsts, the heap's on a tie
            if heap and heap[0].expires <= now and not (in_order and in_order[0] < heap[0]):
                held = heapq.heappop(heap)
            elif in_order and in_order[0].expires <= now:
                held = in_order.popleft()
            else:
                return due
            if self._held.get(held.id) is held:
                due.append(held.id)
            else:
                self._stale -= 1

    def next_expiry(self) -> int | None:
        """When the next held bundle expires (maybe one dropped since: an early wake-up)."""
        heap, in_order = self._expiry, self._in_order
        # not the property: asked after every event
        first = heap[0].id.created + heap[0].lifetime if heap else None
        if in_order:
            other = in_order[0].id.created + in_order[0].lifetime
            if first is None or other < first:
                return other
        return first

    def bundle(self, held: Held) -> Bundle | None:
        """The whole bundle, from memory or the store (None if the store dropped it)."""
        source = self.source(held)
        if not isinstance(source, bytes):
            return source
        try:
            return decode_full(source)
        except BundleDecodeError as exc:
            raise DamagedStoreError(held.id, str(exc)) from None

    def replace(self, held: Held, bundle: Bundle) -> None:
        """Keep ``bundle`` in memory for ``held``, whose stored copy does not decode, until the
        store holds it in its place (and after, within the resident budget as ever): no frame is
        built from the damaged bytes meanwhile."""
        if self._load is not None and held.priority > _IMMEDIATE:  # remove() gives it back
            if held.bundle is not None:
                self._resident_left += _resident_bytes(held.full_size, held.bundle)
            self._resident_left -= _resident_bytes(held.full_size, bundle)
        held.bundle = bundle
        self._unahead(held.id)

    def undecodable(self, records: Sequence[Held]) -> dict[BundleId, str]:
        """Those of ``records`` (held only in the store) whose stored copy does not decode, with why.
        A frame is built from the stored bytes by scanning their header only, so a copy damaged
        past the header goes out and every neighbour refuses it; custody timeouts ask this before
        their copies go again, so such a copy does not go again at every timeout. Read
        :data:`READ_AHEAD` at a time, not one SELECT each (a stalled neighbour's copies fall due
        together); the good copies wait read ahead for their frames."""
        errors: dict[BundleId, str] = {}
        wanted = [held.id for held in records if held.id not in self._ahead]
        loaded: dict[BundleId, bytes] = {}
        if self._load is not None:
            for start in range(0, len(wanted), READ_AHEAD):
                loaded.update(self._load(wanted[start : start + READ_AHEAD]))
        for held in records:
            encoded = self._ahead.get(held.id) or loaded.get(held.id)
            if encoded is None:
                continue  # the store dropped it: the core hears of it next
            try:
                decode_full(encoded)
            except BundleDecodeError as exc:
                errors[held.id] = str(exc)
                self._unahead(held.id)
                continue
            if held.id not in self._ahead:
                self._ahead[held.id] = encoded
                self._ahead_bytes += len(encoded)
        while self._ahead_bytes > AHEAD_BYTES:  # oldest first, as a read ahead does
            self._unahead(next(iter(self._ahead)))
        return errors

    def source(self, held: Held, following: Iterable[Held] = ()) -> Bundle | bytes | None:
        """The bundle in memory, or else its full encoding: read ahead, or read back from the store
        with those of ``following`` (the bundles queued next) that are only there (None if the
        store dropped it). An IP frame is built from the bytes as they are, a compact one decodes them."""
        if held.bundle is not None or self._load is None:
            return held.bundle
        ahead = self._unahead(held.id)
        if ahead is not None:
            return ahead
        wanted, room = [held], AHEAD_BYTES // 2
        for other in islice(following, READ_AHEAD - 1):  # a bounded look, however long the queue
            if other.bundle is None and other.id not in self._ahead and other is not held:
                room -= other.full_size
                if room < 0:  # half the budget a read: what it brings is sent before it is dropped
                    break
                wanted.append(other)
        loaded = self._load([record.id for record in wanted])
        for record in wanted[1:]:
            encoded = loaded.get(record.id)
            if encoded is not None:
                self._ahead[record.id] = encoded
                self._ahead_bytes += len(encoded)
        while self._ahead_bytes > AHEAD_BYTES:  # oldest first: their link has moved on
            self._unahead(next(iter(self._ahead)))
        return loaded.get(held.id)

    def _unahead(self, bundle_id: BundleId) -> bytes | None:
        encoded = self._ahead.pop(bundle_id, None)
        if encoded is not None:
            self._ahead_bytes -= len(encoded)
        return encoded

    def route(self, held: Held, peer: bytes, link: str, directed: bool) -> None:
        """Record that ``held`` is queued for ``peer`` on ``link``."""
        shared = self._shared
        route = shared.find((peer, link, directed)) or shared.share((shared.share(peer), link, directed))
        held.routed = shared.share((*held.routed, route))  # most bundles share the one-route tuple

    def name(self, held: Held, peer: bytes) -> None:
        """Record that ``peer``'s summary named ``held`` by its hash."""
        if peer not in held.named:
            held.named = self._shared.share((*held.named, self._shared.share(peer)))

    def add_holders(self, held: Held, peers: Iterable[bytes]) -> None:
        for peer in peers:
            if peer not in held.holders:
                shared = self._shared
                held.holders = shared.find((*held.holders, peer)) or shared.share(
                    (*held.holders, shared.share(peer))
                )
