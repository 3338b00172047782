"""Custody: ACK only after durable acceptance, retransmission with backoff, FLASH kept to the receipt."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import random

from core_pump import Pump

from relay.bundle import Bundle, CompactContext, Destination, Priority
from relay.core.actions import Drop, MarkForwarded, Persist, StatusChanged
from relay.core.custody import LINK_MEMORY, LOSSY, CustodyTracker, initial_rto
from relay.core.frames import AckFrame, DataFrame, decode_frame, encode_frame
from relay.core.machine import RelayCore
from relay.core.receipts import State
from relay.links.base import LinkProfile

A, B, C = b"A" * 16, b"B" * 16, b"C" * 16
CONTEXT = CompactContext.from_names([A, B, C], [])
IP = LinkProfile("ip0", "ip", mtu=64000, bitrate=1e6)


def _bundle(priority: Priority, dest: bytes = B, seq: int = 1) -> Bundle:
    return Bundle(A, Destination.to_node(dest), 0, seq, 3600, priority, 1, b"hello")


def _data_times(core: RelayCore, until: float, dt: float = 0.25) -> list[float]:
    times, now = [], 0.0
    while now < until:
        core.timer(now)
        out = core.next_frame("ip0", now)
        while out is not None:
            if isinstance(decode_frame(out[1], CONTEXT), DataFrame):
                times.append(now)
            out = core.next_frame("ip0", now)
        now += dt
    return times


def test_unacknowledged_copy_is_retransmitted_with_exponential_backoff() -> None:
    core = RelayCore(A, context=CONTEXT)
    core.link_up(IP, B, 0.0)
    core.originate(_bundle(Priority.ROUTINE), 0.0)
    times = _data_times(core, 70.0)
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(times)]
    rto = initial_rto(IP)
    assert gaps[:4] == [rto, rto * 2, rto * 4, rto * 8]


def test_ack_waits_for_persistence_then_sender_drops_its_copy() -> None:
    sender, receiver = RelayCore(A, context=CONTEXT), RelayCore(B, context=CONTEXT)
    for core, peer in ((sender, B), (receiver, A)):
        core.link_up(IP, peer, 0.0)
    bundle = _bundle(Priority.PRIORITY, dest=C)
    receiver.link_up(IP, C, 0.0)  # the receiver knows the destination: a directed hop for the sender
    sender.router.beacon_received("ip0", B, receiver.router.make_beacon(IP, A), 0.0)
    sender.originate(bundle, 0.0)
    data = None
    while (out := sender.next_frame("ip0", 0.0)) is not None:
        if isinstance(decode_frame(out[1], CONTEXT), DataFrame):
            data = out[1]
    assert data is not None
    actions = receiver.frame("ip0", A, data, 0.0)
    assert [isinstance(a, Persist) for a in actions] == [True]
    frames = []
    while (out := receiver.next_frame("ip0", 0.0)) is not None:
        frames.append(decode_frame(out[1], CONTEXT))
    assert not any(isinstance(f, AckFrame) for f in frames), "ACK before the store said durable"
    receiver.persisted([bundle.id], [], 0.0)
    ack = None
    while (out := receiver.next_frame("ip0", 0.0)) is not None:
        if isinstance(decode_frame(out[1], CONTEXT), AckFrame) and out[0] == A:
            ack = out[1]
    assert ack is not None
    result = sender.frame("ip0", B, ack, 0.0)
    assert not any(isinstance(a, MarkForwarded) for a in result), "a record the drop deletes at once"
    assert any(isinstance(a, Drop) for a in result) and not sender.holds(bundle.id)
    assert any(isinstance(a, StatusChanged) and a.status.state is State.FORWARDED for a in result)
    assert sender.status(bundle.id).peer == B


def test_flash_copy_is_kept_until_the_end_to_end_receipt() -> None:
    pump = Pump(CONTEXT)
    a, b = pump.add(A), pump.add(B)
    pump.connect(IP, A, B, 0.0)
    bundle = _bundle(Priority.FLASH)
    a.apply(a.core.originate(bundle, 0.0), 0.0)
    pump.run(0.0, 3.0)
    assert [x.id for x in b.delivered] == [bundle.id]
    assert a.core.holds(bundle.id), "FLASH dropped before the receipt"
    assert a.core.status(bundle.id).state is State.FORWARDED
    frames_before = pump.frames_sent
    pump.run(3.0, 30.0)
    data_resent = pump.frames_sent - frames_before
    assert data_resent < 5, "an acknowledged FLASH copy is not sent again"
    actions = a.core.receipt(bundle.id, 30.0, b.core.node_id)
    assert not a.core.holds(bundle.id)
    assert a.core.status(bundle.id).state is State.DELIVERED
    assert any(isinstance(x, Drop) for x in actions)


def test_duplicate_arrivals_are_acknowledged_and_delivered_once() -> None:
    pump = Pump(CONTEXT)
    a, b = pump.add(A), pump.add(B)
    pump.connect(IP, A, B, 0.0)
    bundle = _bundle(Priority.PRIORITY)
    a.apply(a.core.originate(bundle, 0.0), 0.0)
    data = None
    while (out := a.core.next_frame("ip0", 0.0)) is not None:
        if isinstance(decode_frame(out[1], CONTEXT), DataFrame):
            data = out[1]
    assert data is not None
    for _ in range(3):
        b.apply(b.core.frame("ip0", A, data, 0.0), 0.0)
    assert [x.id for x in b.delivered] == [bundle.id]
    assert sum(isinstance(x, Persist) for x in b.actions) == 1


def test_tracker_deadlines_come_due_in_first_sent_order_and_an_ack_ends_the_backoff() -> None:
    """The tracker keeps deadlines in a heap: due copies in the order first sent (as the scan of
    every copy gave them), a copy nobody retried stays due, and an ACK frame from the neighbour
    still resets a backed-off copy to the base timeout."""
    tracker = CustodyTracker()
    ids = [_bundle(Priority.ROUTINE, seq=n).id for n in (3, 1, 2)]
    for n, bundle_id in enumerate(ids):
        tracker.touch(bundle_id, B, IP, float(n))  # MIN_RTO_S: deadlines 2, 3, 4
    assert tracker.next_deadline() == 2.0
    assert [f.bundle_id for f in tracker.due(10.0)] == ids
    assert [f.bundle_id for f in tracker.due(10.0)] == ids, "a copy left alone stays due"
    tracker.retry(ids[0], B, 10.0)  # backed off: 4 s, due at 14
    tracker.acknowledged(ids[1], B)
    tracker.acknowledged(ids[2], B)
    assert tracker.next_deadline() == 14.0 and not tracker.due(13.0)
    tracker.peer_alive(B, IP, 11.0)
    flight = tracker.get(ids[0], B)
    assert flight is not None and flight.rto == 2.0
    assert tracker.next_deadline() == 13.0


def test_on_an_ordered_link_a_copy_waits_while_the_neighbour_acknowledges_older_ones() -> None:
    """An IP session delivers in order and loses frames only with the connection: a copy whose
    timeout passed while the neighbour keeps acknowledging is queued there, not lost. It becomes
    due a timeout after the last ACK, or a timeout after a due check found a copy sent after it
    acknowledged (refused; the grace covers batches finishing out of order at the receiver). An
    unordered link resends as before."""
    ordered = LinkProfile("ip0", "ip", mtu=64000, bitrate=1e6, ordered=True)
    for profile, held in ((ordered, True), (IP, False)):
        tracker = CustodyTracker()
        ids = [_bundle(Priority.ROUTINE, seq=n).id for n in range(6)]
        for bundle_id in ids:
            tracker.touch(bundle_id, B, profile, 0.0)  # MIN_RTO_S: all due at 2
        tracker.acknowledged(ids[0], B, 1.9)
        due = [f.bundle_id for f in tracker.due(2.5)]
        if not held:
            assert due == ids[1:]
            continue
        assert due == [] and tracker.next_deadline() == 3.9  # 2 s after the last ACK
        tracker.acknowledged(ids[1], B, 3.0)
        assert [f.bundle_id for f in tracker.due(3.9)] == [] and tracker.next_deadline() == 5.0
        tracker.acknowledged(ids[3], B, 4.0)  # a later copy arrived: ids[2] refused, or reordered
        assert [f.bundle_id for f in tracker.due(5.0)] == []  # overtaken seen now: 2 s of grace
        tracker.acknowledged(ids[4], B, 5.5)
        tracker.acknowledged(ids[5], B, 6.5)
        assert [f.bundle_id for f in tracker.due(6.9)] == []
        assert [f.bundle_id for f in tracker.due(7.0)] == [ids[2]]  # the ACKs go on: refused
        assert tracker.retries == 0
        tracker.retry(ids[2], B, 7.0)
        assert tracker.retries == 1


LORA = LinkProfile(
    "lora0", "lora", mtu=219, bitrate=130.0, cost=10.0, duty_cycle=0.1, compact=True, per_frame_overhead_s=0.4
)


def _data_ids(core: RelayCore, link: str, now: float) -> list[tuple[bytes, object]]:
    """Every frame the core sends now on ``link``, DATA as (peer, bundle id), others as (peer, type)."""
    sent: list[tuple[bytes, object]] = []
    while (out := core.next_frame(link, now)) is not None:
        frame = decode_frame(out[1], CONTEXT)
        sent.append((out[0], frame.bundle.id if isinstance(frame, DataFrame) else type(frame)))
    return sent


def test_a_neighbours_loss_estimate_rises_with_timeouts_and_fades_with_acks() -> None:
    tracker = CustodyTracker()
    assert tracker.loss("lora0", B) == 0.0 and not tracker.lossy("lora0", B)
    bundle = _bundle(Priority.ROUTINE)
    tracker.touch(bundle.id, B, LORA, 0.0)
    tracker.acknowledged(bundle.id, B, 5.0)
    assert tracker.loss("lora0", B) == 0.0, "a clean link is never lossy"
    tracker.touch(bundle.id, B, LORA, 10.0)
    tracker.retry(bundle.id, B, 20.0)  # its timeout passed: one loss
    assert tracker.loss("lora0", B) >= LOSSY and tracker.loss("lora0", C) == 0.0
    tracker.acknowledged(bundle.id, B, 21.0)
    acks = 0
    while tracker.loss("lora0", B) >= LOSSY:
        tracker.touch(bundle.id, B, LORA, 30.0)
        tracker.acknowledged(bundle.id, B, 31.0)
        acks += 1
    assert 3 <= acks <= 10, acks
    for _ in range(20):
        tracker.touch(bundle.id, B, LORA, 40.0)
        tracker.acknowledged(bundle.id, B, 41.0)
    assert tracker.loss("lora0", B) == 0.0, "long clean again: forgotten"


def test_a_link_that_lost_a_copy_lately_is_lossy_for_every_neighbour_on_it() -> None:
    """A relay sends each responder a few frames an hour: its first alarm to one of them must not
    go once on a medium that has just lost a copy to another neighbour. Forgotten after LINK_MEMORY
    clean outcomes on the link; a neighbour's own estimate still counts on its own."""
    tracker = CustodyTracker()
    bundle = _bundle(Priority.ROUTINE)
    tracker.touch(bundle.id, B, LORA, 0.0)
    tracker.retry(bundle.id, B, 10.0)  # lost to B
    assert tracker.lossy("lora0", C) and tracker.loss("lora0", C) == 0.0, "C: the link's loss"
    assert not tracker.lossy("ip0", C), "another link is not judged by this one"
    for step in range(LINK_MEMORY):
        assert tracker.lossy("lora0", C), step
        tracker.touch(bundle.id, C, LORA, 20.0 + step)
        tracker.acknowledged(bundle.id, C, 20.5 + step)
    assert not tracker.lossy("lora0", C), "clean for LINK_MEMORY outcomes: forgotten"
    assert tracker.lossy("lora0", B), "B's own estimate still says it lost a copy"


