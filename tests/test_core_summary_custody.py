"""A summary's "has" never ends a custody wait by itself (issue 15, found in the fourth pass).

A relay killed after storing a bundle and before its custody ACK lists the bundle in its summary
after the restart. Taken as "no custody, no more resends", that left the sender holding its copy
until the bundle's lifetime ended. Summaries name bundles by a 4-byte hash, so "has" cannot be
custody either (a collision would drop a bundle nobody holds): the copy goes once more, and the
neighbour, which holds it, acknowledges the duplicate with custody.
"""

from __future__ import annotations

import pytest

from relay.bundle import Bundle, CompactContext, Destination, Priority
from relay.core.actions import Action, Drop, Persist
from relay.core.custody import initial_rto
from relay.core.frames import AckFrame, DataFrame, SummaryFrame, decode_frame, encode_frame, id_hash
from relay.core.machine import RelayCore
from relay.links.base import LinkProfile

A, B, C, D = b"A" * 16, b"B" * 16, b"C" * 16, b"D" * 16
CONTEXT = CompactContext.from_names([A, B, C, D], [])
IP = LinkProfile("ip0", "ip", mtu=64000, bitrate=1e6)
LORA = LinkProfile(
    "lora0", "lora", mtu=219, bitrate=130.0, cost=10.0, duty_cycle=0.1, compact=True, per_frame_overhead_s=0.4
)
LIFETIME = 3600


def _bundle(seq: int = 1) -> Bundle:
    return Bundle(A, Destination.to_node(C), 0, seq, LIFETIME, Priority.PRIORITY, 1, b"to C, through B")


class Crashing:
    """Frames between a sender A and a relay B, which reaches C (whose frames go nowhere). B's
    store is the list of bundles it was asked to persist; ``crash`` loses everything else."""

    def __init__(self, profile: LinkProfile) -> None:
        self.profile = profile
        self.a = RelayCore(A, context=CONTEXT)
        self.b = RelayCore(B, context=CONTEXT)
        self.stored: list[Bundle] = []
        self.a_actions: list[Action] = []
        self.data_to_b = 0

    def start(self, now: float, *, a_sees_it: bool = True) -> None:
        if a_sees_it:
            self.a.link_up(self.profile, B, now)
        self.b.link_up(self.profile, A, now)
        self.b.link_up(self.profile, C, now)

    def crash(self, now: float) -> None:
        """B dies with only its store, then starts again on it (C is still reachable)."""
        self.b = RelayCore(B, context=CONTEXT)
        for bundle in self.stored:
            self.b.restore(bundle, local=False, now=now)

    def a_to_b(self, now: float) -> None:
        while (out := self.a.next_frame(self.profile.name, now)) is not None:
            if isinstance(decode_frame(out[1], CONTEXT), DataFrame):
                self.data_to_b += 1
            self._to_b(out[1], now)

    def b_to_a(self, now: float) -> None:
        while (out := self.b.next_frame(self.profile.name, now)) is not None:
            if out[0] == A:
                self.a_actions += self.a.frame(self.profile.name, B, out[1], now)

    def _to_b(self, data: bytes, now: float) -> None:
        for action in self.b.frame(self.profile.name, A, data, now):
            if isinstance(action, Persist):
                self.stored.append(action.bundle)

    def store_all(self, now: float) -> None:
        """B's store commits what it was given: B owes custody ACKs now."""
        self.b.persisted([bundle.id for bundle in self.stored], [], now)

    def run(self, start: float, until: float, *, b_first: bool, dt: float = 0.5) -> float | None:
        """Both sides send and time passes; when A dropped its copy with custody, or None."""
        now = start
        while now < until:
            self.a_actions += self.a.timer(now)
            self.b.timer(now)
            if b_first:
                self.b_to_a(now)
                self.a_to_b(now)
            else:
                self.a_to_b(now)
                self.b_to_a(now)
            if any(isinstance(x, Drop) and x.reason.startswith("custody accepted") for x in self.a_actions):
                return now
            now += dt
        return None


def _stored_then_killed(profile: LinkProfile, others: int = 0) -> tuple[Crashing, Bundle]:
    """A sends a bundle for C to B; B stores it and dies before its custody ACK goes out.
    ``others``: ROUTINE bundles for C that B holds besides (its summary lists the most urgent)."""
    net = Crashing(profile)
    for seq in range(others):
        routine = Bundle(D, Destination.to_node(C), 0, seq, LIFETIME, Priority.ROUTINE, 1, b"backlog")
        net.stored.append(routine)
        net.b.restore(routine, local=False, now=0.0)
    net.start(0.0)
    for now in (0.0, 6.0):  # beacons and summaries: A learns B reaches C
        net.a.timer(now)
        net.b.timer(now)
        net.b_to_a(now)
        net.a_to_b(now)
    bundle = _bundle()
    net.a.originate(bundle, 10.0)
    net.a_to_b(10.0)
    assert [x.id for x in net.stored[others:]] == [bundle.id], "B was handed the bundle"
    net.store_all(10.0)  # durable at B ...
    net.crash(10.5)  # ... and B dies before its ACK left
    assert net.a.holds(bundle.id) and net.b.holds(bundle.id)
    return net, bundle


