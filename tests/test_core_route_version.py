"""What the router says changed: the relay re-routes after a beacon only the held bundles whose
next hops may have changed (routes to the nodes named, or every bundle when a neighbour came or
went), not every bundle after every beacon that confirms routes."""

from __future__ import annotations

import random

from relay.bundle import Bundle, Destination, Priority
from relay.core.frames import BeaconFrame
from relay.core.routing import Router, link_cost
from relay.links.base import LinkProfile

ME, PEER, FAR, OTHER = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32, b"\x04" * 32
IP = LinkProfile(name="ip", kind="ip", mtu=1200, bitrate=50_000.0)


def _beacon(*nodes: tuple[bytes, int]) -> BeaconFrame:
    return BeaconFrame(((PEER, 0), *nodes), ())


def test_a_beacon_that_only_confirms_routes_leaves_the_version_and_moves_the_expiry() -> None:
    router = Router(ME)
    router.link_up(IP, PEER)
    router.beacon_received("ip", PEER, _beacon((FAR, 2)), now=100.0)
    version, reach, expiry = router.version, router.reach(), router.next_deadline()
    router.beacon_received("ip", PEER, _beacon((FAR, 2)), now=130.0)
    assert router.version == version
    assert router.reach() is reach  # cached while nothing changed
    assert expiry is not None and router.next_deadline() == expiry + 30.0


def test_a_new_route_a_cost_change_a_withdrawal_and_an_expiry_each_move_the_version() -> None:
    router = Router(ME)
    router.link_up(IP, PEER)
    router.beacon_received("ip", PEER, _beacon((FAR, 2)), now=0.0)
    seen = [router.version]
    router.beacon_received("ip", PEER, _beacon((FAR, 2), (OTHER, 1)), now=1.0)  # new route
    seen.append(router.version)
    router.beacon_received("ip", PEER, _beacon((FAR, 5), (OTHER, 1)), now=2.0)  # cost changed
    seen.append(router.version)
    assert router.reach()[FAR] == 6
    router.beacon_received("ip", PEER, _beacon((OTHER, 1)), now=3.0)  # FAR withdrawn
    seen.append(router.version)
    assert FAR not in router.reach()
    deadline = router.next_deadline()
    assert deadline is not None
    router.expire(deadline)
    seen.append(router.version)
    assert router.reach() == {PEER: 1}
    assert seen == sorted(set(seen)), "every change must move the version"


def test_changes_name_the_nodes_whose_next_hops_changed_and_a_neighbour_names_those_through_it() -> None:
    me, peer, second, far, other = (bytes([n]) * 16 for n in range(1, 6))
    sizes = {False: 100, True: 100}

    def beacon(sender: bytes, *nodes: tuple[bytes, int]) -> BeaconFrame:
        return BeaconFrame(((sender, 0), *nodes), ())

    router = Router(me)
    router.link_up(IP, peer)
    router.link_up(IP, second)
    assert router.take_changes() is None  # a neighbour came: any bundle may go another way
    router.beacon_received("ip", peer, beacon(peer, (far, 2), (other, 1)), now=0.0)
    assert router.take_changes() == set()  # no bundle was routed to them yet: none to route again
    for dest in (far, other):
        router.next_hops(
            Bundle(me, Destination.to_node(dest), 0, 1, 36000, Priority.PRIORITY, 1, b"x"), sizes
        )
    router.beacon_received("ip", peer, beacon(peer, (far, 2), (other, 1)), now=30.0)
    assert router.take_changes() == set()  # confirmed: nothing to route again
    router.beacon_received("ip", peer, beacon(peer, (far, 3), (other, 1)), now=60.0)
    assert router.take_changes() == set()  # a cost changed behind the same next hop: same answer
    router.beacon_received("ip", second, beacon(second, (far, 1)), now=61.0)
    assert router.take_changes() == {far}  # a cheaper route: bundles to far go another way
    router.link_down("ip", peer)
    assert router.take_changes() == {other}  # its way went with peer; far's goes through second
    router.link_down("ip", second)
    assert router.take_changes() is None  # no neighbour left: nothing fits any link