def test_flash_goes_twice_only_to_a_neighbour_seen_losing_frames() -> None:
    """On a clean link (the emulated Meshtastic air, the radio's own ARQ) a FLASH goes once; after a
    custody timeout on that neighbour it goes twice at once, and the repeat yields to the ACK."""
    core = RelayCore(A, context=CONTEXT)
    core.link_up(LORA, B, 0.0)
    core.timer(10.0)  # the summary wait is over
    _data_ids(core, "lora0", 10.0)
    first = _bundle(Priority.FLASH, seq=1)
    core.originate(first, 10.0)
    assert [peer for peer, what in _data_ids(core, "lora0", 10.0) if what == first.id] == [B]
    core.timer(100.0)  # no ACK came: the copy times out and goes again, once
    assert [what for _, what in _data_ids(core, "lora0", 100.0)].count(first.id) == 1
    assert core.custody.lossy("lora0", B)
    second = _bundle(Priority.FLASH, seq=2)
    core.originate(second, 101.0)
    sent = _data_ids(core, "lora0", 101.0)
    assert [peer for peer, what in sent if what == second.id] == [B, B]
    third = _bundle(Priority.FLASH, seq=3)
    core.originate(third, 102.0)
    assert _data_ids(core, "lora0", 102.0)[:1] == [(B, third.id)]  # one frame taken, the repeat waits
    core.frame("lora0", B, _ack(third), 103.0)
    assert third.id not in [what for _, what in _data_ids(core, "lora0", 103.0)], "ACK came: no repeat"


