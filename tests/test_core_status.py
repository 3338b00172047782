"""Bundle status transitions: the table itself, Statuses over any event sequence, and the real core
on a lossy network with evictions, receipts and expiry never stepping outside the table."""

from __future__ import annotations

import copy
import random

import pytest
from core_pump import Pump
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.bundle import Bundle, BundleId, CompactContext, Destination, Priority
from relay.core.actions import StatusChanged
from relay.core.receipts import BundleStatus as ReexportedStatus
from relay.core.status import (
    FINAL,
    IGNORED,
    STATUS_MEMORY_S,
    TRANSITIONS,
    BundleStatus,
    Event,
    IllegalTransitionError,
    State,
    Statuses,
    next_state,
)
from relay.links.base import LinkProfile

ORIGIN, RELAY, DEST = (bytes([n]) * 16 for n in (1, 2, 3))
CONTEXT = CompactContext.from_names([ORIGIN, RELAY, DEST], [])
IP = LinkProfile("ip0", "ip", mtu=1500, bitrate=1e5)
LORA = LinkProfile("lora0", "lora", mtu=219, bitrate=2000.0, cost=10.0, compact=True)
ID = BundleId(ORIGIN, 100, 0)
REASON = "storage full: evicted for higher-priority traffic (a FLASH bundle)"


def _reachable_by_one_event(old: State, new: State) -> bool:
    return any(TRANSITIONS.get((old, event)) is new for event in Event)


def test_the_table_has_no_dead_ends_and_delivered_only_ends_in_forgetting() -> None:
    assert {new for (old, event), new in TRANSITIONS.items() if old is State.UNKNOWN} == {State.QUEUED}
    for pending in (State.QUEUED, State.FORWARDED):  # each pending state can end every way
        endings = (Event.RECEIPT, Event.LIFETIME_ENDED, Event.EVICTED)
        assert {TRANSITIONS[(pending, event)] for event in endings} == FINAL
    assert [e for (s, e) in TRANSITIONS if s is State.DELIVERED] == [Event.FORGOTTEN]
    for state in FINAL:  # final states never go back to pending
        assert not any(TRANSITIONS.get((state, e)) in (State.QUEUED, State.FORWARDED) for e in Event)
    assert not set(TRANSITIONS) & IGNORED
    assert ReexportedStatus is BundleStatus  # old imports from relay.core.receipts keep working


@given(st.lists(st.sampled_from(Event), max_size=30))
def test_any_event_sequence_follows_the_table_or_raises(events: list[Event]) -> None:
    state = State.UNKNOWN
    for event in events:
        if (state, event) in TRANSITIONS:
            state = next_state(state, event)
        elif (state, event) in IGNORED:
            assert next_state(state, event) is state
        else:
            with pytest.raises(IllegalTransitionError, match=f"{state.value} cannot be {event.value}"):
                next_state(state, event)


_STEP = st.tuples(st.sampled_from(["custody", "receipt", "evicted", "due"]), st.floats(0, 5000))


@given(st.lists(_STEP, max_size=25), st.floats(10, 4000))
@settings(max_examples=300)
def test_statuses_move_only_through_the_table_and_are_forgotten_in_the_end(
    steps: list[tuple[str, float]], expires: float
) -> None:
    statuses = Statuses()
    statuses.originated(ID, 0.0, expires)
    state = State.QUEUED
    now = 0.0
    for what, later in steps:
        now = max(now, later)
        before = statuses.get(ID)
        try:
            if what == "custody":
                changed = statuses.custody(ID, RELAY, "ip0", now)
            elif what == "receipt":
                changed = statuses.receipt(ID, now, 2, (RELAY[:4], DEST[:4]))
            elif what == "evicted":
                changed = statuses.evicted(ID, REASON, now)
            else:
                expired, forgotten = statuses.due(now)
                changed = expired[0][1] if expired else None
                if forgotten:
                    assert before is not None and before.state in FINAL and statuses.get(ID) is None
                    state = State.UNKNOWN
        except IllegalTransitionError:
            event = {"custody": Event.CUSTODY, "receipt": Event.RECEIPT, "evicted": Event.EVICTED}[what]
            assert (state, event) not in TRANSITIONS and (state, event) not in IGNORED
            assert statuses.get(ID) == before  # a refused event changes nothing
            continue
        if changed is not None:
            assert _reachable_by_one_event(state, changed.state), (state, changed.state)
            state = changed.state
        current = statuses.get(ID)
        assert (current.state if current is not None else State.UNKNOWN) is state
        if state is State.EVICTED:
            assert current is not None and current.reason == REASON and str(current) == f"evicted: {REASON}"
    statuses.due(now + expires + 3 * STATUS_MEMORY_S)
    statuses.due(now + expires + 6 * STATUS_MEMORY_S)
    assert statuses.get(ID) is None and statuses.next_deadline() is None


def test_a_late_receipt_turns_an_evicted_bundle_delivered_and_keeps_its_first_hop() -> None:
    statuses = Statuses()
    statuses.originated(ID, 0.0, 600.0)
    statuses.custody(ID, RELAY, "lora0", 5.0)
    evicted = statuses.evicted(ID, REASON, 10.0)
    assert evicted == BundleStatus(State.EVICTED, RELAY, "lora0", 10.0, reason=REASON)
    with pytest.raises(IllegalTransitionError, match="evicted cannot be custody"):
        statuses.custody(ID, DEST, "ip0", 11.0)  # the core holds no copy any more to hand over
    delivered = statuses.receipt(ID, 20.0, 2, (RELAY[:4], DEST[:4]))
    assert delivered == BundleStatus(State.DELIVERED, RELAY, "lora0", 20.0, 2, (RELAY[:4], DEST[:4]))
    assert statuses.evicted(ID, REASON, 21.0) is None  # the store drops the last copy: ignored