def test_kept_answers_and_only_via_entries_stay_what_a_fresh_look_gives() -> None:
    """The router keeps next-hop answers across changes that cannot touch them (routes to other
    nodes, a neighbour they do not go through), and each node's poisoned-reverse entry until its
    routes change: both must be what computing anew gives."""
    rng = random.Random(112)
    me, *nodes = (bytes([n]) * 16 for n in range(1, 12))
    lora = LinkProfile(name="lora", kind="lora", mtu=219, bitrate=500.0, cost=10.0, duty_cycle=0.1)
    links = [(IP, nodes[0]), (lora, nodes[1]), (IP, nodes[2]), (lora, nodes[0])]
    router = Router(me)
    sizes = [{False: 100, True: 90}, {False: 400, True: 380}]
    now = 0.0
    for _ in range(600):
        now += rng.uniform(0.0, 40.0)
        profile, peer = rng.choice(links)
        if rng.random() < 0.05:
            router.link_down(profile.name, peer)
        elif rng.random() < 0.1 or not router.is_neighbour(peer, profile.name):
            router.link_up(profile, peer)
        else:
            offer = tuple((n, rng.randint(0, 3)) for n in rng.sample(nodes, rng.randint(0, len(nodes))))
            router.beacon_received(profile.name, peer, BeaconFrame(((peer, 0), *offer), ()), now)
        if rng.random() < 0.2:
            router.expire(now)
        router.take_changes()
        for dest in rng.sample(nodes, 3):
            priority = rng.choice(list(Priority))
            router.next_hops(
                Bundle(me, Destination.to_node(dest), 0, 1, 36000, priority, 1, b"x"), rng.choice(sizes)
            )
        router._ordered.clear()  # the routes ranked anew too
        for answers in router._hops.values():
            for key, (hops, asked) in answers.items():
                assert router._next_hops(asked, {False: key[3], True: key[4]}) == hops
        reach = list(router.reach().items())
        only = dict(router._only_via(router.reach()))
        router._only_nodes.clear()
        router._best.clear()
        router._only, router._reach = (-1, {}, None), None
        assert list(router.reach().items()) == reach  # the order too: beacons list ties in it
        assert router._only_via(router.reach()) == only


def test_next_hops_are_kept_per_destination_until_its_routes_or_its_neighbours_change() -> None:
    me, peer, second, far, other = (bytes([n]) * 16 for n in range(1, 6))

    def bundle(dest: bytes) -> Bundle:
        return Bundle(me, Destination.to_node(dest), 0, 1, 36000, Priority.PRIORITY, 1, b"x")

    sizes, big = {False: 100, True: 100}, {False: 5000, True: 5000}
    router = Router(me)
    router.link_up(IP, peer)
    router.link_up(IP, second)
    router.beacon_received("ip", peer, BeaconFrame(((peer, 0), (far, 2), (other, 1)), ()), now=0.0)
    to_far, to_other = router.next_hops(bundle(far), sizes), router.next_hops(bundle(other), sizes)
    assert [h.peer for h in to_far] == [peer]
    router.beacon_received("ip", second, BeaconFrame(((second, 0), (far, 1)), ()), now=1.0)
    assert [h.peer for h in router.next_hops(bundle(far), sizes)] == [second], "a cheaper route"
    assert router.next_hops(bundle(other), sizes) is to_other, "routes to it did not change: kept"
    assert router.next_hops(bundle(other), big) == to_other  # fits every link too: same answer
    router.link_down("ip", second)
    assert [h.peer for h in router.next_hops(bundle(far), sizes)] == [peer], "its way went with it"
    assert router.next_hops(bundle(other), sizes) is to_other, "through a neighbour that stays: kept"
    router.link_down("ip", peer)
    assert router.next_hops(bundle(other), sizes) == [], "its way went too"


