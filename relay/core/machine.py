"""``RelayCore``: the sans-I/O relay. Events and ``now`` in, actions and frames out.

It owns the in-memory view of what the node holds and the per-link queues. It never touches a
socket, a file or a clock, so the engine can run it on asyncio and the simulator on virtual time.
Persistence is asynchronous: a bundle from a neighbour becomes a :class:`Persist` action, and only
when the engine calls :meth:`persisted` does the neighbour get its custody ACK and the bundle
enter the queues.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Set
from dataclasses import dataclass
from operator import itemgetter

from relay.bundle import ID_KEY, Bundle, BundleId, CompactContext, DestKind, Priority
from relay.core.actions import Action, DeliverLocal, Drop, MarkForwarded, Persist, Replace, StatusChanged
from relay.core.custody import CustodyTracker, InFlight, initial_rto
from relay.core.fragments import Reassembler, max_fragmented_size
from relay.core.frames import (
    MAX_COPIES,
    AckFrame,
    BeaconFrame,
    DataFrame,
    FragmentFrame,
    FragmentStatusFrame,
    Frame,
    FrameDecodeError,
    FrameType,
    SummaryFrame,
    decode_frame,
    id_hash,
)
from relay.core.held import DamagedStoreError, Held, HeldBundles, Loader
from relay.core.outbox import (
    CONTROL_FLOW,
    LinkState,
    SendBeacon,
    SendFragment,
    SendStatus,
    SendSummary,
    send_bundle,
)
from relay.core.receipts import ForgedReceiptError
from relay.core.routing import INITIAL_COPIES, Router, beacon_interval, is_costly, triggered_beacon_gap
from relay.core.scheduler import TokenBucket
from relay.core.seen import SeenIds, id_digest
from relay.core.status import BundleStatus, State, Statuses
from relay.core.transmit import Transmitter, summary_room
from relay.links.base import LinkProfile

SUMMARY_WAIT_S = 5.0  # how long a new contact gets to send its summary before we copy blindly
SEEN_MEMORY = 65536  # recent ids no longer held kept in memory; older duplicates are caught by the store
MAX_HOPS = 15  # the compact header counts to 15
DAMAGED = "damaged in the store"  # how a dropped bundle's reason begins when its stored copy did not decode
# Enum members read once per bundle in the receive and forward paths: on Python 3.11 each
# ``Priority.FLASH`` goes through EnumType.__getattr__ (about 75 ns against a module global's 20).
_FLASH, _ROUTINE = Priority.FLASH, Priority.ROUTINE  # module aliases: an enum member read costs more
_NODE = DestKind.NODE
_KEPT_TO_RECEIPT = (Priority.FLASH, Priority.IMMEDIATE)  # by its origin, to the receipt (_acked)
_BEACON_HEAD = bytes((FrameType.BEACON << 4,))  # a beacon's first byte (its argument nibble is 0)
_SENDER = itemgetter(1)  # of a (link, sender) pair


class UnknownLinkError(KeyError):
    """A frame or request named a link that never came up on this node."""


@dataclass(slots=True)
class _Incoming(Persist):
    """A bundle received and being stored: its Persist action itself (``deliver`` and ``hold``,
    whether a forwarding copy is kept, decided once when it came), with what :meth:`RelayCore.persisted`
    needs besides. One object per bundle received, not two (an init costs about 2,000 instructions)."""

    copies: int
    senders: list[tuple[str, bytes]]
    digest: int  # its id_digest: asked when it came, added to the seen memory once persisted


class RelayCore:
    def __init__(
        self,
        node_id: bytes,
        names: frozenset[str] = frozenset(),
        *,
        context: CompactContext | None = None,
        load: Loader | None = None,
    ) -> None:
        """``load``: reads a held bundle back from the store, so most need not stay in memory
        (relay.core.held); without it every held bundle does."""
        self.node_id = node_id
        self.router = Router(node_id, names)
        self.context = context  # expands compact short ids; the engine keeps it current
        self.custody = CustodyTracker()
        self.reassembler = Reassembler()
        self._links: dict[str, LinkState] = {}
        self._held = HeldBundles(load)
        self._incoming: dict[BundleId, _Incoming] = {}
        # held bundles whose damaged stored copy a neighbour's copy is replacing: who sent it (their
        # custody ACKs wait for the store), with its class
        self._replacing: dict[BundleId, tuple[Priority, list[tuple[str, bytes]]]] = {}
        self._seen = SeenIds(SEEN_MEMORY)
        self._statuses = Statuses()  # of bundles originated here; moved only by relay.core.status
        self._receipt_from: dict[BundleId, bytes] = {}  # originated id -> the only node that may receipt it
        self._summary_wait: dict[bytes, float] = {}
        self.id_conflicts = 0  # frames that named a held id with other content: one of them is forged
        self.implicit_acks = 0  # custody ACKs taken from a neighbour's overheard forward
        self._reach: dict[bytes, int] = {}  # what our last beacons offered, to notice route changes
        # The last beacon heard per (link, neighbour), as (bytes, link MTU, frame): most beacons
        # repeat the last one, and the same bytes decode to the same frame.
        self._heard: dict[tuple[str, bytes], tuple[bytes, int, BeaconFrame]] = {}
        self._transmitter = Transmitter(self._held, self.router, self.custody, self.damaged_in_store)
        # held bundles whose stored bytes did not decode when a frame was built, with why: no
        # longer held, their drop and status are the next timer's (next_frame returns no actions)
        self.damaged: dict[BundleId, str] = {}
        self.damaged_total = 0  # such bundles since the node started (a metric)
        # the delay of a lost frame's resend: seeded by the node id, so two nodes whose frames
        # collided draw different delays, and a run is repeatable
        self._rng = random.Random(node_id)
        self.frames_lost = 0  # DATA frames the link gave up on, resent early (frame_lost)

    # -- queries ---------------------------------------------------------------------------------

    def holds(self, bundle_id: BundleId) -> bool:
        return bundle_id in self._held

    def held_count(self) -> int:
        return len(self._held)

    def status(self, bundle_id: BundleId) -> BundleStatus:
        known = self._statuses.get(bundle_id)
        if known is not None:
            return known
        return BundleStatus(State.QUEUED) if bundle_id in self._held else BundleStatus(State.UNKNOWN)

    def has_link(self, link: str) -> bool:
        return link in self._links

    def queued(self, link: str) -> int:
        """Items waiting on ``link`` (the simulator asks after every event, for each idle link)."""
        return (self._links.get(link) or self._link(link)).queue.size()  # _link raises for an unknown one

    def over_cap_frames(self, link: str) -> dict[bytes, int]:
        """Frames sent on ``link`` while their flow was over its FLASH/IMMEDIATE share, per flow (an
        origin's bundles, or its receipts: relay.core.scheduler.flow_of), for operators' metrics."""
        return dict(self._link(link).bucket.over_cap_frames)

    def queue_depths(self, link: str) -> dict[Priority, int]:
        """Items waiting on ``link`` per class (for operators' metrics)."""
        queue = self._link(link).queue
        depths = dict.fromkeys(Priority, 0)
        for item in queue:
            depths[queue.priority_of(item)] += 1
        return depths

    def held_for(self, nodes: Collection[bytes]) -> list[Bundle]:
        """The bundles held here addressed to one of ``nodes`` (a command post's backbone bridge
        looks for those it could hand to the post that heard the destination). One whose stored copy
        does not decode is dropped as when a link builds its frame: the error ended the bridge's loop."""
        found: list[Bundle] = []
        damaged: list[DamagedStoreError] = []
        for held in self._held.values():
            if held.destination.kind is DestKind.NODE and held.destination.node in nodes:
                try:
                    bundle = self._held.bundle(held)
                except DamagedStoreError as exc:
                    damaged.append(exc)
                    continue
                if bundle is not None:
                    found.append(bundle)
        for error in damaged:  # not while iterating what they are dropped from
            self.damaged_in_store(error.bundle_id, error.reason)
        return found

    def neighbours(self, link: str) -> tuple[bytes, ...]:
        """Peers up on ``link`` now (for operators; routing keeps its own view)."""
        state = self._links.get(link)
        return tuple(sorted(state.peers)) if state is not None else ()

    # -- events ----------------------------------------------------------------------------------

    def originate(self, bundle: Bundle, now: float) -> list[Action]:
        """A bundle made on this node: durable in the store already if it is for this node, else
        possibly still committing (its frame may leave meanwhile; :meth:`not_stored` if it fails)."""
        self._statuses.originated(bundle.id, now, bundle.expires)
        self._remember(bundle.id)
        actions: list[Action] = []
        if bundle.destination.kind is DestKind.NODE and bundle.destination.node == self.node_id:
            return [DeliverLocal([bundle])]
        self._expect_receipt(bundle)
        self._route(self._hold(bundle, True, INITIAL_COPIES[bundle.priority]), now)
        return actions

    def restore(
        self, bundle: Bundle, local: bool, now: float, custody: list[tuple[bytes, str, float]] | None = None
    ) -> None:
        """A bundle reloaded from the store after a restart (spray budgets start afresh).
        ``custody``: (neighbour, link, time) of the custody ACKs recorded for it, oldest first."""
        if local and not self._statuses.tracked(bundle.id):
            self._statuses.originated(bundle.id, now, bundle.expires)
            if custody:
                peer, link, at = custody[-1]
                self._statuses.custody(bundle.id, peer, link, at)
            self._expect_receipt(bundle)
        if bundle.is_expired(now):
            self._remember(bundle.id)
        else:
            held = self._hold(bundle, local, INITIAL_COPIES[bundle.priority])
            self._held.add_holders(held, (peer for peer, _, _ in custody or ()))
            self._route(held, now)

    def link_up(self, profile: LinkProfile, peer: bytes, now: float, pace: float | None = None) -> None:
        """``pace``: the keepalive interval the link's connection to ``peer`` follows, if the link
        has one (IP). A neighbour paced slower than the link's beacons (a phone on battery) gets
        its beacons at that pace, and only then: no triggered ones, it asked for quiet."""
        state = self._links.get(profile.name)
        if state is None or state.profile != profile:
            state = self._links[profile.name] = LinkState(profile, TokenBucket(profile, now), now)
            if not profile.retransmits:
                self.custody.unproven(profile.name)
        if peer in state.peers:
            return
        state.peers.add(peer)
        state.next_beacon = now
        if profile.duty_cycle < 1 and state.bucket.available_at(profile.mtu, now, _ROUTINE, b"") > now:
            # A new neighbour's first beacon may spend the FLASH reserve when the lower classes spent
            # their share (a partition healed, its backlog going): at ROUTINE it waited minutes, and
            # alarms found no route through that neighbour meanwhile. Otherwise it goes as before: at
            # FLASH it went ahead of the alarms of a neighbour first heard in the middle of them
            state.queue.push(SendBeacon(peer), _FLASH, CONTROL_FLOW)
        self.router.link_up(profile, peer, pace)
        if self.router.beacon_every(profile.name, peer) > beacon_interval(profile):
            state.paced[peer] = now
        self._summary_wait[peer] = now + SUMMARY_WAIT_S
        state.queue.push(SendSummary(peer), _ROUTINE, CONTROL_FLOW)
        self._routes_changed(now)
        self._reroute(now)

    def link_down(self, link: str, peer: bytes, now: float) -> None:
        state = self._links.get(link)
        if state is None or peer not in state.peers:
            return
        state.peers.discard(peer)
        state.forget_peer(peer)
        self._heard.pop((link, peer), None)
        self.router.link_down(link, peer)
        self.reassembler.drop_peer(link, peer)
        for flight in self.custody.forget_link(link, peer):
            held = self._held.get(flight.bundle_id)
            if held is not None:
                held.unroute(peer)
        for held in self._held.values():
            route = held.route(peer)
            if route is not None and route[1] == link:
                held.unroute(peer)
        if not self.router.is_neighbour(peer):
            self._summary_wait.pop(peer, None)
        self._routes_changed(now)
        self._reroute(now)  # the bundles whose next hops read that neighbour (their routes to it went)

    def frame(self, link: str, peer: bytes, data: bytes, now: float) -> list[Action]:
        """One frame from ``peer``. Raises FrameDecodeError (or FragmentError) for hostile bytes."""
        state = self._links.get(link) or self._link(link)  # _link raises for an unknown one
        if peer not in state.peers:
            self.link_up(state.profile, peer, now)  # heard before announced (e.g. a LoRa neighbour)
        mtu = state.profile.mtu
        # a beacon repeated: decoded once (the first byte: no key made and looked up per DATA frame)
        beacon = data[:1] == _BEACON_HEAD
        heard = self._heard.get((link, peer)) if beacon else None
        if heard is not None and heard[0] == data and heard[1] == mtu:
            frame: Frame = heard[2]
        else:
            frame = decode_frame(data, self.context, mtu, self.node_id)  # positional: once per frame
            if beacon and isinstance(frame, BeaconFrame):
                self._heard[(link, peer)] = (data, mtu, frame)
        if isinstance(frame, DataFrame):  # most frames: tested first
            return self._data(state, peer, frame, now)
        if isinstance(frame, FragmentFrame):
            whole, reply = self.reassembler.add(link, peer, frame, now)
            if reply is not None:
                state.statuses[(peer, reply.transfer)] = reply
                state.queue.push(SendStatus(peer, reply.transfer), Priority.PRIORITY, CONTROL_FLOW)
            if whole is None:
                return []
            frame = decode_frame(
                whole, self.context, max_len=max_fragmented_size(state.profile.mtu), taken_by=self.node_id
            )
            if not isinstance(frame, DataFrame):
                raise FrameDecodeError("a reassembled transfer must hold a DATA frame")
            return self._data(state, peer, frame, now)
        if isinstance(frame, AckFrame):
            return self._acked(state, peer, frame, now)
        if isinstance(frame, FragmentStatusFrame):
            self._fragment_status(state, peer, frame, now)
        elif isinstance(frame, SummaryFrame):
            self._summary(state, peer, frame, now)
        elif isinstance(frame, BeaconFrame):
            self.router.beacon_received(link, peer, frame, now)
            self._routes_changed(now)
            self._reroute(now)
        return []

    def overheard(self, link: str, peer: bytes, data: bytes, now: float) -> list[Action]:
        """A frame ``peer`` sent on ``link`` to another neighbour, which this node heard and the link
        authenticated as ``peer``'s like any frame. A DATA frame of a bundle whose custody we await
        from ``peer`` is its custody ACK: it forwards only what it holds durably (the implicit ACK of
        an ``implicit_ack`` link). Anything else overheard is none of our business. Raises
        FrameDecodeError for hostile bytes."""
        state = self._link(link)
        if peer not in state.peers:
            return []
        frame = decode_frame(data, self.context, max_len=state.profile.mtu)
        if not isinstance(frame, DataFrame) or self.custody.get(frame.bundle.id, peer) is None:
            return []
        self.implicit_acks += 1
        return self._acked(state, peer, AckFrame((frame.bundle.id,)), now)

    def take_implicit_acks(self, link: str) -> tuple[bytes, ...]:
        """The neighbours whose custody ACK is the frame :meth:`next_frame` just gave for ``link``
        (our forward of a bundle they gave us): the link must let them hear it, authenticated. Asked
        once, right after the frame (a certificate frame the engine sends in between names none)."""
        state = self._links.get(link)
        if state is None:
            return ()
        acks, state.last_implicit = state.last_implicit, ()
        return acks

    def frame_lost(self, link: str, peer: bytes, data: bytes, now: float) -> None:
        """The link could not deliver ``data`` (bytes :meth:`next_frame` gave) to ``peer``: on LoRa,
        the radio's MAX_RETRANSMIT. A DATA frame's or fragment's copy is sent again after a random
        delay of up to four frame times (two hidden terminals whose frames collided have equal
        firmware retry timers, so an immediate resend could collide again), not at its custody
        timeout; once per copy (CustodyTracker.lost). Other frames are left to their own resends."""
        state = self._links.get(link)
        if state is None:
            return
        try:
            frame = decode_frame(data, self.context, max_len=state.profile.mtu)
        except FrameDecodeError:
            return  # a compact frame whose context changed since: its custody timeout stands
        if isinstance(frame, DataFrame):
            bundle_id = frame.bundle.id
        elif isinstance(frame, FragmentFrame):
            transfer = state.transfer_by_id(peer, frame.transfer)
            if transfer is None:
                return
            bundle_id = transfer[0]
        else:
            return
        delay = self._rng.uniform(0.0, initial_rto(state.profile))
        if self.custody.lost(bundle_id, peer, link, now, delay):
            self.frames_lost += 1

    def not_stored(self, bundle_id: BundleId) -> None:
        """A bundle originated here whose commit failed after :meth:`originate` (store full): stop
        sending it and forget its status. A frame that left already may still be delivered."""
        self._unhold(bundle_id)
        self._statuses.not_stored(bundle_id)
        self._receipt_from.pop(bundle_id, None)

    def handed_over(self, bundle: Bundle, now: float) -> list[Action]:
        """A whole bundle a trusted local application hands over (a command post's backbone bridge
        brings one from another post): taken into custody as from a neighbour, with no neighbour to
        acknowledge; nothing if it is held, being stored or already seen here."""
        bundle = bundle.taken_by(self.node_id)
        digest = id_digest(bundle.key)
        known = bundle.id in self._held or bundle.id in self._incoming or self._seen.has(digest)
        if known or bundle.is_expired(now):
            return []
        deliver = self.router.is_for_me(bundle) and bundle.origin != self.node_id
        keeps = self._keeps(bundle)
        incoming = self._incoming[bundle.id] = _Incoming(bundle, deliver, keeps, 1, [], digest)
        return [incoming]

    def persisted(self, accepted: list[BundleId], duplicates: list[BundleId], now: float) -> list[Action]:
        """The engine made these incoming bundles durable (or found them already known)."""
        delivered: list[Bundle] = []
        fresh = set(accepted)  # a batch holds up to 256: membership in a list would be quadratic
        for bundle_id in [*accepted, *duplicates]:
            incoming = self._incoming.pop(bundle_id, None)
            if incoming is None:
                continue
            bundle = incoming.bundle
            self._seen.add(incoming.digest)
            held: Held | None = None
            is_fresh = bundle_id in fresh
            keeps = is_fresh and incoming.hold and now < bundle.created + bundle.lifetime  # not expired
            overheard: list[tuple[LinkState, bytes]] | None = None  # most links acknowledge at once
            for link, sender in incoming.senders:
                state = self._links.get(link)
                if state is not None and sender in state.peers:
                    if keeps and state.profile.implicit_ack and bundle.priority is _FLASH:
                        if overheard is None:
                            overheard = []
                        overheard.append((state, sender))  # decided once it is routed
                    else:
                        state.queue_ack(sender, bundle_id, bundle.priority)
            if is_fresh:
                if incoming.deliver:
                    delivered.append(bundle)
                if keeps:
                    held = self._hold(bundle, False, incoming.copies)
                    self._held.add_holders(held, map(_SENDER, incoming.senders))
                    self._route(held, now)
            for state, sender in overheard or ():
                self._ack_by_forward(state, sender, held, bundle)
        return [DeliverLocal(delivered)] if delivered else []

    def _ack_by_forward(self, state: LinkState, sender: bytes, held: Held | None, bundle: Bundle) -> None:
        """Acknowledge a FLASH bundle ``sender`` gave us on an ``implicit_ack`` link by our forward
        of it on the same link, which ``sender`` hears: one frame less before the alarm moves on. If
        it goes on elsewhere, an ACK frame goes; if it goes nowhere (a dead end), "seen" goes (see
        :meth:`_dead_end`). If ``sender`` misses the forward, its resend is a duplicate here,
        answered as any duplicate (an ACK while held, "seen" once passed on or at a dead end)."""
        link = state.profile.name
        routes = () if held is None else held.routed
        if held is not None and self._dead_end(state, sender, held):
            self._say_seen(state, sender, bundle.id, bundle.priority)
        elif any(peer != sender and on == link for peer, on, _ in routes):
            state.implicit.setdefault(bundle.id, []).append(sender)
        else:
            state.queue_ack(sender, bundle.id, bundle.priority)

    def _dead_end(self, state: LinkState, sender: bytes, held: Held) -> bool:
        """Whether a relay that holds a FLASH for a node, routed nowhere, refuses ``sender``'s
        custody of it (on an ``implicit_ack`` link, where the answer waits for the routing): it
        keeps its copy and says "seen", so the sender keeps its own and its other path (a relay
        dropped a FLASH once a dead end took custody, while its copy to the second next hop was
        lost: 786 s on seed 3 of the reference scenario, until the dead end's cellular came back).
        Not to the origin, which keeps its FLASH to the receipt anyway: only its status would change."""
        return (
            state.profile.implicit_ack
            and held.priority is _FLASH
            and held.destination.kind is _NODE
            and not held.routed
            and not held.local
            and sender != held.origin
        )

    def _say_seen(self, state: LinkState, peer: bytes, bundle_id: BundleId, priority: Priority) -> None:
        """Answer ``peer``'s copy with "seen" (a SUMMARY naming it), not custody: it stops sending it
        here and keeps its copy. The reply goes at the bundle's class (a SUMMARY queued at a lower
        class moves up: a FLASH's "seen" once waited behind a duty-cycle-blocked summary)."""
        state.seen_replies.setdefault(peer, set()).add(id_hash(bundle_id))
        reply = SendSummary(peer)
        if reply in state.queue and state.queue.priority_of(reply) > priority:
            state.queue.remove(reply)
        state.queue.push(reply, priority, CONTROL_FLOW)

    def refused(self, bundle_id: BundleId, *, final: bool = False) -> None:
        """The engine would not accept this incoming bundle (untrusted origin, store full). ``final``:
        it never will (forged, dated far ahead): the senders are told "seen" so they stop resending
        it here, while the id is not taken as seen, so the real bundle with it is still accepted."""
        incoming = self._incoming.pop(bundle_id, None)
        if not final or incoming is None:
            return
        for link, sender in incoming.senders:
            state = self._links.get(link)
            if state is not None and sender in state.peers:
                state.seen_replies.setdefault(sender, set()).add(id_hash(bundle_id))
                state.queue.push(SendSummary(sender), _ROUTINE, CONTROL_FLOW)

    def receipt(
        self,
        subject: BundleId,
        now: float,
        sealed_by: bytes,
        hops: int | None = None,
        path: tuple[bytes, ...] = (),
    ) -> list[Action]:
        """An end-to-end receipt for a bundle originated here arrived, with the hop count and the
        (end of the) path it reported; the status keeps them next to the first hop (the neighbour that
        last took custody from here).

        Only the node the bundle was addressed to may receipt it: one sealed by any other enrolled
        node raises :class:`ForgedReceiptError` and changes nothing (it would stop the resends).
        A receipt for a bundle whose status is already forgotten is ignored."""
        expected = self._receipt_from.get(subject)
        if expected is None:
            return []
        if sealed_by != expected:
            raise ForgedReceiptError(
                f"receipt for {subject} sealed by {sealed_by.hex()[:8]}, but it was addressed to "
                f"{expected.hex()[:8]}"
            )
        actions: list[Action] = []
        status = self._statuses.receipt(subject, now, hops, path)
        if status is not None:
            actions.append(StatusChanged(subject, status))
        if self._held.get(subject) is not None:  # the dict's get: no Python call per subject
            self._unhold(subject)
            actions.append(Drop([subject], "delivered: end-to-end receipt received"))
        return actions

    def _expect_receipt(self, bundle: Bundle) -> None:
        if bundle.destination.kind is DestKind.NODE and bundle.destination.node is not None:
            self._receipt_from[bundle.id] = bundle.destination.node

    def evicted(self, bundle_id: BundleId, reason: str, now: float) -> list[Action]:
        """The store evicted this bundle for space: stop sending it, and if it was originated here
        its status says so, with the store's ``reason``."""
        self._unhold(bundle_id)
        if not self._statuses.tracked(bundle_id):
            return []
        status = self._statuses.evicted(bundle_id, reason, now)
        return [StatusChanged(bundle_id, status)] if status is not None else []

    def drop_origins(self, origins: frozenset[bytes]) -> list[Action]:
        """Stop carrying every bundle from these origins (just revoked): their FLASH would otherwise
        hold airtime and storage until its lifetime ends."""
        dropped = [bundle_id for bundle_id, held in self._held.items() if held.origin in origins]
        for bundle_id in dropped:
            self._unhold(bundle_id)
        return [Drop(dropped, "origin revoked")] if dropped else []

    def damaged_in_store(self, bundle_id: BundleId, error: str) -> None:
        """A held bundle's stored copy does not decode (found building its frame, or reading the
        store at start-up): stop holding it at once, so no link offers it again and each goes on
        with its other bundles."""
        self._unhold(bundle_id)
        self.damaged[bundle_id] = error
        self.damaged_total += 1

    def timer(self, now: float) -> list[Action]:
        actions: list[Action] = []
        if self.damaged:  # as an eviction: dropped from the store, and its status says why
            for bundle_id, error in self.damaged.items():
                reason = f"{DAMAGED}: its stored copy does not decode ({error})"
                actions.append(Drop([bundle_id], reason))
                if self._statuses.tracked(bundle_id):  # originated here
                    status = self._statuses.evicted(bundle_id, reason, now)
                    if status is not None:
                        actions.append(StatusChanged(bundle_id, status))
            self.damaged = {}
        expired_ids = self._held.expired(now)
        for bundle_id in expired_ids:
            self._unhold(bundle_id)
        if expired_ids:
            actions.append(Drop(expired_ids, "expired: lifetime ended before delivery"))
        expired, forgotten = self._statuses.due(now)
        actions += [StatusChanged(bundle_id, status) for bundle_id, status in expired]
        for bundle_id in forgotten:
            self._receipt_from.pop(bundle_id, None)
        flights = self.custody.due(now)
        if flights:
            self._check_stored(flights)
        for flight in flights:
            self._retransmit(flight.bundle_id, flight.peer, flight.link, now)
        self.reassembler.expire(now)
        self.router.expire(now)
        self._routes_changed(now)
        if self._summary_wait:  # most timers wait for no summary: no list to make
            waited = [peer for peer, until in self._summary_wait.items() if until <= now]
            for peer in waited:
                del self._summary_wait[peer]
            if waited:
                self._route_all(now)
        for state in self._links.values():
            if len(state.peers) > len(state.paced) and state.next_beacon <= now:
                for peer in sorted(state.peers):  # sets of bytes iterate in a per-process order
                    if peer not in state.paced and self.router.beacon_due(state.profile, peer, now):
                        state.queue.push(SendBeacon(peer), _ROUTINE, CONTROL_FLOW)
                state.next_beacon = now + beacon_interval(state.profile)
                state.last_beacon = now
            if not state.paced:
                continue  # most links pace no neighbour: no sorted list to build on every timer
            for peer in sorted(peer for peer, due in state.paced.items() if due <= now):
                state.queue.push(SendBeacon(peer), _ROUTINE, CONTROL_FLOW)
                state.paced[peer] = now + self.router.beacon_every(state.profile.name, peer)
        return actions

    def next_deadline(self) -> float | None:
        """The earliest time :meth:`timer` has work. Asked after every event (by the simulator,
        some 44,000 times a reference run): one pass, no list or generator per term."""
        if self.damaged:
            return 0.0  # their drops are due now
        first: float | None = self._held.next_expiry()
        for t in (
            self.custody.next_deadline(),
            self.reassembler.next_deadline(),
            self.router.next_deadline(),
            self._statuses.next_deadline(),
        ):
            if t is not None and (first is None or t < first):
                first = t
        if self._summary_wait:  # most often empty: no iterator to make
            for t in self._summary_wait.values():
                if first is None or t < first:
                    first = t
        for s in self._links.values():
            paced = s.paced
            if len(s.peers) > len(paced) and (first is None or s.next_beacon < first):
                first = s.next_beacon
            if paced:
                for t in paced.values():
                    if first is None or t < first:
                        first = t
            if s.blocked_until and s.queue and (first is None or s.blocked_until < first):
                first = s.blocked_until
        return first

    # -- sending ---------------------------------------------------------------------------------

    def next_frame(
        self, link: str, now: float, lowest: Priority = Priority.BULK, busy: Set[bytes] = frozenset()
    ) -> tuple[bytes, bytes] | None:
        """The next frame for an idle link as (peer, bytes), or None (empty, over budget, or of a
        class below ``lowest``); none but FLASH for the ``busy`` peers (no room for them now)."""
        return self._transmitter.next_frame(self._links.get(link) or self._link(link), now, lowest, busy)

    def last_frame_class(self, link: str) -> Priority | None:
        """The class of the frame :meth:`next_frame` last gave for ``link`` (control frames ride at
        the class of what they serve: a custody ACK for a FLASH bundle is FLASH traffic)."""
        state = self._links.get(link)
        return None if state is None else state.last_class

    def routed_at(self, bundle_id: BundleId, peer: bytes) -> float | None:
        """When the held FLASH bundle was last queued for ``peer``: from then on only the scheduler
        can delay it (the simulator's FLASH probe measures waits from this moment)."""
        held = self._held.get(bundle_id)
        return None if held is None or held.routed_at is None else held.routed_at.get(peer)

    # -- receiving -------------------------------------------------------------------------------

    def _data(self, state: LinkState, peer: bytes, frame: DataFrame, now: float) -> list[Action]:
        bundle = frame.bundle  # decoded as we keep it (taken_by): what we store and send on names us
        if now >= bundle.created + bundle.lifetime:  # expired (is_expired, without its call per frame)
            return []
        held = self._held.get(bundle.id)
        pending = self._incoming.get(bundle.id)
        known = pending.bundle if pending is not None else None
        if held is not None:
            try:
                known = self._held.bundle(held)
            except DamagedStoreError:  # this copy takes the place of ours (no cost when none is raised)
                return self._replace(state, peer, held, bundle)
        if known is not None and known.payload != bundle.payload:
            # One of the two is forged and a relay cannot tell which: no custody ACK, so the
            # sender keeps its copy; the destination opens only the real one (NodeEngine).
            self.id_conflicts += 1
            return []
        digest = id_digest(bundle.key)  # kept for persisted
        seen = held is None and self._seen.has(digest)
        if held is not None or (seen and not self._keeps(bundle)):
            if held is not None:
                if self._replacing and bundle.id in self._replacing:  # ours is being stored: ACK after
                    return self._replace(state, peer, held, bundle)
                self._held.add_holders(held, (peer,))
                if self._dead_end(state, peer, held):
                    self._say_seen(state, peer, bundle.id, bundle.priority)  # still no way on
                    return []
            state.queue_ack(peer, bundle.id, bundle.priority)  # durable here (or delivered here)
            return []
        if seen:
            # Passed on and dropped: taking custody again is impossible (the store refuses a seen
            # id), and an ACK would make the sender drop the last copy. Say "seen" instead: the
            # sender stops sending it here but keeps custody.
            self._say_seen(state, peer, bundle.id, bundle.priority)
            return []
        if pending is not None:
            if (state.profile.name, peer) not in pending.senders:
                pending.senders.append((state.profile.name, peer))
            return []
        deliver = self.router.is_for_me(bundle) and bundle.origin != self.node_id
        keeps = self._keeps(bundle)
        incoming = self._incoming[bundle.id] = _Incoming(
            bundle, deliver, keeps, frame.copies, [(state.profile.name, peer)], digest
        )
        return [incoming]

    def _replace(self, state: LinkState, peer: bytes, held: Held, bundle: Bundle) -> list[Action]:
        """A neighbour's copy of a held bundle whose stored copy does not decode (the file is
        damaged): it goes out from memory from now on, the store puts it in place of the damaged
        row, and ``peer`` gets its custody ACK once that is durable. Before, the read raised and
        the whole batch of frames went unacknowledged, to be sent again and again."""
        senders = self._replacing.get(bundle.id)
        if senders is not None:  # another copy while the first is being stored: its ACK waits too
            senders[1].append((state.profile.name, peer))
            self._held.add_holders(held, (peer,))
            return []
        self._held.replace(held, bundle)
        self._held.add_holders(held, (peer,))
        self._replacing[bundle.id] = (bundle.priority, [(state.profile.name, peer)])
        return [Replace(bundle)]

    def replaced(self, bundle_id: BundleId, stored: bool) -> None:
        """The engine put a neighbour's copy in place of the damaged one (``stored``), or found it
        no longer held (expired or dropped meanwhile: no ACK, the sender keeps custody)."""
        priority, senders = self._replacing.pop(bundle_id)
        if not stored:
            return
        for link, sender in senders:
            state = self._links.get(link)
            if state is not None and sender in state.peers:
                state.queue_ack(sender, bundle_id, priority)

    def _acked(self, state: LinkState, peer: bytes, frame: AckFrame, now: float) -> list[Action]:
        actions: list[Action] = []
        link = state.profile.name
        self.custody.peer_alive(peer, state.profile, now)
        dropped: list[BundleId] = []  # one Drop for the frame's, last
        for bundle_id in frame.ids:
            flight = self.custody.acknowledged(bundle_id, peer, now)
            if state.transfers:  # fragmented copies only: most ACKs name none
                state.transfers.pop((peer, bundle_id), None)
            held = self._held.get(bundle_id)
            if held is None:
                continue
            route = held.unroute(peer)
            directed = route is not None and route[2]
            if flight is None:
                self._held.add_holders(held, (peer,))
                continue
            # A relay hands a directed bundle on and forgets it. The origin keeps its own until the
            # end-to-end receipt (FLASH and IMMEDIATE, below): every path runs through the origin's
            # links, a copy that meets a stale route can strand at a dead end, and relays will
            # never hand a bundle back to its origin.
            dest = held.destination
            # The origin keeps its FLASH and IMMEDIATE until the receipt, so a relay that becomes a
            # dead end cannot lose them (found by the simulator). A relay hands a directed FLASH on
            # like any bundle: routing sent it two ways, while a copy kept to the receipt (which
            # relays never see) went to each new next hop on every route change, to every node in
            # the end: 184 of 226 FLASH frames on LoRa in the reference scenario went out after the
            # alarm had arrived.
            keeps = held.local and held.priority in _KEPT_TO_RECEIPT
            done = directed and dest.kind is _NODE and not keeps
            if not done:  # a record of a copy dropped at once helps nobody (the drop deletes it)
                self._held.add_holders(held, (peer,))  # a dropped record's holders help nobody either
                actions.append(MarkForwarded(bundle_id, peer, link))
            if held.local:
                status = self._statuses.custody(bundle_id, peer, link, now)
                if status is not None:
                    actions.append(StatusChanged(bundle_id, status))
            if done:
                self._unhold(bundle_id)
                dropped.append(bundle_id)
        if dropped:
            actions.append(Drop(dropped, f"custody accepted by {peer.hex()[:8]} over {link}"))
        return actions

    def _fragment_status(self, state: LinkState, peer: bytes, frame: FragmentStatusFrame, now: float) -> None:
        found = state.transfer_by_id(peer, frame.transfer)
        if found is None:
            return
        bundle_id, outgoing = found
        held = self._held.get(bundle_id)
        if held is None:
            return
        self.custody.progress(bundle_id, peer, state.profile, now)
        for index in outgoing.apply_status(frame):
            state.queue.push(SendFragment(peer, bundle_id, index), held.priority, held.flow)

    def _summary(self, via: LinkState, peer: bytes, frame: SummaryFrame, now: float) -> None:
        """``peer`` names bundles by 4-byte hashes: those it holds (all, or the most urgent that fit
        a frame) or, answering a copy, ones it passed on ("seen": a short list, never complete). A
        hash is not the id, so it is never custody (a collision would drop a bundle nobody holds).
        A spray copy skips a neighbour that named it. A directed copy waits for custody: it goes if
        still queued, and goes once more if in flight and named in a list of what the neighbour
        holds (killed after its commit, before its ACK), so the neighbour ACKs the duplicate. Named
        in a short partial list ("seen", maybe) or a second time, the wait ends without custody."""
        holds = frame.complete or len(frame.hashes) >= summary_room(via.profile.mtu)
        unrouted: set[BundleId] = set()
        for held in self._held.with_hashes(frame.hashes):
            route = held.route(peer)
            directed = route is not None and route[2]
            if directed and peer not in held.named:
                flight = self.custody.get(held.id, peer)
                if flight is None or holds:
                    self._held.name(held, peer)
                    if flight is not None:
                        on = self._link(flight.link)
                        self.custody.progress(held.id, peer, on.profile, now)  # alive: no backoff
                        self._send_again(on, held, peer)
                    continue
            if holds and not directed:
                self._held.name(held, peer)
            else:
                self._held.add_holders(held, (peer,))
            if held.unroute(peer) is not None:
                unrouted.add(held.id)
                self.custody.acknowledged(held.id, peer)  # no custody, no more resends
                for state in self._links.values():
                    state.queue.remove(send_bundle((peer, held.id)))
                    state.transfers.pop((peer, held.id), None)
        if self._summary_wait.pop(peer, None) is not None:
            self._route_all(now)  # the summary it was waited for: spray copies may go to it now
            return
        # Otherwise only the bundles it named changed, and those routing changed meanwhile: the
        # others would be routed as they were (two in three summaries, each a pass over all held).
        self._reroute(now, unrouted)

    def _check_stored(self, flights: list[InFlight]) -> None:
        """Before copies go again at their custody timeout, decode those held only in the store:
        their first frame was built scanning the header alone, and one damaged past it was refused
        by the neighbour (no ACK) and would go again at every timeout. Dropped as damaged instead."""
        records = [
            held
            for flight in flights
            if (held := self._held.get(flight.bundle_id)) is not None and held.bundle is None
        ]
        if records:
            for bundle_id, error in self._held.undecodable(records).items():
                self.damaged_in_store(bundle_id, error)

    def _retransmit(self, bundle_id: BundleId, peer: bytes, link: str, now: float) -> None:
        held = self._held.get(bundle_id)
        state = self._links.get(link)
        if held is None or state is None or peer not in state.peers:
            self.custody.acknowledged(bundle_id, peer)
            return
        if peer in held.holders:
            # It has the bundle: it sent it here too (two relays sent each other the same bundle,
            # and its ACK of ours was lost), or a summary said so after ours went. The link skips a
            # copy to a holder, so the timeout fired again and again with nothing sent (18 times for
            # one copy on seed 112): the wait ends without custody, as after a "seen" reply.
            self.custody.acknowledged(bundle_id, peer)
            held.unroute(peer)
            return
        self.custody.retry(bundle_id, peer, now)
        self._send_again(state, held, peer)

    def _send_again(self, state: LinkState, held: Held, peer: bytes) -> None:
        outgoing = state.transfers.get((peer, held.id))
        if outgoing is None:
            state.queue.push(send_bundle((peer, held.id)), held.priority, held.flow)
            return
        for index in outgoing.to_resend():
            state.queue.push(SendFragment(peer, held.id, index), held.priority, held.flow)

    # -- holding and routing ---------------------------------------------------------------------

    def _keeps(self, bundle: Bundle) -> bool:
        """Whether this node keeps a forwarding copy (not for a bundle addressed to it alone)."""
        dest = bundle.destination
        for_me_only = dest.kind is _NODE and dest.node == self.node_id
        return not for_me_only and bundle.hop_count < MAX_HOPS

    def _hold(self, bundle: Bundle, local: bool, copies: int) -> Held:
        """Hold ``bundle`` with ``copies`` (clamped), not routed yet. Positional: a keyword call
        matches names per argument, and a relay holds every bundle it takes."""
        copies = 1 if copies < 1 else MAX_COPIES if copies > MAX_COPIES else copies  # no min() or max() call
        return self._held.add(bundle, local, copies)

    def _unhold(self, bundle_id: BundleId) -> None:
        held = self._held.remove(bundle_id)
        if held is None:
            return
        # dropped: a copy offered again is answered from memory (_remember, without its call: a relay
        # drops every bundle it hands on)
        self._seen.add(id_digest(ID_KEY.pack(*bundle_id)))
        self.custody.forget_bundle(bundle_id)
        for state in self._links.values():
            if state.implicit:
                state.implicit.pop(bundle_id, None)
            for peer, _, _ in held.routed:
                state.queue.remove(send_bundle((peer, bundle_id)))
                state.transfers.pop((peer, bundle_id), None)

    def _route_all(self, now: float) -> None:
        self.router.take_changes(check=False)  # every held bundle is routed with them now
        for held in list(self._held.values()):
            self._route(held, now)

    def _reroute(self, now: float, also: set[BundleId] | None = None) -> None:
        """Route again only the held bundles whose next hops may have changed since they were last
        routed (most beacons only confirm routes, and most changes concern routes to a few nodes),
        and those in ``also``."""
        changed = self.router.take_changes()
        if changed is None:
            self._route_all(now)
            return
        if not changed and not also:
            return  # most beacons repeat the last one: no held bundle to look at
        held = self._held.values()
        if also:
            rerouted = [h for h in held if h.destination.node in changed or h.id in also]
        else:  # a beacon's changes: no id to hash per held bundle
            rerouted = [h for h in held if h.destination.node in changed]
        for record in rerouted:
            self._route(record, now)

    def _route(self, held: Held, now: float) -> None:
        if now >= held.id.created + held.lifetime:  # expired (is_expired, without its call)
            return
        sizes = {False: held.full_size, True: held.compact_size}
        holders, origin = held.holders, held.id.origin  # read once: a relay re-routes often
        for hop in self.router.next_hops(held, sizes):  # a record has what routing reads (Header)
            peer = hop.peer
            if peer in holders or peer == origin:
                continue
            if not hop.directed and peer in held.named:
                continue  # its summary named it: no spray copy (a directed one waits for custody)
            queued = held.route(peer) if held.routed else None  # a bundle just held is routed nowhere
            if queued is not None:
                if hop.directed and not queued[2]:
                    # A spray copy queued before the route was known now goes as the directed copy:
                    # the spray budget, spent meanwhile, would otherwise drop it with no route left.
                    held.unroute(peer)
                    self._held.route(held, peer, queued[1], True)
                continue
            state = self._links[hop.link]
            if not hop.directed:
                if peer in self._summary_wait:
                    continue
                if is_costly(state.profile) and held.copies <= 1:
                    continue
            self._held.route(held, peer, hop.link, hop.directed)
            if held.priority is _FLASH:  # the simulator's FLASH probe reads it
                if held.routed_at is None:
                    held.routed_at = {}
                held.routed_at[peer] = now
            state.queue.push(send_bundle((peer, held.id)), held.priority, held.flow)

    def _routes_changed(self, now: float) -> None:
        """What we reach, or its cost, changed: tell the neighbours soon (at most one triggered
        beacon per gap per link) instead of at the next regular beacon, up to 15 minutes on LoRa,
        while they route by what we used to offer."""
        reach = self.router.reach()
        if reach is self._reach or reach == self._reach:  # most often the router's kept dict
            return
        self._reach = reach
        for state in self._links.values():
            if state.peers:
                soonest = (
                    now
                    if state.last_beacon is None
                    else state.last_beacon + triggered_beacon_gap(state.profile)
                )
                if soonest < now:  # conditionals, not min() and max(), whose arguments are parsed
                    soonest = now
                if soonest < state.next_beacon:
                    state.next_beacon = soonest

    def _remember(self, bundle_id: BundleId) -> None:
        self._seen.add(id_digest(ID_KEY.pack(*bundle_id)))  # the id of a bundle held: origin checked

    def _link(self, link: str) -> LinkState:
        state = self._links.get(link)
        if state is None:
            raise UnknownLinkError(f"link {link!r} is not up on this node")
        return state
