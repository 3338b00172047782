"""A relay that holds a FLASH it cannot route on says "seen", not custody, so its sender keeps its
copy and its other path; and a copy due again to a neighbour that has the bundle ends its wait
instead of timing out again and again with nothing sent."""

from __future__ import annotations

from relay.bundle import Bundle, CompactContext, Destination, Priority
from relay.core.actions import Drop, Persist
from relay.core.frames import AckFrame, DataFrame, SummaryFrame, decode_frame, encode_frame, id_hash
from relay.core.machine import RelayCore
from relay.links.base import LinkProfile

# origin, relay, dead end, next hop, destination
A, R, D, B, C = b"A" * 16, b"R" * 16, b"D" * 16, b"B" * 16, b"C" * 16
CONTEXT = CompactContext.from_names([A, R, D, B, C], [])
LORA = LinkProfile(
    "lora0",
    "lora",
    mtu=219,
    bitrate=130.0,
    cost=10.0,
    duty_cycle=0.1,
    compact=True,
    per_frame_overhead_s=0.4,
    implicit_ack=True,
)
IP = LinkProfile("ip0", "ip", mtu=64000, bitrate=1e6)


def _alarm() -> Bundle:
    return Bundle(A, Destination.to_node(C), 0, 1, 3600, Priority.FLASH, 1, b"alarm")


def _frames(core: RelayCore, link: str, now: float) -> list[tuple[bytes, object, bytes]]:
    """Every frame sent now: (peer, bundle id or frame, bytes)."""
    out = []
    while (pulled := core.next_frame(link, now)) is not None:
        frame = decode_frame(pulled[1], CONTEXT)
        out.append((pulled[0], frame.bundle.id if isinstance(frame, DataFrame) else frame, pulled[1]))
        core.take_implicit_acks(link)
    return out


def _relay_with_alarm() -> tuple[RelayCore, RelayCore, RelayCore, dict[bytes, bytes]]:
    """R holds A's alarm and routes it to D (believed to reach C) and to B; D in fact has no route.
    Returns R, D, B and R's DATA frames to D and B."""
    r, d, b = (RelayCore(n, context=CONTEXT) for n in (R, D, B))
    for peer in (A, D, B):
        r.link_up(LORA, peer, 0.0)
    d.link_up(LORA, R, 0.0)
    b.link_up(LORA, R, 0.0)
    b.link_up(IP, C, 0.0)
    offer = b.router.make_beacon(LORA, R)
    r.router.beacon_received("lora0", D, offer, 0.0)  # D said it reaches C (its cellular, gone since)
    r.router.beacon_received("lora0", B, offer, 0.0)
    from_a = RelayCore(A, context=CONTEXT)
    from_a.link_up(LORA, R, 0.0)
    from_a.router.beacon_received("lora0", R, r.router.make_beacon(LORA, A), 0.0)
    from_a.originate(_alarm(), 1.0)
    data = next(raw for peer, what, raw in _frames(from_a, "lora0", 1.0) if what == _alarm().id)
    assert [isinstance(x, Persist) for x in r.frame("lora0", A, data, 1.0)] == [True]
    r.persisted([_alarm().id], [], 1.0)
    sent = _frames(r, "lora0", 1.0)
    forwards = {peer: raw for peer, what, raw in sent if what == _alarm().id}
    assert set(forwards) == {D, B}, "two paths"
    return r, d, b, forwards


def test_a_dead_end_says_seen_and_the_relay_keeps_its_alarm() -> None:
    r, d, _, forwards = _relay_with_alarm()
    to_d = forwards[D]
    assert [isinstance(x, Persist) for x in d.frame("lora0", R, to_d, 2.0)] == [True]
    d.persisted([_alarm().id], [], 2.0)
    assert d.holds(_alarm().id), "the dead end keeps a copy for when a route comes"
    replies = _frames(d, "lora0", 2.0)
    assert [type(what) for _, what, _ in replies] == [SummaryFrame], "no custody ACK, a 'seen' reply"
    summary = replies[0][1]
    assert isinstance(summary, SummaryFrame) and id_hash(_alarm().id) in summary.hashes
    actions = r.frame("lora0", D, replies[0][2], 2.5)
    assert not any(isinstance(x, Drop) for x in actions)
    assert r.holds(_alarm().id), "the relay still holds the alarm: B has not taken it"
    assert r.custody.get(_alarm().id, D) is None, "no more resends to D"
    assert r.custody.get(_alarm().id, B) is not None, "the copy to B still awaits its custody"
    # D resent to again (its reply lost): still "seen", never custody
    assert d.frame("lora0", R, to_d, 9.0) == []
    assert [type(what) for _, what, _ in _frames(d, "lora0", 9.0)] == [SummaryFrame]


def test_a_relay_with_a_way_on_takes_custody_as_before() -> None:
    _, _, b, forwards = _relay_with_alarm()
    assert [isinstance(x, Persist) for x in b.frame("lora0", R, forwards[B], 20.5)] == [True]
    b.persisted([_alarm().id], [], 20.5)
    acks = [what for peer, what, _ in _frames(b, "lora0", 20.5) if peer == R and isinstance(what, AckFrame)]
    assert [ack.ids for ack in acks] == [(_alarm().id,)], "B forwards on IP: an explicit ACK"


def test_a_copy_due_to_a_neighbour_that_has_the_bundle_stops_timing_out() -> None:
    """R and B send each other the same alarm; B's ACK of R's copy is lost. Before, R's timer fired
    again and again (the link skips a copy to a holder), 18 times for one copy on seed 112."""
    r, _, _, _ = _relay_with_alarm()
    flight = r.custody.get(_alarm().id, B)
    assert flight is not None
    crossing = DataFrame(_alarm(), 1, compact=True)
    r.frame("lora0", B, encode_frame(crossing), 1.5)  # B's copy of the same alarm, held here already
    now = 1.5
    for _ in range(40):
        deadline = r.next_deadline()
        assert deadline is not None
        now = max(now, deadline)
        r.timer(now)
        _frames(r, "lora0", now)
        if r.custody.get(_alarm().id, B) is None:
            break
    assert r.custody.get(_alarm().id, B) is None, "the wait for B's custody ended"
    assert flight.attempts == 1, "with no resend counted"
    assert r.holds(_alarm().id), "without custody: the relay keeps its copy"
