"""The implicit custody ACK (LinkProfile.implicit_ack): a relay that forwards a FLASH on the link it
came in on sends no ACK frame; the previous hop takes the overheard forward as the ACK, and only
that: a frame from another neighbour, or of another bundle, acknowledges nothing."""

from __future__ import annotations

from dataclasses import replace

from relay.bundle import Bundle, CompactContext, Destination, Priority
from relay.core.actions import Persist, StatusChanged
from relay.core.frames import AckFrame, DataFrame, decode_frame
from relay.core.machine import RelayCore
from relay.core.receipts import State
from relay.links.base import LinkProfile

A, R, B, C = b"A" * 16, b"R" * 16, b"B" * 16, b"C" * 16  # origin, relay, next hop, destination
CONTEXT = CompactContext.from_names([A, R, B, C], [])
PLAIN = LinkProfile(
    "lora0", "lora", mtu=219, bitrate=130.0, cost=10.0, duty_cycle=0.1, compact=True, per_frame_overhead_s=0.4
)
LORA = replace(PLAIN, implicit_ack=True)
IP = LinkProfile("ip0", "ip", mtu=64000, bitrate=1e6)


def _alarm(seq: int = 1) -> Bundle:
    return Bundle(A, Destination.to_node(C), 0, seq, 3600, Priority.FLASH, 1, b"alarm")


def _field(lora: LinkProfile, relay_to_b: LinkProfile) -> tuple[RelayCore, RelayCore]:
    """A -- R on ``lora``; R -- B on ``relay_to_b``; B -- C on IP. Routes learned from beacons."""
    a, r, b = (RelayCore(n, context=CONTEXT) for n in (A, R, B))
    a.link_up(lora, R, 0.0)
    r.link_up(lora, A, 0.0)
    if relay_to_b.name != lora.name:
        r.link_up(relay_to_b, B, 0.0)
    else:
        r.link_up(lora, B, 0.0)
    b.link_up(relay_to_b, R, 0.0)
    b.link_up(IP, C, 0.0)
    r.router.beacon_received(relay_to_b.name, B, b.router.make_beacon(relay_to_b, R), 0.0)
    a.router.beacon_received(lora.name, R, r.router.make_beacon(lora, A), 0.0)
    return a, r


def _sent(core: RelayCore, link: str, now: float) -> list[tuple[bytes, object, tuple[bytes, ...], bytes]]:
    """Every frame sent now: (peer, bundle id or frame type, the neighbours it acknowledges, bytes)."""
    out = []
    while (pulled := core.next_frame(link, now)) is not None:
        frame = decode_frame(pulled[1], CONTEXT)
        what = frame.bundle.id if isinstance(frame, DataFrame) else type(frame)
        out.append((pulled[0], what, core.take_implicit_acks(link), pulled[1]))
    return out


def _relay_takes(a: RelayCore, r: RelayCore, bundle: Bundle, now: float) -> bytes:
    """A sends ``bundle`` to R, R stores it: the DATA frame A sent."""
    a.originate(bundle, now)
    data = next(raw for peer, what, _, raw in _sent(a, "lora0", now) if peer == R and what == bundle.id)
    assert [isinstance(x, Persist) for x in r.frame("lora0", A, data, now)] == [True]
    r.persisted([bundle.id], [], now)
    return data


def test_the_relays_forward_is_the_ack_and_the_origin_takes_it() -> None:
    a, r = _field(LORA, LORA)
    alarm = _alarm()
    _relay_takes(a, r, alarm, 1.0)
    sent = _sent(r, "lora0", 1.0)
    assert not any(what is AckFrame for _, what, _, _ in sent), "no ACK frame before (or after) the forward"
    forward = [(peer, acks, raw) for peer, what, acks, raw in sent if what == alarm.id]
    assert forward[0][:2] == (B, (A,)), "the first DATA frame to B acknowledges A"
    assert a.custody.get(alarm.id, R) is not None
    actions = a.overheard("lora0", R, forward[0][2], 1.5)
    assert a.custody.get(alarm.id, R) is None, "the overheard forward ended A's custody timer"
    assert any(isinstance(x, StatusChanged) and x.status.state is State.FORWARDED for x in actions)
    assert a.holds(alarm.id), "the origin keeps its FLASH to the end-to-end receipt, as after an ACK frame"
    assert a.implicit_acks == 1


def test_an_overheard_frame_acknowledges_only_its_bundle_from_the_neighbour_that_has_it() -> None:
    a, r = _field(LORA, LORA)
    first, second = _alarm(1), _alarm(2)
    _relay_takes(a, r, first, 1.0)
    forward = next(raw for peer, what, _, raw in _sent(r, "lora0", 1.0) if what == first.id)
    a.originate(second, 1.0)
    _sent(a, "lora0", 1.0)  # the second alarm's frame to R, which R has not answered
    assert a.overheard("lora0", B, forward, 1.5) == [], "B was never given it: no custody of B's"
    assert a.custody.get(first.id, R) is not None
    a.overheard("lora0", R, forward, 1.5)
    assert a.custody.get(first.id, R) is None
    assert a.custody.get(second.id, R) is not None, "a forward of one bundle acknowledges no other"
    assert a.implicit_acks == 1


def test_a_missed_forward_ends_in_an_explicit_ack_to_the_resend() -> None:
    a, r = _field(LORA, LORA)
    alarm = _alarm()
    data = _relay_takes(a, r, alarm, 1.0)
    _sent(r, "lora0", 1.0)  # the forward, which A does not hear
    assert r.frame("lora0", A, data, 9.0) == [], "the resend is a duplicate here"
    acks = [(peer, raw) for peer, what, _, raw in _sent(r, "lora0", 9.0) if what is AckFrame]
    assert [peer for peer, _ in acks] == [A]
    a.frame("lora0", R, acks[0][1], 9.5)
    assert a.custody.get(alarm.id, R) is None


def test_an_explicit_ack_where_the_forward_goes_elsewhere_or_the_link_cannot_carry_it() -> None:
    for lora, onward in ((LORA, IP), (PLAIN, PLAIN)):
        a, r = _field(lora, onward)
        alarm = _alarm()
        _relay_takes(a, r, alarm, 1.0)
        sent = _sent(r, "lora0", 1.0)
        assert (sent[0][0], sent[0][1], sent[0][2]) == (A, AckFrame, ()), lora
        assert r.take_implicit_acks("lora0") == ()
