"""Building frames when a link is ready: what the fair queue's head becomes on the wire.

A queue item is turned into bytes only when the link asks (so it carries the latest copy budget
and every ACK accumulated), checked against the link's budget, and only then committed: copies
handed over, fragments queued behind the first, custody timer started.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Set
from itertools import islice

from relay.bundle import Bundle, BundleDecodeError, BundleId, Priority
from relay.core.custody import CustodyTracker
from relay.core.fragments import OutgoingTransfer, split
from relay.core.frames import (
    HASH_LEN,
    ID_KEY_LEN,
    MAX_COPIES,
    MAX_SUMMARY_HASHES,
    AckFrame,
    SummaryFrame,
    encode_frame,
    forwarded_data_frame,
)
from relay.core.held import Held, HeldBundles
from relay.core.outbox import (
    CONTROL_FLOW,
    Item,
    LinkState,
    SendAcks,
    SendBundle,
    SendFragment,
    SendStatus,
    SendSummary,
)
from relay.core.routing import Router, is_costly

# a tuple, not ``SendBundle | SendFragment``: isinstance with a union is 0.2 µs slower (Python 3.11),
# and both checks run for every frame a link takes
_BUNDLE_ITEMS = (SendBundle, SendFragment)
# module aliases: an enum member read costs ten times a global's (Python 3.11)
_BULK, _FLASH, _ROUTINE = Priority.BULK, Priority.FLASH, Priority.ROUTINE


def summary_room(mtu: int) -> int:
    """How many hashes a SUMMARY on a link of this MTU lists at most (what a contact summary of a
    node holding more lists: its most urgent)."""
    room = (mtu - 4) // HASH_LEN
    return room if room < MAX_SUMMARY_HASHES else MAX_SUMMARY_HASHES  # no min(): asked per summary


class Transmitter:
    def __init__(
        self,
        held: HeldBundles,
        router: Router,
        custody: CustodyTracker,
        damaged: Callable[[BundleId, str], None],
    ) -> None:
        self.held = held
        self._damaged = damaged  # told of a held bundle whose stored bytes make no frame
        self.router = router
        self.custody = custody
        self._built: dict[str, tuple[Bundle | bytes, int, bool, bytes]] = {}  # per link: the last DATA frame
        # per link: the last summary of what is held, with HeldBundles.changes and the room it had
        self._summaries: dict[str, tuple[int, int, bytes]] = {}

    def next_frame(
        self, state: LinkState, now: float, lowest: Priority = Priority.BULK, busy: Set[bytes] = frozenset()
    ) -> tuple[bytes, bytes] | None:
        """The next frame for an idle link as (peer, bytes), or None (empty, over budget, or the
        next frame is of a class below ``lowest``: a LoRa link whose last frame awaits its radio
        ACK takes FLASH only, and none of an origin past its FLASH share: a flood's frames wait for
        the link's answers as before, and do not fill the radio ahead of other alarms).

        A bundle's held record is looked up and its copies worked out once per frame: its share of
        the link, its bytes and what :meth:`_sent_bundle` commits come from that one look (three
        lookups and two ``_give`` per frame before), and so do the copies it was given before, if
        any (three ``given_to`` calls per frame before).

        ``busy``: peers the link has no room for now (a stalled IP peer's queue is full). Their
        frames wait and the others' go, FLASH excepted: a FLASH frame has room of its own."""
        state.blocked_until = None
        queue = state.queue
        skipped: Callable[[Item], bool] | None = None
        all_busy = bool(busy) and state.peers <= busy  # nobody else to give a frame: no walk
        if busy and not all_busy:

            def waits(item: Item) -> bool:
                return item.peer in busy and queue.priority_of(item) is not _FLASH

            skipped = waits

        for _ in range(queue.size() + 1):
            item = queue.peek() if skipped is None else queue.peek_skipping(skipped)
            if item is None:
                return None
            priority, flow = queue.place_of(item)
            if all_busy and priority is not _FLASH and item.peer in busy:
                return None
            origin: bytes | None = flow  # whose share of the link the frame spends
            held = None
            given = None  # copies handed to item.peer before: this frame is a retransmission
            if isinstance(item, _BUNDLE_ITEMS):
                held = self.held.get(item.bundle_id)
                if held is not None and held.given is not None:
                    given = held.given.get(item.peer)
                    if given is not None and isinstance(item, SendBundle):
                        # A bundle sent again to a peer that had it (a custody retransmission) is
                        # this relay's retry and counts against nobody. Counting retries made
                        # honest responders whose alarm frames were lost (10 % on LoRa) exceed their
                        # share and be paced like a flood (the reference scenario's FLASH median
                        # went from 1.17 to 1.74 times the oracle).
                        origin = None
            if lowest is not _BULK and (priority > lowest or state.bucket.over_cap(lowest, origin)):
                return None
            give = 0
            if held is not None:
                built = self._bundle_frame(state, held, item, given, now)  # type: ignore[arg-type]  # a bundle item
                data, give = (None, 0) if built is None else built
            else:
                data = None if isinstance(item, _BUNDLE_ITEMS) else self._control_frame(state, item)
            if data is None:
                queue.remove(item)
                continue
            continuing = isinstance(item, SendFragment)
            at = state.bucket.available_at(len(data), now, priority, origin, continuing)
            if at > now:
                state.blocked_until = at
                return None
            state.bucket.charge(len(data), now, priority, origin)
            queue.take(item)  # also passes the turn to the next flow
            state.last_class = priority
            state.last_implicit = ()
            if (
                state.implicit
                and isinstance(item, SendBundle)
                and (item.peer, item.bundle_id) not in state.transfers
            ):
                state.last_implicit = tuple(state.implicit.pop(item.bundle_id, ()))  # a whole DATA frame
            if held is not None:
                self._sent_bundle(state, item, held, give, given, now)  # type: ignore[arg-type]  # a bundle item
            else:
                self._sent_control(state, item, priority)
            return item.peer, data
        return None

    def _bundle_frame(
        self, state: LinkState, held: Held, item: SendBundle | SendFragment, given: int | None, now: float
    ) -> tuple[bytes, int] | None:
        """A bundle item's frame and the copies it hands over (:meth:`_give`), or None if it is not
        to be sent to that peer any more."""
        if item.peer not in state.peers or now >= held.id.created + held.lifetime:  # expired: no call
            return None
        if item.peer in held.holders:
            return None  # it has the bundle (its ACK or summary came after this was queued)
        if isinstance(item, SendFragment):
            outgoing = state.transfers.get((item.peer, item.bundle_id))
            if outgoing is None:
                return None
            return encode_frame(outgoing.fragments[item.number]), self._give(state, held, item.peer, given)
        give = self._give(state, held, item.peer, given)
        data = self._data_frame(state, held, item, give)
        if data is None:
            return None
        mtu = state.profile.mtu
        if len(data) <= mtu:
            return data, give
        outgoing = state.transfers.get((item.peer, item.bundle_id))
        if outgoing is None:
            fragments = split(data, mtu, state.new_transfer_id(item.peer))
            outgoing = OutgoingTransfer(fragments[0].transfer, fragments)
            state.transfers[(item.peer, item.bundle_id)] = outgoing
        return encode_frame(outgoing.fragments[0]), give

    def _control_frame(self, state: LinkState, item: Item) -> bytes | None:
        """The frame of an item that carries no bundle: ACKs, a fragment status, a summary, a beacon."""
        if isinstance(item, SendAcks):
            ids = self._ack_ids(state, item, state.queue.priority_of(item))
            return encode_frame(AckFrame(tuple(ids))) if ids else None
        if isinstance(item, SendStatus):
            status = state.statuses.get((item.peer, item.transfer))
            return None if status is None else encode_frame(status)
        if isinstance(item, SendSummary):
            room = summary_room(state.profile.mtu)
            replies = state.seen_replies.get(item.peer)
            if replies:
                return encode_frame(SummaryFrame(frozenset(sorted(replies)[:room]), complete=False))
            kept = self._summaries.get(state.profile.name)
            if kept is not None and kept[0] == self.held.changes and kept[1] == room:
                return kept[2]  # nothing held came or went: a link over its budget asks again
            ranked = sorted(self.held.values(), key=lambda h: (h.priority, h.id.created))
            hashes = frozenset(h.digest.to_bytes(HASH_LEN, "big") for h in ranked[:room])  # id_hash
            data = encode_frame(SummaryFrame(hashes, complete=len(ranked) <= room))
            self._summaries[state.profile.name] = (self.held.changes, room, data)
            return data
        if item.peer not in state.peers:
            return None
        return self.router.beacon_frame(state.profile, item.peer)

    def _ack_ids(self, state: LinkState, item: SendAcks, priority: Priority) -> list[BundleId]:
        """The ids one ACK frame to ``item.peer`` carries, most urgent first. An ACK riding at FLASH
        carries FLASH ids only: each id lengthens the frame (on LoRa 90 bytes take 1.05 s of air
        against 0.56 s for one id), and the relay's forward of the alarm waits behind it; the
        other ids follow in the next ACK frame, at their own class."""
        pending = state.acks.get(item.peer)
        if not pending:
            return []
        room = (state.profile.mtu - 2) // ID_KEY_LEN
        if room > 0xFF:  # a conditional, not min(): the builtin parses its arguments on every call
            room = 0xFF
        values = pending.values()
        # one id (most ACKs), or one class (a backlog's): the oldest, as sorting gives
        if len(pending) == 1 or min(values) == max(values):
            return list(islice(pending, room))
        ids = sorted(pending, key=pending.__getitem__)[:room]
        if priority is _FLASH:
            ids = [i for i in ids if pending[i] is _FLASH] or ids
        return ids

    def _give(self, state: LinkState, held: Held, peer: bytes, given: int | None) -> int:
        """Copies handed to ``peer`` with this bundle (``given``: those handed before, if any); 0 =
        the spray budget forbids sending it."""
        if given is not None:
            return given  # a retransmission carries what the first transmission promised
        if held.directed(peer, True):  # positional: no keyword matched per frame
            return 1  # directed: the next hop waits for a directed path too
        if is_costly(state.profile):
            return held.copies // 2  # binary spray-and-wait
        return held.copies

    def _data_frame(self, state: LinkState, held: Held, item: SendBundle, copies: int) -> bytes | None:
        peer = item.peer
        if copies < 1:
            held.unroute(peer)
            return None
        source: Bundle | bytes | None = held.bundle  # in memory: no read, no look at what follows
        if source is None:
            source = self.held.source(held, self._queued_after(state, item))
            if source is None:
                return None  # the store evicted it since; the core hears of it next
        copies, compact = copies if copies < MAX_COPIES else MAX_COPIES, state.profile.compact
        built = self._built.get(state.profile.name)
        if built is not None and built[0] is source and built[1] == copies and built[2] == compact:
            return built[3]  # the same frame again: a link over its budget asks after every event
        try:
            data = forwarded_data_frame(source, copies, compact)
        except BundleDecodeError as exc:  # only stored bytes are decoded here: the store's file is damaged
            self._damaged(held.id, str(exc))  # dropped, so the link goes on with the next frame
            return None
        self._built[state.profile.name] = (source, copies, compact, data)
        return data

    def _queued_after(self, state: LinkState, item: SendBundle) -> Iterator[Held]:
        """The held bundles queued behind ``item`` in its flow, which a store read fetches with it."""
        for following in state.queue.following(item):
            if isinstance(following, SendBundle):
                held = self.held.get(following.bundle_id)
                if held is not None:
                    yield held

    def _sent_bundle(
        self,
        state: LinkState,
        item: SendBundle | SendFragment,
        held: Held,
        give: int,
        given: int | None,
        now: float,
    ) -> None:
        """A bundle's frame went: copies handed over (``give``, as its frame counted them; ``given``:
        those handed before, None on a first send), the FLASH repeat on a lossy link, fragments
        queued behind the first, custody's timer started."""
        # its transfer, if fragmented (most links have none: no key made, no lookup per frame)
        outgoing = state.transfers.get((item.peer, item.bundle_id)) if state.transfers else None
        if given is None:
            if held.given is None:
                held.given = {item.peer: give}
            else:
                held.given[item.peer] = give
            if is_costly(state.profile) and not held.directed(item.peer, True):
                held.copies -= give
            if (
                held.priority is _FLASH
                and outgoing is None  # a whole DATA frame, not a transfer's first fragment
                and isinstance(item, SendBundle)
                and self.custody.lossy(state.profile.name, item.peer)
                and not state.bucket.over_cap(_FLASH, held.flow)
            ):
                # Sent twice on a link that lost a copy lately, or to a neighbour seen losing
                # frames (CustodyTracker.lossy): a lost alarm frame would wait a
                # custody timeout (~8 s on LoRa) at this hop. On a clean link (the radio's own
                # ARQ recovers) nothing is repeated, nor for an origin past its FLASH share (a
                # repeat, as a resend, is not paced: a flood's would be twice as loud). The
                # repeat queues behind what is waiting (a second path goes first) and is
                # skipped if the ACK came first.
                state.queue.push(item, _FLASH, held.flow)
        if outgoing is not None and isinstance(item, SendBundle):
            for fragment in reversed(outgoing.fragments[1:]):
                state.queue.push(
                    SendFragment(item.peer, item.bundle_id, fragment.index),
                    held.priority,
                    held.flow,
                    front=True,
                )
        self.custody.touch(item.bundle_id, item.peer, state.profile, now)

    def _sent_control(self, state: LinkState, item: Item, priority: Priority) -> None:
        """A control frame went: the ids an ACK carried, a status or a summary's replies are done."""
        if isinstance(item, SendAcks):
            pending = state.acks.get(item.peer, {})
            for bundle_id in self._ack_ids(state, item, priority):
                del pending[bundle_id]
            if pending:
                state.queue.push(item, min(pending.values()), CONTROL_FLOW)
            else:
                state.acks.pop(item.peer, None)
        elif isinstance(item, SendStatus):
            state.statuses.pop((item.peer, item.transfer), None)
        elif isinstance(item, SendSummary) and state.seen_replies.get(item.peer):
            room = summary_room(state.profile.mtu)
            replies = state.seen_replies[item.peer]
            replies.difference_update(sorted(replies)[:room])
            if replies:
                state.queue.push(item, _ROUTINE, CONTROL_FLOW)