def test_a_route_to_a_neighbour_changing_keeps_its_direct_answer_and_names_no_change() -> None:
    me, peer, second = (bytes([n]) * 16 for n in range(1, 4))
    sizes = {False: 100, True: 100}
    to_second = Bundle(me, Destination.to_node(second), 0, 1, 36000, Priority.PRIORITY, 1, b"x")
    router = Router(me)
    router.link_up(IP, peer)
    router.link_up(IP, second)
    router.take_changes()
    direct = router.next_hops(to_second, sizes)
    assert [(h.peer, h.directed) for h in direct] == [(second, True)]
    version = router.version
    router.beacon_received("ip", peer, BeaconFrame(((peer, 0), (second, 1)), ()), now=0.0)
    router.beacon_received("ip", peer, BeaconFrame(((peer, 0), (second, 2)), ()), now=30.0)
    assert router.version > version and router.reach()[second] == 1  # what it offers still moved
    assert router.take_changes() == set()
    assert router.next_hops(to_second, sizes) is direct, "routes are not read for a neighbour: kept"
    router.link_down("ip", second)
    assert router.take_changes() == {second}  # its direct way went: by the route through peer now
    assert [(h.peer, h.directed) for h in router.next_hops(to_second, sizes)] == [(peer, True)]


def test_a_cost_change_that_leaves_the_routes_ranked_as_they_were_puts_the_answers_back() -> None:
    me, peer, second, far = (bytes([n]) * 16 for n in range(1, 5))
    sizes = {False: 100, True: 100}
    to_far = Bundle(me, Destination.to_node(far), 0, 1, 36000, Priority.FLASH, 1, b"x")
    router = Router(me)
    router.link_up(IP, peer)
    router.link_up(IP, second)
    router.beacon_received("ip", peer, BeaconFrame(((peer, 0), (far, 1)), ()), now=0.0)
    router.beacon_received("ip", second, BeaconFrame(((second, 0), (far, 3)), ()), now=1.0)
    router.take_changes()
    hops = router.next_hops(to_far, sizes)
    assert [h.peer for h in hops] == [peer, second]
    router.beacon_received("ip", second, BeaconFrame(((second, 0), (far, 2)), ()), now=2.0)
    assert router.reach()[far] == 2
    assert router.take_changes() == set()  # still second best: ranked as they were
    assert router.next_hops(to_far, sizes) is hops, "put back, not worked out again"
    router.beacon_received("ip", second, BeaconFrame(((second, 0), (far, 0)), ()), now=3.0)
    assert router.take_changes() == {far}  # now the cheaper: ranked first
    assert [h.peer for h in router.next_hops(to_far, sizes)] == [second, peer]
    assert router.reach()[far] == 1


def test_the_first_route_expiry_kept_across_beacons_is_the_scanned_one() -> None:
    rng = random.Random(15)
    nodes = [bytes([n]) * 32 for n in range(3, 12)]
    lora = LinkProfile(name="lora", kind="lora", mtu=219, bitrate=500.0, cost=10.0, duty_cycle=0.1)
    router = Router(ME)
    router.link_up(IP, PEER)
    router.link_up(lora, OTHER)
    now = 0.0
    for _ in range(400):
        now += rng.uniform(0.0, 40.0)
        link, peer = rng.choice([("ip", PEER), ("lora", OTHER)])
        offer = tuple((n, rng.randint(0, 3)) for n in rng.sample(nodes, rng.randint(0, len(nodes))))
        if rng.random() < 0.3:
            router.next_deadline()  # known before the beacon: kept or dropped by it
        router.beacon_received(link, peer, BeaconFrame(((peer, 0), *offer), ()), now)
        if rng.random() < 0.2:
            router.expire(now)
        vias = {via for routes in router._routes.values() for via in routes}
        assert vias == set(router._via_expiry), "every route lives as long as its neighbour's last offer"
        scanned = min((router._via_expiry[via] for via in vias), default=None)
        assert router.next_deadline() == scanned