def test_flash_goes_twice_on_a_link_that_does_not_retransmit_until_it_proved_clean() -> None:
    """A link whose lost frames stay lost (the simulator's LoRa without its radio's ARQ) starts as if
    it had just lost a copy: a responder's first alarm there goes twice, before any loss was seen,
    until LINK_MEMORY ACKs in a row. A link that retransmits itself (every real one) repeats nothing
    before a loss (the test above)."""
    core = RelayCore(A, context=CONTEXT)
    core.link_up(dataclasses.replace(LORA, retransmits=False), B, 0.0)
    core.timer(10.0)
    _data_ids(core, "lora0", 10.0)
    assert core.custody.lossy("lora0", B)
    first = _bundle(Priority.FLASH, seq=1)
    core.originate(first, 10.0)
    assert [peer for peer, what in _data_ids(core, "lora0", 10.0) if what == first.id] == [B, B]
    tracker = CustodyTracker()
    tracker.unproven("lora0")
    bundle = _bundle(Priority.ROUTINE)
    for step in range(LINK_MEMORY):
        assert tracker.lossy("lora0", B), step
        tracker.touch(bundle.id, B, LORA, 20.0 + step)
        tracker.acknowledged(bundle.id, B, 20.5 + step)
    assert not tracker.lossy("lora0", B), "LINK_MEMORY ACKs in a row: clean"


