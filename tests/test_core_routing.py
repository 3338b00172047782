"""Routing: beacon routes with expiry, anti-entropy summaries, spray-and-wait budgets, groups."""

from __future__ import annotations

from core_pump import Pump

from relay.bundle import Bundle, CompactContext, Destination, Priority
from relay.core.actions import Persist
from relay.core.frames import BeaconFrame, DataFrame, decode_frame
from relay.core.routing import REFRESH_BEACONS, ROUTE_LIFETIME_BEACONS, Hop, Router, beacon_interval
from relay.links.base import LinkProfile

A, B, C, D, E, Z = (bytes([n]) * 16 for n in b"ABCDEZ")
CONTEXT = CompactContext.from_names([A, B, C, D, E, Z], ["medic", "incident-7"])
IP = LinkProfile("ip0", "ip", mtu=64000, bitrate=1e6)
LORA = LinkProfile("lora0", "lora", mtu=219, bitrate=5000.0, cost=10.0, compact=True)
SIZES = {False: 100, True: 100}


def _bundle(
    dest: Destination, priority: Priority = Priority.PRIORITY, seq: int = 1, origin: bytes = A
) -> Bundle:
    return Bundle(origin, dest, 0, seq, 36000, priority, 1, b"payload")


def test_beacon_route_is_used_then_expires() -> None:
    router = Router(A)
    router.link_up(IP, B)
    router.link_up(LORA, D)
    bundle = _bundle(Destination.to_node(C))
    assert {h.directed for h in router.next_hops(bundle, SIZES)} == {False}
    router.beacon_received("ip0", B, BeaconFrame(((C, 1),), ()), 100.0)
    assert router.next_hops(bundle, SIZES) == [Hop("ip0", B, True)]
    assert router.route_cost(C) == 2
    router.expire(100.0 + ROUTE_LIFETIME_BEACONS * REFRESH_BEACONS * beacon_interval(IP))
    assert router.route_cost(C) is None
    assert {h.directed for h in router.next_hops(bundle, SIZES)} == {False}


def test_a_beacon_that_no_longer_lists_a_node_withdraws_the_route_at_once() -> None:
    router = Router(A)
    router.link_up(IP, B)
    router.beacon_received("ip0", B, BeaconFrame(((C, 1),), ()), 100.0)
    assert router.route_cost(C) == 2 and router.reach()[C] == 2
    router.beacon_received("ip0", B, BeaconFrame((), ()), 130.0)  # B lost C: no waiting for expiry
    assert router.route_cost(C) is None and C not in router.reach()


def test_direct_neighbour_takes_the_cheapest_link_the_bundle_fits() -> None:
    router = Router(A)
    router.link_up(LORA, B)
    router.link_up(IP, B)
    assert router.next_hops(_bundle(Destination.to_node(B)), SIZES) == [Hop("ip0", B, True)]
    router.link_down("ip0", B)
    assert router.next_hops(_bundle(Destination.to_node(B)), SIZES) == [Hop("lora0", B, True)]
    big = {False: 20000, True: 20000}
    assert router.next_hops(_bundle(Destination.to_node(B)), big) == [], "big bulk waits for a cheap link"
    flash = _bundle(Destination.to_node(B), Priority.FLASH)
    assert router.next_hops(flash, big) == [Hop("lora0", B, True)], "FLASH takes whatever is up"


def test_beacon_advertises_neighbours_routes_and_names_within_the_mtu() -> None:
    router = Router(A, frozenset({"medic"}))
    router.link_up(IP, B)
    router.beacon_received("ip0", B, BeaconFrame(((C, 3),), ()), 0.0)
    beacon = router.make_beacon(LORA, D)
    assert dict(router.make_beacon(IP, B).nodes) == {A: 0}, "routes through B are not offered to B"
    assert dict(beacon.nodes) == {A: 0, B: 1, C: 4}
    assert len(beacon.names) == 1


def _data_frames(pump: Pump, node: bytes, now: float) -> list[tuple[bytes, DataFrame]]:
    out = []
    core = pump.nodes[node].core
    for link in ("ip0", "lora0"):
        if not core.has_link(link):
            continue
        while (sent := core.next_frame(link, now)) is not None:
            frame = decode_frame(sent[1], CONTEXT)
            if isinstance(frame, DataFrame):
                out.append((sent[0], frame))
    return out


