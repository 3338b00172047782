"""Per-link transmit state: the fair queue of things to send and the control frames waiting.

Queue items are small frozen keys, not frames: the frame is built when the link is ready, so it
reflects the latest state (copies left, ACKs accumulated) and a stale item costs nothing. They are
named tuples, not frozen dataclasses, as ``BundleId`` is: the queue hashes and compares them on
every push, take and removal (97,000 hashes a reference run), and a tuple does both in C where a
dataclass ran its generated ``__hash__`` (0.39 -> 0.08 µs a lookup). Items of two kinds are never
equal: their fields differ in number or type, or in ``kind``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from relay.bundle import BundleId, Priority
from relay.core.fragments import OutgoingTransfer
from relay.core.frames import FragmentStatusFrame
from relay.core.scheduler import FairQueue, TokenBucket
from relay.links.base import LinkProfile

CONTROL_FLOW = b""  # control frames form their own flow within their class


class SendBundle(NamedTuple):
    peer: bytes
    bundle_id: BundleId


# (peer, bundle id) -> SendBundle through tuple.__new__: a NamedTuple's own constructor is a Python
# __new__ (about 2,500 instructions on Python 3.11), and the core makes one per bundle it routes
send_bundle: Callable[[tuple[bytes, BundleId]], SendBundle] = functools.partial(tuple.__new__, SendBundle)


class SendFragment(NamedTuple):
    peer: bytes
    bundle_id: BundleId
    number: int  # the fragment's index (``index`` is a tuple's method)


class SendAcks(NamedTuple):
    peer: bytes
    kind: str = "acks"  # tuples of equal fields are equal: the kind keeps the one-peer items apart


class SendStatus(NamedTuple):
    peer: bytes
    transfer: int


class SendSummary(NamedTuple):
    peer: bytes
    kind: str = "summary"


class SendBeacon(NamedTuple):
    peer: bytes  # one per neighbour: each omits the routes that go through it (poisoned reverse)
    kind: str = "beacon"


Item = SendBundle | SendFragment | SendAcks | SendStatus | SendSummary | SendBeacon


@dataclass
class LinkState:
    profile: LinkProfile
    bucket: TokenBucket
    next_beacon: float
    last_beacon: float | None = None  # when beacons last went out (triggered ones keep a gap)
    paced: dict[bytes, float] = field(default_factory=dict)  # peers beaconed at their own pace: when next
    queue: FairQueue[Item] = field(default_factory=FairQueue)
    peers: set[bytes] = field(default_factory=set)
    acks: dict[bytes, dict[BundleId, Priority]] = field(default_factory=dict)
    # one queue item per peer, made once, not one per ACK (a receiver queues one per bundle)
    ack_items: dict[bytes, SendAcks] = field(default_factory=dict)
    statuses: dict[tuple[bytes, int], FragmentStatusFrame] = field(default_factory=dict)
    seen_replies: dict[bytes, set[bytes]] = field(default_factory=dict)  # peer -> id hashes to report
    transfers: dict[tuple[bytes, BundleId], OutgoingTransfer] = field(default_factory=dict)
    transfer_ids: dict[bytes, int] = field(default_factory=dict)
    blocked_until: float | None = None  # over budget: when the head of the queue fits again
    last_class: Priority | None = None  # the class of the last frame sent (the simulator's probe)
    # implicit ACKs (LinkProfile.implicit_ack): per bundle, the neighbours whose custody ACK is our
    # next DATA frame of it on this link; and the neighbours the last frame given acknowledges
    implicit: dict[BundleId, list[bytes]] = field(default_factory=dict)
    last_implicit: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        self.queue.over_cap = self.bucket.over_cap  # origins past their FLASH/IMMEDIATE share go last

    def queue_ack(self, peer: bytes, bundle_id: BundleId, priority: Priority) -> None:
        """Accumulate custody ACKs per peer; the ACK item rides at the most urgent class waiting."""
        pending = self.acks.get(peer)  # not setdefault(peer, {}): that makes a dict per ACK
        if pending is None:
            pending = self.acks[peer] = {}
        pending[bundle_id] = priority
        item = self.ack_items.get(peer)
        if item is None:
            item = self.ack_items[peer] = SendAcks(peer)
        # Queued, the item rides at the most urgent class pending (pending only grows while it is
        # queued): O(1) per ACK, not a min over a batch's worth of pending ACKs.
        if self.queue.stays(item, priority):
            return  # a batch's ACKs after its first: moving the item again would leave it in place
        if item in self.queue:  # a conditional, not min(): the builtin parses its arguments on every call
            best = self.queue.priority_of(item)
            if priority < best:
                best = priority
        else:
            best = min(pending.values())
        self.queue.remove(item)
        self.queue.push(item, best, CONTROL_FLOW)

    def new_transfer_id(self, peer: bytes) -> int:
        value = self.transfer_ids.get(peer, -1) + 1 & 0xFF
        self.transfer_ids[peer] = value
        return value

    def transfer_by_id(self, peer: bytes, transfer: int) -> tuple[BundleId, OutgoingTransfer] | None:
        for (to, bundle_id), outgoing in self.transfers.items():
            if to == peer and outgoing.transfer == transfer:
                return bundle_id, outgoing
        return None

    def forget_peer(self, peer: bytes) -> None:
        for item in self.queue:
            if getattr(item, "peer", None) == peer:
                self.queue.remove(item)
        self.acks.pop(peer, None)
        self.ack_items.pop(peer, None)
        self.paced.pop(peer, None)
        self.seen_replies.pop(peer, None)
        self.transfer_ids.pop(peer, None)
        for key in [k for k in self.statuses if k[0] == peer]:
            del self.statuses[key]
        for transfer_key in [k for k in self.transfers if k[0] == peer]:
            del self.transfers[transfer_key]