def _ack(bundle: Bundle) -> bytes:
    return encode_frame(AckFrame((bundle.id,)))


def test_an_ack_frame_at_flash_carries_only_flash_ids() -> None:
    """A FLASH's custody ACK is the relay's frame before its forward: a long ACK frame (every id
    pending) delays the alarm, so the lower classes' ids follow in a frame of their own."""
    core = RelayCore(B, context=CONTEXT)
    core.link_up(LORA, A, 0.0)
    core.timer(10.0)
    _data_ids(core, "lora0", 10.0)
    routine = [_bundle(Priority.ROUTINE, dest=C, seq=seq) for seq in (1, 2, 3)]
    flash = _bundle(Priority.FLASH, dest=C, seq=4)
    for bundle in [*routine, flash]:
        core.frame("lora0", A, encode_frame(DataFrame(bundle, 1, compact=True)), 10.0)
    core.persisted([b.id for b in [*routine, flash]], [], 10.0)
    acks = []
    while (out := core.next_frame("lora0", 10.0)) is not None:
        frame = decode_frame(out[1], CONTEXT)
        if isinstance(frame, AckFrame):
            acks.append(set(frame.ids))
    assert acks == [{flash.id}, {b.id for b in routine}]


def test_an_origin_past_its_flash_share_gets_no_repeat() -> None:
    """A repeat is not paced like the origin's own frames, so a flood past its share gets none."""
    core = RelayCore(A, context=CONTEXT)
    core.link_up(LORA, B, 0.0)
    core.timer(10.0)
    _data_ids(core, "lora0", 10.0)
    first = _bundle(Priority.FLASH, seq=1)
    core.originate(first, 10.0)
    _data_ids(core, "lora0", 10.0)
    core.timer(100.0)
    _data_ids(core, "lora0", 100.0)
    assert core.custody.lossy("lora0", B)
    flood = [_bundle(Priority.FLASH, seq=seq) for seq in range(2, 40)]
    sent: list[object] = []
    now = 101.0
    for bundle in flood:
        core.originate(bundle, now)
    while now < 400.0:
        sent += [what for _, what in _data_ids(core, "lora0", now)]
        now += 1.0
    times = [sent.count(b.id) for b in flood if b.id in sent]
    assert times[0] == 2 and times[-1] == 1 and set(times) == {1, 2}, times


