"""A neighbour whose link keeps alive at a slow pace (a phone on battery, issue 17): its beacons go at
that pace, its routes live three of those, and route changes elsewhere do not wake it. The other
neighbours of a free link get a beacon every interval only while it says something new (issue 15):
one that repeats the last waits for the refresh, every ``REFRESH_BEACONS``-th interval."""

from __future__ import annotations

from relay.core.frames import BeaconFrame, decode_frame
from relay.core.machine import RelayCore
from relay.core.routing import REFRESH_BEACONS, ROUTE_LIFETIME_BEACONS, Router, beacon_interval
from relay.links.base import LinkProfile

RELAY, OTHER, PHONE, LATE, FAR = (bytes([n]) * 16 for n in b"ROPLF")
IP = LinkProfile("ip0", "ip", mtu=64000, bitrate=1e6)
PHONE_PACE = 60.0


def _beacons(core: RelayCore, until: float, start: float = 0.0) -> dict[bytes, list[float]]:
    """Run the core's timers and drain its link every half second; when each peer got a beacon."""
    sent: dict[bytes, list[float]] = {}
    now = start
    while now <= until:
        core.timer(now)
        while (out := core.next_frame("ip0", now)) is not None:
            peer, frame = out
            if isinstance(decode_frame(frame, None, max_len=IP.mtu), BeaconFrame):
                sent.setdefault(peer, []).append(now)
        now += 0.5
    return sent


def test_a_paced_neighbour_gets_beacons_at_its_pace_the_others_at_the_links() -> None:
    core = RelayCore(RELAY)
    core.link_up(IP, OTHER, 0.0, pace=1.0)  # a relay's own keepalive: faster than beacons, no effect
    core.link_up(IP, PHONE, 0.0, pace=PHONE_PACE)
    sent = _beacons(core, 600.0)
    assert sent[PHONE] == [PHONE_PACE * n for n in range(11)]  # its keepalive: every one goes
    refresh = REFRESH_BEACONS * beacon_interval(IP)  # nothing changed: only the refresh goes
    assert sent[OTHER] == [refresh * n for n in range(5)]


def test_a_phone_alone_on_its_link_sleeps_until_the_paced_beacon() -> None:
    phone = RelayCore(PHONE)
    phone.link_up(IP, RELAY, 0.0, pace=PHONE_PACE)
    _beacons(phone, 10.0)  # past the wait for the relay's summary
    assert phone.next_deadline() == PHONE_PACE  # its next beacon; nothing at the link's 30 s


def test_route_changes_elsewhere_trigger_beacons_to_relays_not_to_a_paced_phone() -> None:
    core = RelayCore(RELAY)
    core.link_up(IP, OTHER, 0.0)
    core.link_up(IP, PHONE, 0.0, pace=PHONE_PACE)
    _beacons(core, 10.0)  # the beacons of the links coming up
    core.link_up(IP, LATE, 12.0)  # a new neighbour: what RELAY reaches changed
    sent = _beacons(core, 59.0, start=12.0)
    assert sent[OTHER] == [12.0]  # told at once; at 42 s the same again: it waits for the refresh
    assert PHONE not in sent  # the phone hears of it at its next beacon, at 60 s


def test_routes_from_a_paced_neighbour_live_three_of_its_beacons() -> None:
    router = Router(PHONE)
    router.link_up(IP, RELAY, PHONE_PACE)
    router.beacon_received("ip0", RELAY, BeaconFrame(((FAR, 1),), ()), 100.0)
    router.expire(100.0 + ROUTE_LIFETIME_BEACONS * beacon_interval(IP) + 1)  # the link's lifetime: 90 s
    assert router.route_cost(FAR) == 2  # still there: the next beacon comes at 60 s, not 30
    router.expire(100.0 + ROUTE_LIFETIME_BEACONS * PHONE_PACE + 1)
    assert router.route_cost(FAR) is None


def test_an_unchanged_beacon_waits_for_the_refresh_counted_from_the_last_change() -> None:
    core = RelayCore(RELAY)
    core.link_up(IP, OTHER, 0.0)
    assert _beacons(core, 99.5)[OTHER] == [0.0]
    core.link_up(IP, LATE, 100.0)  # what RELAY offers changed: told at once
    sent = _beacons(core, 400.0, start=100.0)
    assert sent[OTHER] == [100.0, 250.0, 400.0]


def test_routes_from_a_free_link_live_three_refreshes() -> None:
    router = Router(PHONE)
    router.link_up(IP, RELAY)
    router.beacon_received("ip0", RELAY, BeaconFrame(((FAR, 1),), ()), 100.0)
    lifetime = ROUTE_LIFETIME_BEACONS * REFRESH_BEACONS * beacon_interval(IP)
    router.expire(100.0 + lifetime - 1)
    assert router.route_cost(FAR) == 2  # an unchanged beacon may be four intervals away
    router.expire(100.0 + lifetime)
    assert router.route_cost(FAR) is None


def test_lora_without_a_duty_cycle_beacons_every_interval_its_beacons_being_its_only_sign_of_life() -> None:
    us915 = LinkProfile("lora0", "lora", mtu=219, bitrate=500.0, cost=10.0, duty_cycle=1.0)
    core = RelayCore(RELAY)
    core.link_up(us915, OTHER, 0.0)
    sent: list[float] = []
    now = 0.0
    while now <= 120.0:
        core.timer(now)
        while (out := core.next_frame("lora0", now)) is not None:
            if isinstance(decode_frame(out[1], None, max_len=us915.mtu), BeaconFrame):
                sent.append(now)
        now += 0.5
    assert sent == [0.0, 30.0, 60.0, 90.0, 120.0]  # the same beacon each time, still sent
    router = Router(PHONE)
    router.link_up(us915, RELAY)
    router.beacon_received("lora0", RELAY, BeaconFrame(((FAR, 1),), ()), 100.0)
    router.expire(100.0 + ROUTE_LIFETIME_BEACONS * beacon_interval(us915))
    assert router.route_cost(FAR) is None  # three intervals, as before