def _network_run(seed: int, bundles: int, evictions: int, loss: float) -> None:
    rng = random.Random(seed)
    pump = Pump(CONTEXT, seed=seed)
    for node in (ORIGIN, RELAY, DEST):
        pump.add(node)
    pump.connect(rng.choice([IP, LORA]), ORIGIN, RELAY, 0.0, loss=loss)
    pump.connect(rng.choice([IP, LORA]), RELAY, DEST, 0.0, loss=loss)
    origin = pump.nodes[ORIGIN]
    sent = []
    for seq in range(bundles):
        lifetime = rng.choice([60, 600, 36000])
        bundle = Bundle(
            ORIGIN, Destination.to_node(DEST), 0, seq, lifetime, Priority(rng.randrange(5)), 1, bytes(20)
        )
        origin.apply(origin.core.originate(bundle, 0.0), 0.0)
        sent.append(bundle)
    evict_at = sorted(rng.uniform(0, 120) for _ in range(evictions))
    receipted: set[BundleId] = set()
    evicted: set[BundleId] = set()
    now = 0.0
    while now < 600.0:
        while evict_at and evict_at[0] <= now:
            evict_at.pop(0)
            # The store evicts what it still has: held bundles, or copies whose drop (after the
            # receipt or the lifetime) it has not yet run; never the same bundle twice.
            candidates = [b.id for b in sent if b.id not in evicted]
            if candidates:
                victim = rng.choice(candidates)
                evicted.add(victim)
                origin.apply(origin.core.evicted(victim, REASON, now), now)
        for bundle in pump.nodes[DEST].delivered:
            if bundle.id not in receipted or rng.random() < 0.05:  # duplicates cross too
                receipted.add(bundle.id)
                origin.apply(origin.core.receipt(bundle.id, now, DEST, 2, ()), now)
        pump.step(now)
        now += 0.5
    trail: dict[BundleId, list[State]] = {bundle.id: [State.QUEUED] for bundle in sent}
    for action in origin.actions:
        if isinstance(action, StatusChanged):
            states = trail[action.bundle_id]
            assert _reachable_by_one_event(states[-1], action.status.state), (states, action.status)
            states.append(action.status.state)
    for bundle in sent:
        status = origin.core.status(bundle.id)
        assert status.state is trail[bundle.id][-1]
        assert status.state is not State.QUEUED or bundle.expires > now
        if status.state is State.EVICTED:
            assert status.reason == REASON and not origin.core.holds(bundle.id)


@given(st.integers(0, 2**32), st.integers(1, 10), st.integers(0, 6), st.floats(0.0, 0.3))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_core_never_steps_outside_the_table(seed: int, bundles: int, evictions: int, loss: float) -> None:
    _network_run(seed, bundles, evictions, loss)


@pytest.mark.long
@given(st.integers(0, 2**32), st.integers(1, 40), st.integers(0, 20), st.floats(0.0, 0.5))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_core_never_steps_outside_the_table_soak(
    seed: int, bundles: int, evictions: int, loss: float
) -> None:
    _network_run(seed, bundles, evictions, loss)


def test_an_evicted_bundle_reads_evicted_with_the_reason_in_the_core() -> None:
    pump = Pump(CONTEXT)
    for node in (ORIGIN, RELAY):
        pump.add(node)
    origin = pump.nodes[ORIGIN]
    bundle = Bundle(ORIGIN, Destination.to_node(DEST), 0, 0, 3600, Priority.BULK, 1, bytes(20))
    origin.apply(origin.core.originate(bundle, 0.0), 0.0)
    actions = origin.core.evicted(bundle.id, REASON, 5.0)
    assert actions == [StatusChanged(bundle.id, BundleStatus(State.EVICTED, at=5.0, reason=REASON))]
    assert str(origin.core.status(bundle.id)) == f"evicted: {REASON}"
    assert not origin.core.holds(bundle.id)
    assert origin.core.evicted(BundleId(RELAY, 0, 0), REASON, 6.0) == []  # a relayed bundle has no status
    origin.core.timer(3600.0 + STATUS_MEMORY_S + 1)
    assert origin.core.status(bundle.id).state is State.UNKNOWN  # forgotten an hour after its lifetime


def test_the_next_deadline_is_kept_only_until_a_status_moves_or_comes_due() -> None:
    """next_deadline is asked after every event and kept meanwhile: after originations, moves,
    refusals and dues it is what a fresh look at every status gives."""
    rng = random.Random(15)
    statuses = Statuses()
    ids = [BundleId(ORIGIN, 100, n) for n in range(10)]
    now = 0.0
    for _ in range(600):
        now += rng.random() * 20.0
        bundle_id, step = rng.choice(ids), rng.randrange(6)
        try:
            if step == 0:
                statuses.originated(bundle_id, now, now + rng.random() * 100.0)
            elif step == 1:
                statuses.custody(bundle_id, RELAY, "ip0", now)
            elif step == 2:
                statuses.receipt(bundle_id, now, 1, ())
            elif step == 3:
                statuses.evicted(bundle_id, REASON, now)
            elif step == 4:
                statuses.not_stored(bundle_id)
            else:
                statuses.due(now)
        except IllegalTransitionError:
            continue
        fresh = copy.deepcopy(statuses)
        fresh._next = None
        assert statuses.next_deadline() == fresh.next_deadline()