def test_a_silent_neighbour_on_an_ordered_link_gets_one_copy_again_not_its_backlog() -> None:
    """A neighbour that stops answering on a live IP session (a stalled disk) is working through its
    queue or refusing: the oldest due copy goes again as a probe and the others wait until it is
    answered or a timeout later, not the whole backlog at once. An answer ends the probe; the
    connection's end hands every copy back."""
    ordered = LinkProfile("ip0", "ip", mtu=64000, bitrate=1e6, ordered=True)
    tracker = CustodyTracker()
    ids = [_bundle(Priority.ROUTINE, seq=n).id for n in range(5)]
    for n, bundle_id in enumerate(ids):
        tracker.touch(bundle_id, B, ordered, n * 0.01)  # MIN_RTO_S: due from 2.0 to 2.04
    assert [f.bundle_id for f in tracker.due(2.0)] == [ids[0]]
    tracker.retry(ids[0], B, 2.0)
    assert [f.bundle_id for f in tracker.due(2.05)] == []  # the others wait behind the probe
    assert tracker.next_deadline() == 4.0
    assert [f.bundle_id for f in tracker.due(4.0)] == [ids[1]]  # still silent: the next probe
    tracker.retry(ids[1], B, 4.0)
    tracker.acknowledged(ids[0], B, 4.5)  # it woke: the rest are queued there, 2 s from its answer
    assert [f.bundle_id for f in tracker.due(6.0)] == []
    tracker.acknowledged(ids[2], B, 6.1)
    assert sorted(f.bundle_id for f in tracker.forget_link("ip0", B)) == sorted([ids[1], ids[3], ids[4]])
    assert tracker.retries == 2


def test_the_next_deadline_is_kept_only_until_a_copy_moves_or_leaves() -> None:
    """next_deadline is asked after every event and kept meanwhile: after touches, retries, losses,
    ACKs and dues it is what a fresh look at every copy in flight gives."""
    rng = random.Random(15)
    tracker = CustodyTracker()
    ids = [_bundle(Priority.ROUTINE, seq=n).id for n in range(12)]
    now = 0.0
    for _ in range(600):
        now += rng.random()
        bundle_id, peer = rng.choice(ids), rng.choice((B, C))
        step = rng.randrange(5)
        if step == 0:
            tracker.touch(bundle_id, peer, rng.choice((IP, LORA)), now)
        elif step == 1:
            tracker.retry(bundle_id, peer, now)
        elif step == 2:
            tracker.acknowledged(bundle_id, peer, now)
        elif step == 3:
            tracker.lost(bundle_id, peer, "lora0", now, 0.5)
        else:
            tracker.due(now)
        fresh = copy.deepcopy(tracker)
        fresh._next = None
        assert tracker.next_deadline() == fresh.next_deadline()
