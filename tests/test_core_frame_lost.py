"""A frame the link gave up on (LoRa: MAX_RETRANSMIT) is resent after a short random delay, once per
copy, and the custody backoff goes on from there (RelayCore.frame_lost, CustodyTracker.lost)."""

from __future__ import annotations

from relay.bundle import Bundle, CompactContext, Destination, Priority
from relay.core.custody import initial_rto
from relay.core.frames import AckFrame, DataFrame, decode_frame, encode_frame
from relay.core.machine import RelayCore
from relay.links.base import LinkProfile

A, B = b"A" * 16, b"B" * 16
CONTEXT = CompactContext.from_names([A, B], [])
# A slow radio-like link (unordered): a frame takes 1 s, so the first timeout's floor is 4 s.
RADIO = LinkProfile("lora0", "lora", mtu=200, bitrate=200.0)


def _bundle(seq: int) -> Bundle:
    return Bundle(A, Destination.to_node(B), 0, seq, 3600, Priority.FLASH, 1, b"alarm")


def _data(core: RelayCore, now: float) -> list[bytes]:
    """The DATA frames ``core`` gives for the link at ``now`` (its timers run first)."""
    core.timer(now)
    frames = []
    while (out := core.next_frame(RADIO.name, now)) is not None:
        if isinstance(decode_frame(out[1], CONTEXT), DataFrame):
            frames.append(out[1])
    return frames


def _sender_with_slow_round_trips() -> RelayCore:
    """A sender whose measured round trip makes the custody timeout long (60 s ACKs: 180 s),
    as a loaded LoRa relay's (87 s in the rogue-flood run)."""
    core = RelayCore(A, context=CONTEXT)
    core.link_up(RADIO, B, 0.0)
    first = _bundle(1)
    core.originate(first, 0.0)
    assert _data(core, 0.0)
    core.frame(RADIO.name, B, encode_frame(AckFrame((first.id,))), 60.0)
    flight_rto = core.custody.rto(RADIO)
    assert flight_rto >= 100.0, flight_rto
    return core


def test_a_lost_data_frame_goes_again_within_four_frame_times_then_backs_off_as_before() -> None:
    core = _sender_with_slow_round_trips()
    alarm = _bundle(2)
    core.originate(alarm, 60.0)
    (frame,) = _data(core, 60.0)
    rto = core.custody.rto(RADIO)
    core.frame_lost(RADIO.name, B, frame, 75.0)  # the radio's three transmissions failed
    assert core.frames_lost == 1
    lost = core.custody.get(alarm.id, B)
    assert lost is not None and 75.0 <= lost.deadline <= 75.0 + initial_rto(RADIO)
    deadline = lost.deadline
    assert _data(core, deadline) == [frame], "the copy goes again after the short delay"
    # The same copy lost again: no second early resend. The early one did not back off: the next
    # comes a timeout later, then the intervals double as without the loss report.
    core.frame_lost(RADIO.name, B, frame, deadline + 15.0)
    assert core.frames_lost == 1
    flight = core.custody.get(alarm.id, B)
    assert flight is not None and flight.attempts == 2
    assert flight.deadline == deadline + rto
    assert _data(core, flight.deadline - 1.0) == []
    resent = flight.deadline
    assert _data(core, resent) == [frame]
    assert flight.attempts == 3 and flight.deadline == resent + 2 * rto


def test_two_nodes_draw_different_delays_and_a_run_repeats() -> None:
    """Two hidden terminals whose frames collided have equal firmware retry timers: the resend
    delay is drawn per node (seeded by its id), so they part; the same node draws the same."""

    def delay(node: bytes) -> float:
        peer = B if node != B else A
        core = RelayCore(node, context=CONTEXT)
        core.link_up(RADIO, peer, 0.0)
        bundle = Bundle(node, Destination.to_node(peer), 0, 1, 3600, Priority.FLASH, 1, b"x")
        core.originate(bundle, 0.0)
        while (out := core.next_frame(RADIO.name, 0.0)) is not None:
            if isinstance(decode_frame(out[1], CONTEXT), DataFrame):
                core.frame_lost(RADIO.name, peer, out[1], 0.0)
        flight = core.custody.get(bundle.id, peer)
        assert flight is not None and core.frames_lost == 1
        return flight.deadline

    assert delay(A) == delay(A)
    assert delay(A) != delay(B)


def test_a_lost_control_frame_or_an_acknowledged_copy_changes_nothing() -> None:
    core = RelayCore(A, context=CONTEXT)
    core.link_up(RADIO, B, 0.0)
    alarm = _bundle(1)
    core.originate(alarm, 0.0)
    (frame,) = _data(core, 0.0)
    before = core.next_deadline()
    core.frame_lost(RADIO.name, B, encode_frame(AckFrame((alarm.id,))), 1.0)  # a custody ACK
    core.frame_lost("nowhere", B, frame, 1.0)  # a link the core does not know
    assert core.next_deadline() == before and core.frames_lost == 0
    core.frame(RADIO.name, B, encode_frame(AckFrame((alarm.id,))), 2.0)
    core.frame_lost(RADIO.name, B, frame, 3.0)  # the ACK came first: nothing in flight
    assert core.frames_lost == 0 and core.custody.get(alarm.id, B) is None