def test_anti_entropy_sends_only_what_the_peer_lacks() -> None:
    pump = Pump(CONTEXT)
    a, b = pump.add(A), pump.add(B)
    shared = _bundle(Destination.everyone(), seq=1)
    only_a = _bundle(Destination.everyone(), seq=2)
    a.core.originate(shared, 0.0)
    a.core.originate(only_a, 0.0)
    b.core.restore(shared, False, 0.0)
    pump.connect(IP, A, B, 0.0)
    pump.run(0.0, 2.0)  # summaries cross before the summary wait ends
    received = {x.id for x in b.delivered}
    assert received == {only_a.id}
    persisted = [x for x in b.actions if isinstance(x, Persist)]
    assert len(persisted) == 1


def test_spray_and_wait_halves_copies_on_costly_links_then_waits() -> None:
    pump = Pump(CONTEXT)
    a = pump.add(A)
    for node in (B, C, D, E):
        pump.add(node)
    for node in (B, C, D, E):
        a.core.link_up(LORA, node, 0.0)
    a.core.timer(10.0)  # summary waits over: nobody answered
    flash = _bundle(Destination.to_node(Z), Priority.FLASH)
    a.core.originate(flash, 10.0)
    copies = sorted(frame.copies for _, frame in _data_frames(pump, A, 10.0))
    assert copies == [1, 2, 4]  # 8 -> gives 4, keeps 4 -> gives 2, keeps 2 -> gives 1, keeps 1: waits
    routine = _bundle(Destination.to_node(Z), Priority.ROUTINE, seq=2)
    a.core.originate(routine, 10.0)
    assert [frame.copies for _, frame in _data_frames(pump, A, 10.0)] == [1]  # 2 -> one copy handed on


def test_cheap_links_copy_without_spending_the_budget() -> None:
    pump = Pump(CONTEXT)
    a = pump.add(A)
    for node in (B, C, D):
        pump.add(node)
        a.core.link_up(IP, node, 0.0)
    a.core.timer(10.0)
    a.core.originate(_bundle(Destination.to_node(Z), Priority.ROUTINE), 10.0)
    assert [frame.copies for _, frame in _data_frames(pump, A, 10.0)] == [2, 2, 2]


def test_group_and_role_destinations_reach_members_through_non_members() -> None:
    pump = Pump(CONTEXT)
    a = pump.add(A)
    b = pump.add(B)  # relay, no role
    c = pump.add(C, frozenset({"medic"}))
    d = pump.add(D, frozenset({"incident-7"}))
    pump.connect(IP, A, B, 0.0)
    pump.connect(IP, B, C, 0.0)
    pump.connect(LORA, B, D, 0.0)
    to_medics = _bundle(Destination.to_role("medic"), seq=1)
    to_incident = _bundle(Destination.to_group("incident-7"), seq=2)
    to_all = _bundle(Destination.everyone(), seq=3)
    for bundle in (to_medics, to_incident, to_all):
        a.apply(a.core.originate(bundle, 0.0), 0.0)
    pump.run(0.0, 30.0, dt=0.5)
    assert {x.id for x in c.delivered} == {to_medics.id, to_all.id}
    assert {x.id for x in d.delivered} == {to_incident.id, to_all.id}
    assert {x.id for x in b.delivered} == {to_all.id}
    assert a.delivered == []


def test_flash_takes_its_two_best_routes_the_freshest_first() -> None:
    router = Router(A)
    for peer in (B, C, D):
        router.link_up(LORA, peer)
    router.beacon_received("lora0", B, BeaconFrame(((Z, 1),), ()), 100.0)
    router.beacon_received("lora0", C, BeaconFrame(((Z, 1),), ()), 200.0)  # same cost, heard later
    router.beacon_received("lora0", D, BeaconFrame(((Z, 5),), ()), 300.0)
    flash = _bundle(Destination.to_node(Z), Priority.FLASH)
    assert router.next_hops(flash, SIZES) == [Hop("lora0", C, True), Hop("lora0", B, True)]
    assert router.next_hops(_bundle(Destination.to_node(Z)), SIZES) == [Hop("lora0", C, True)]