@pytest.mark.parametrize("others", [0, 80], ids=["complete-summary", "full-summary"])
def test_a_relay_killed_before_its_ack_takes_custody_after_the_restart_on_lora(others: int) -> None:
    """LoRa tells A nothing when B dies: A's copy is in flight, backing off. B's first summary
    after the restart names it; the copy goes once more and B's ACK for it releases A's copy.
    A relay holding more than a LoRa frame lists (53) sends a partial summary of its most urgent:
    as full as a frame takes, it is still a list of what B holds, not a "seen" answer."""
    net, bundle = _stored_then_killed(LORA, others)
    net.a.timer(60.0)  # A's copy timed out while B was down: it went again into the void
    net.a.next_frame("lora0", 60.0)
    net.start(120.0, a_sees_it=False)  # B is back, its summary first
    net.b_to_a(120.0)
    released = net.run(120.0, 120.0 + 60.0, b_first=True)
    assert released is not None, "A keeps its copy until the lifetime ends"
    assert not net.a.holds(bundle.id) and net.b.holds(bundle.id)
    assert net.data_to_b <= 4, f"{net.data_to_b} DATA frames for one bundle"


def test_a_relay_killed_before_its_ack_takes_custody_after_the_restart_on_ip() -> None:
    """IP sees B go and come back: A queues the copy for B again, and B's summary may arrive before
    the copy leaves. It still goes, and B's ACK for it releases A's copy."""
    net, bundle = _stored_then_killed(IP)
    net.a.link_down("ip0", B, 11.0)
    net.start(20.0)
    released = net.run(20.0, 40.0, b_first=True)
    assert released is not None and released - 20.0 <= 5.0, "A keeps its copy until the lifetime ends"
    assert not net.a.holds(bundle.id) and net.b.holds(bundle.id)


def test_a_complete_summary_naming_a_copy_in_flight_sends_it_once_and_a_second_ends_the_wait() -> None:
    """B lists all it holds, X among them, while A's copy of X waits for B's ACK: the copy goes
    once more at once (B, alive, is no reason to back off). Named again, the wait ends without
    custody: A keeps its copy and sends B nothing more; nothing loops."""
    a = _sender()
    bundle = _bundle()
    a.originate(bundle, 1.0)
    assert _data_to(a, 1.0) == 1
    a.timer(3.0)  # no ACK: the copy went again and backs off
    assert _data_to(a, 3.0) == 1
    has = encode_frame(SummaryFrame(frozenset({id_hash(bundle.id)}), complete=True))
    a.frame("ip0", B, has, 3.5)
    assert _data_to(a, 3.5) == 1, "named: the copy goes once more"
    flight = a.custody.get(bundle.id, B)
    assert flight is not None and flight.deadline == 3.5 + initial_rto(IP), "backoff ended"
    a.frame("ip0", B, has, 3.6)
    for now in (3.6, 5.0, 20.0, 100.0, 1000.0):
        a.timer(now)
        assert _data_to(a, now) == 0, "named twice: no resends"
    assert a.holds(bundle.id), "no custody: A keeps its copy"
    assert a.custody.get(bundle.id, B) is None


def test_a_seen_answer_ends_the_wait_without_a_resend() -> None:
    """A neighbour that passed the bundle on and dropped it answers the copy with "seen": a summary
    that is never complete. That ends the wait at once, without custody, as before."""
    a = _sender()
    bundle = _bundle()
    a.originate(bundle, 1.0)
    assert _data_to(a, 1.0) == 1
    a.frame("ip0", B, encode_frame(SummaryFrame(frozenset({id_hash(bundle.id)}), complete=False)), 1.1)
    for now in (1.1, 5.0, 100.0):
        a.timer(now)
        assert _data_to(a, now) == 0
    assert a.holds(bundle.id) and a.custody.get(bundle.id, B) is None


def test_a_summary_never_cancels_a_directed_copy_nor_counts_as_custody() -> None:
    """A summary naming a bundle queued for B (a hash collision, or B has it from elsewhere) does
    not take it off the queue: only B's ACK, which names the full id, ends A's copy."""
    a = _sender()
    bundle = _bundle()
    a.originate(bundle, 1.0)
    a.frame("ip0", B, encode_frame(SummaryFrame(frozenset({id_hash(bundle.id)}), complete=True)), 1.0)
    assert _data_to(a, 1.0) == 1 and a.holds(bundle.id)
    actions = a.frame("ip0", B, encode_frame(AckFrame((bundle.id,))), 1.5)
    assert any(isinstance(x, Drop) for x in actions) and not a.holds(bundle.id)


def _sender() -> RelayCore:
    """A, up with B on IP and knowing from B's beacon that B reaches C (summary wait over)."""
    b = RelayCore(B, context=CONTEXT)
    b.link_up(IP, A, 0.0)
    b.link_up(IP, C, 0.0)
    a = RelayCore(A, context=CONTEXT)
    a.link_up(IP, B, 0.0)
    a.router.beacon_received("ip0", B, b.router.make_beacon(IP, A), 0.0)
    a.timer(0.0)
    while a.next_frame("ip0", 0.0) is not None:
        pass
    return a


def _data_to(core: RelayCore, now: float) -> int:
    """DATA frames the core sends to B now (other frames are taken and ignored)."""
    sent = 0
    while (out := core.next_frame("ip0", now)) is not None:
        sent += out[0] == B and isinstance(decode_frame(out[1], CONTEXT), DataFrame)
    return sent