def test_a_reorder_of_equal_cost_routes_is_a_change_only_where_a_next_hop_changes() -> None:
    me, p1, p2, p3, far = (bytes([n]) * 16 for n in range(1, 6))
    sizes = {False: 100, True: 100}
    router = Router(me)
    for peer in (p1, p2, p3):
        router.link_up(IP, peer)
    router.beacon_received("ip", p1, BeaconFrame(((p1, 0), (far, 1)), ()), now=0.0)  # cost 2
    router.beacon_received("ip", p2, BeaconFrame(((p2, 0), (far, 5)), ()), now=1.0)  # cost 6
    router.beacon_received("ip", p3, BeaconFrame(((p3, 0), (far, 5)), ()), now=2.0)  # cost 6
    routine = Bundle(me, Destination.to_node(far), 0, 1, 36000, Priority.ROUTINE, 1, b"x")
    flash = Bundle(me, Destination.to_node(far), 0, 2, 36000, Priority.FLASH, 1, b"x")
    assert [h.peer for h in router.next_hops(routine, sizes)] == [p1]
    assert [h.peer for h in router.next_hops(flash, sizes)] == [p1, p3]  # of equal costs, the freshest
    router.take_changes()
    router.beacon_received("ip", p3, BeaconFrame(((p3, 0), (far, 5)), ()), now=3.0)
    assert router.take_changes() == set(), "p3 was first of its cost already: nothing moved"
    router.beacon_received("ip", p2, BeaconFrame(((p2, 0), (far, 5)), ()), now=4.0)
    assert router.take_changes() == {far}, "the FLASH's second path moves to p2"
    assert [h.peer for h in router.next_hops(flash, sizes)] == [p1, p2]
    # A relay that routed only the routine bundle: a reorder behind its route changes nothing.
    router2 = Router(me)
    for peer in (p1, p2, p3):
        router2.link_up(IP, peer)
    for at, (peer, cost) in enumerate(((p1, 1), (p2, 5), (p3, 5))):
        router2.beacon_received("ip", peer, BeaconFrame(((peer, 0), (far, cost)), ()), now=float(at))
    assert [h.peer for h in router2.next_hops(routine, sizes)] == [p1]
    router2.take_changes()
    router2.beacon_received("ip", p2, BeaconFrame(((p2, 0), (far, 5)), ()), now=9.0)
    assert router2.take_changes() == set()


def _offer_to(router: Router, peer: bytes) -> dict[bytes, int]:
    """What a beacon to ``peer`` must offer, computed from every route (poisoned reverse)."""
    offer = {router.node_id: 0}
    for neighbour, links in router._neighbours.items():
        if neighbour != peer:
            offer[neighbour] = min(link_cost(p) for p in links.values())
    for node, routes in router._routes.items():
        costs = [cost for (_, via), cost in routes.items() if via != peer]
        if node != peer and costs and (node not in offer or min(costs) < offer[node]):
            offer[node] = min(costs)
    return offer


def test_each_neighbours_beacon_offers_the_best_route_not_through_it() -> None:
    rng = random.Random(151)
    peers = [bytes([n]) * 32 for n in range(20, 24)]
    nodes = [bytes([n]) * 32 for n in range(3, 12)] + peers
    lora = LinkProfile(name="lora", kind="lora", mtu=219, bitrate=500.0, cost=10.0, duty_cycle=0.1)
    router = Router(ME)
    for peer in peers:
        router.link_up(IP, peer)
    router.link_up(lora, peers[0])
    now = 0.0
    for _ in range(300):
        now += rng.uniform(0.0, 40.0)
        link, peer = rng.choice([("ip", p) for p in peers] + [("lora", peers[0])])
        offer = tuple((n, rng.randint(0, 4)) for n in rng.sample(nodes, rng.randint(0, len(nodes))))
        router.beacon_received(link, peer, BeaconFrame(((peer, 0), *offer), ()), now)
        if rng.random() < 0.2:
            router.expire(now)
        if rng.random() < 0.05:  # a neighbour goes and comes back: its routes go with it
            gone = rng.choice(peers)
            router.link_down("ip", gone)
            router.link_up(IP, gone)
        for to in peers:
            beacon = router.make_beacon(IP, to)
            assert dict(beacon.nodes) == _offer_to(router, to)


def test_a_router_keeps_fewer_than_30_attributes() -> None:
    """From 30 instance attributes on, Python 3.11 stops keeping them inline and every ``self.x``
    read in the router gets slower (a 30th attribute cost 1.4 % of routing's instructions in a
    replayed reference run): group new state into an existing one."""
    router = Router(ME, frozenset({"ems"}))
    router.link_up(IP, PEER)
    router.beacon_received("ip", PEER, _beacon((FAR, 2)), now=0.0)
    router.take_changes()
    router.reach()
    assert len(vars(router)) < 30
