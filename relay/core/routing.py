"""Where a bundle should go next: direct, by learned route, or opportunistically by copy budget.

* Direct when the destination node is a neighbour.
* Learned routes come from neighbours' beacons (node id, cost); a route lives three beacons of
  its neighbour and costs the link's cost plus what the neighbour advertised.
* On a cheap link without a duty cycle (IP, WebRTC) a beacon that repeats the last one queued to
  that neighbour goes only every ``REFRESH_BEACONS``-th interval (routes from there live three of
  those): what changed goes at the next interval, the link itself notices a neighbour that goes,
  and three in five beacons of the reference scenario only repeated the last one.
* Otherwise, and always for roles, groups and everyone, the bundle goes to every neighbour that
  lacks it (anti-entropy tells us who does). On costly links (cost > 1, e.g. LoRa) a binary
  spray-and-wait budget limits copies: each bundle starts with ``INITIAL_COPIES[priority]``; handing
  it on over a costly link gives away half; with one copy left it waits for a directed path.
* FLASH to a node never waits on what beacons last said (issue 15): a neighbour's cellular link
  comes and goes faster than LoRa beacons (15 min, triggered ones 90 s apart, 10 % of them lost)
  can tell, so the best route is often stale. A FLASH takes its ``FLASH_PATHS`` best routes
  through different neighbours (of equal costs, the one heard of last first). With no route it
  sprays like any bundle: flooding it to every neighbour whatever the budget spent a relay's LoRa
  duty cycle on its 19 responders in the 1,000-node region. (The core relays a FLASH before its
  custody ACK and sends it twice on a lossy link.)
* Link choice per neighbour: the cheapest link the bundle fits. Big bundles wait for a cheap link
  rather than crawl over LoRa in many fragments; FLASH takes whatever is up now.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, NamedTuple

from relay.bundle import NODE_ID_LEN, Bundle, Destination, DestKind, Header, Priority, short_code
from relay.core.fragments import max_fragmented_size
from relay.core.frames import MAX_COST, BeaconFrame, encode_frame
from relay.links.base import LinkProfile

INITIAL_COPIES = {
    Priority.FLASH: 8,
    Priority.IMMEDIATE: 6,
    Priority.PRIORITY: 4,
    Priority.ROUTINE: 2,
    Priority.BULK: 2,
}
MAX_FRAGMENTS_ON_COSTLY_LINK = 8  # larger bundles wait for a cheap link unless FLASH
FLASH_PATHS = 2  # FLASH to a node that is not a neighbour goes to this many next hops with a route
ROUTE_LIFETIME_BEACONS = 3
REFRESH_BEACONS = 5  # on a free link an unchanged beacon goes every 5th interval (150 s on IP)


def beacon_interval(profile: LinkProfile) -> float:
    """Seconds between beacons: often on free links, rarely where airtime is rationed."""
    return 30.0 if profile.duty_cycle >= 1 else 900.0


def paced_interval(profile: LinkProfile, pace: float | None) -> float:
    """Seconds between beacons to one neighbour: the link's, or the pace its connection keeps alive
    at when that is slower (a phone on battery announces a minute; both ends take the slower of the
    two announced, so they agree). Its routes then live three of those."""
    return max(beacon_interval(profile), pace or 0.0)


def refreshes(profile: LinkProfile) -> bool:
    """Whether an unchanged beacon on this link waits for the refresh (:data:`REFRESH_BEACONS`):
    on cheap links without a duty cycle (IP, WebRTC), where beacons go often and the link itself
    tells when a neighbour goes. Not on LoRa, even where no duty cycle applies (US 915): nothing
    but its beacons says a LoRa neighbour is still there."""
    return profile.duty_cycle >= 1 and not is_costly(profile)


def _route_lifetime(profile: LinkProfile, every: float) -> float:
    """Three beacons of a neighbour sent ``every`` seconds: three refreshes where an unchanged
    beacon waits for one (a paced neighbour's beacons all go, at its pace: they are its link's
    keepalive)."""
    if refreshes(profile) and every <= beacon_interval(profile):
        every *= REFRESH_BEACONS
    return ROUTE_LIFETIME_BEACONS * every


def triggered_beacon_gap(profile: LinkProfile) -> float:
    """Least seconds between beacons sent because routes changed: a tenth of the regular interval."""
    return beacon_interval(profile) / 10


def is_costly(profile: LinkProfile) -> bool:
    return profile.cost > 1


def link_cost(profile: LinkProfile) -> int:
    cost = round(profile.cost)  # between 1 and MAX_COST, in conditionals: asked per beacon heard
    return 1 if cost < 1 else MAX_COST if cost > MAX_COST else cost


class Hop(NamedTuple):  # a tuple, made in C (_new_hop): the router makes one per next hop it works out
    link: str
    peer: bytes
    directed: bool  # True: towards the destination (direct or by route); False: opportunistic copy


# (link, peer, directed) -> Hop through tuple.__new__, as Hop(...) does through a Python __new__ (about
# 2,500 instructions each on Python 3.11; 42,000 a reference run)
_new_hop: Callable[[tuple[str, bytes, bool]], Hop] = functools.partial(tuple.__new__, Hop)


class _Asked(NamedTuple):
    """What next_hops read of the bundle it answered (a Header), to answer again after a reorder."""

    destination: Destination
    priority: Priority


# as _new_hop: one per answer worked out
_new_asked: Callable[[tuple[Destination, Priority]], _Asked] = functools.partial(tuple.__new__, _Asked)


@dataclass(slots=True)
class _Offer:
    """The last beacon heard from one (link, neighbour) and the routes it gave: every route through
    that neighbour, all with one expiry. A beacon equal to it (most beacons: routes hold between
    changes) only moves that expiry, without rebuilding a route."""

    nodes: tuple[tuple[bytes, int], ...]  # as the beacon listed them
    hop_cost: int  # the link's cost when it was applied
    routes: dict[bytes, int]  # node -> total cost, this node itself left out


# module aliases: an enum member read costs ten times a global's (Python 3.11)
_NODE, _ALL, _FLASH = DestKind.NODE, DestKind.ALL, Priority.FLASH
_OnlyVia = dict[bytes, tuple[bytes, int | None]]  # node -> (its only neighbour, best cost without it)
# a beacon, what it was made from, and the offer version it was last found standing at
_Kept = tuple[dict[bytes, int], _OnlyVia, LinkProfile, BeaconFrame, int]
_Answers = dict[tuple[Any, ...], tuple[list[Hop], _Asked]]  # next_hops' answers to one destination


class Router:
    def __init__(self, node_id: bytes, names: frozenset[str] = frozenset()) -> None:
        self.node_id = node_id
        self.names = names  # roles and groups this node holds
        self._codes = frozenset(short_code(name) for name in names)
        self._names_offered = tuple((code, 0) for code in sorted(self._codes))[:255]  # in every beacon
        self._neighbours: dict[bytes, dict[str, LinkProfile]] = {}
        # (link, neighbour) -> (beacon interval, link cost, route lifetime): what a beacon heard
        # reads, worked out at link_up rather than per beacon (five calls each). One dict, not three:
        # from 30 attributes on, Python 3.11 reads every attribute of a Router slower (3 % of routing)
        self._terms: dict[tuple[str, bytes], tuple[float, int, float]] = {}
        self._routes: dict[bytes, dict[tuple[str, bytes], int]] = {}  # node -> (link, neighbour) -> cost
        self._offers: dict[tuple[str, bytes], _Offer] = {}  # the routes in _routes, per (link, neighbour)
        # Every change to _neighbours or to the routes in _routes that can change a next hop goes
        # through _change, so the relay re-routes only the bundles whose next hops it may change.
        self.version = 0  # counts those changes
        # ... of which those that change what this node reaches or at what cost (not a refresh
        # that only reorders equal-cost routes): what reach() reads.
        self._offer_version = 0
        self._changed: set[bytes | None] | None = set()  # nodes whose next hops changed; None: all
        # The answers a change dropped, per node in _changed (None: a bundle to it may have been
        # routed with a later one), and the ranked routes they were worked out from (None: not
        # known, or the neighbours changed since): take_changes names a node only if one comes out
        # different, and where the routes rank as they did none can.
        self._was: dict[bytes | None, tuple[_Answers, list[tuple[str, bytes]] | None] | None] = {}
        # (offer version, reach, the nodes _change named since: only their best costs may have moved;
        # None: look at every node) last computed. A beacon changes a few of a relay's routes.
        self._reach: tuple[int, dict[bytes, int], set[bytes] | None] | None = None
        self._neighbour_costs: dict[bytes, int] | None = None  # _hop_costs() until a neighbour comes or goes
        self._only: tuple[int, _OnlyVia, set[bytes] | None] = (-1, {}, None)  # the same for _only_via()
        # _only_via's entry per node (None: not only through one neighbour) until _change drops it:
        # a command post has a route to every node through each of its 16 cellular neighbours, and
        # every beacon it heard made it look at all of them again (8 % of a reference run)
        self._only_nodes: dict[bytes, tuple[bytes, int | None] | None] = {}
        self._best: dict[bytes, int] = {}  # each node's cheapest route, kept the same way for reach()
        # While routes churn a relay hears a beacon every few seconds per cellular neighbour and
        # re-routes every held bundle to the nodes they name: bundles alike go alike.
        # next_hops' answers per destination node (None: not a node), dropped by _change
        self._hops: dict[bytes | None, _Answers] = {}
        self._ordered: dict[bytes, list[tuple[str, bytes]]] = {}  # routes to a node, best first
        self._fit_all: tuple[int, int] | None = None  # largest (full, compact) sizes every link fits
        # A beacon sets every route through its sender to one expiry, kept here: the first route to
        # expire is the first of these (the relay asks after every event; a scan was 1.5 %).
        self._via_expiry: dict[tuple[str, bytes], float] = {}  # (link, neighbour) with routes
        self._first_expiry: tuple[float | None] | None = None  # (min of _via_expiry,); None: not known
        # What make_beacon last made per (link, neighbour), with the reach() and _only_via() it was
        # made from: kept while those stand (the same objects while their contents do).
        self._beacons: dict[tuple[str, bytes], _Kept] = {}
        self._encoded: dict[tuple[str, bytes], tuple[BeaconFrame, bytes]] = {}  # ... and its bytes
        # reach() with this node at cost 0, cheapest first (ties in reach's order): a beacon to a
        # neighbour that is no node's only way is this list without that neighbour.
        self._ranked: tuple[dict[bytes, int] | None, list[tuple[bytes, int]]] = (None, [])
        self._only_vias: tuple[_OnlyVia | None, set[bytes]] = (None, set())  # the neighbours in it
        # The last beacon queued to each (link, neighbour) that counted as a refresh, and when.
        self._queued_beacons: dict[tuple[str, bytes], tuple[BeaconFrame, float]] = {}
        # link -> (its profile, how long an unchanged beacon waits; None: it goes): per profile, not
        # per beacon_due (three calls each, 10,700 times a reference run)
        self._refresh_after: dict[str, tuple[LinkProfile, float | None]] = {}
        self._emptied = False  # link_down left a node with no route in _routes

    # -- neighbours and routes -------------------------------------------------------------------

    def link_up(self, profile: LinkProfile, peer: bytes, pace: float | None = None) -> None:
        """``pace``: the neighbour's keepalive on this link (see :func:`paced_interval`)."""
        self._neighbours.setdefault(peer, {})[profile.name] = profile
        every = paced_interval(profile, pace)
        self._terms[(profile.name, peer)] = (every, link_cost(profile), _route_lifetime(profile, every))
        self._neighbour_changed(peer)

    def link_down(self, link: str, peer: bytes) -> None:
        links = self._neighbours.get(peer)
        self._terms.pop((link, peer), None)
        if links is not None:
            links.pop(link, None)
            if not links:
                del self._neighbours[peer]
        offer = self._offers.pop((link, peer), None)
        for node in offer.routes if offer is not None else ():
            routes = self._routes[node]
            del routes[(link, peer)]
            if not routes:
                self._emptied = True  # expire() drops it
        self._forget_expiry((link, peer))
        self._beacons.pop((link, peer), None)
        self._encoded.pop((link, peer), None)
        self._queued_beacons.pop((link, peer), None)  # up again: told everything at once
        self._neighbour_changed(peer)

    def beacon_every(self, link: str, peer: bytes) -> float:
        """Seconds between beacons to and from ``peer`` on ``link`` (the link's unless it is paced)."""
        return self._terms[(link, peer)][0]

    def beacon_due(self, profile: LinkProfile, peer: bytes, now: float) -> bool:
        """Whether the regular beacon to ``peer`` goes now: always, unless the link refreshes
        (:func:`refreshes`) and it would repeat the last one queued to ``peer`` less than
        ``REFRESH_BEACONS`` intervals ago. A yes counts as queued."""
        rule = self._refresh_after.get(profile.name)
        if rule is None or rule[0] is not profile:
            # the 5th interval, whatever rounding (None: not a link that refreshes)
            after = (REFRESH_BEACONS - 0.5) * beacon_interval(profile) if refreshes(profile) else None
            rule = self._refresh_after[profile.name] = (profile, after)
        if rule[1] is None:
            return True  # every regular beacon goes: nothing to compare it with
        beacon = self.make_beacon(profile, peer)
        key = (profile.name, peer)
        last = self._queued_beacons.get(key)
        if last is not None and (last[0] is beacon or last[0] == beacon) and now - last[1] < rule[1]:
            return False
        self._queued_beacons[key] = (beacon, now)
        return True

    def _neighbour_changed(self, peer: bytes) -> None:
        """A link to ``peer`` came or went. The answers that read the neighbours go: a copy to every
        neighbour, none found, the way straight to ``peer`` and any way through it; those that
        follow routes through the others stand (a reference run's contacts came and went 366
        times, and each time all were worked out again), and so do the routes of the bundles they
        answer, so only the destinations (None: roles, groups, everyone) whose answers went are
        changes. Unless the sizes every link carries whole changed, which moves the answers'
        keys: then every bundle may go another way."""
        self.version += 1
        self._offer_version += 1
        self._only_nodes.clear()
        self._best.clear()
        self._ordered.clear()
        self._neighbour_costs = None
        self._look_at_every_node()
        fit_all, self._fit_all = self._fit_all, self._fit_every_link()
        if fit_all != self._fit_all:
            self._hops.clear()
            self._changed = None
            self._was.clear()
            return
        for node, answers in self._hops.items():
            gone = [
                key
                for key, (hops, _) in answers.items()
                if node is None
                or node == peer
                or not hops
                or not hops[0].directed
                or any(hop.peer == peer for hop in hops)
            ]
            for key in gone:
                del answers[key]
            if gone and self._changed is not None:
                self._changed.add(node)
                self._was[node] = None  # not compared: the neighbours changed under them
        for node, was in self._was.items():
            if was is not None and was[1] is not None:
                self._was[node] = (was[0], None)  # the same ranking no longer tells: compared

    def _change(self, target: bytes, *, reorder: bool = False) -> None:
        """Next hops may change for bundles to ``target``. ``reorder``: only the order of equal-cost
        routes changed, not what this node offers."""
        self.version += 1
        if not reorder:
            self._offer_version += 1
            self._only_nodes.pop(target, None)
            self._best.pop(target, None)
            kept = self._reach
            if kept is not None and kept[2] is not None:
                kept[2].add(target)
        ranked = self._ordered.pop(target, None)
        if reorder:
            ranked = None  # _reordered ranked them anew to compare: not what the answers came from
        if target in self._neighbours:
            return  # its answers go direct and read no route: they stand (a fifth of those checked)
        # Every held bundle to ``target`` was routed with one of its kept answers since its last
        # change: none kept, none to route again (half of the changes a beacon brings).
        dropped = self._hops.pop(target, None)
        if dropped and self._changed is not None:
            self._was[target] = None if target in self._changed else (dropped, ranked)
            self._changed.add(target)

    def take_changes(self, *, check: bool = True) -> set[bytes | None] | None:
        """The nodes whose next hops changed since the last call (a held bundle to any other node
        would be routed as it was); None if a neighbour came or went since, so that the next hops
        of any bundle may have changed. ``check``: work out anew the answers each change dropped
        and leave out a node whose answers all come out the same (its bundles would be routed as
        they were: about half of the nodes a beacon changes); False: the caller routes them all."""
        changed, self._changed = self._changed, set()
        was, self._was = self._was, {}
        if changed is None or not check:
            return changed
        for node, kept in was.items():
            if kept is None:
                continue
            dropped, ranked = kept
            if ranked is not None and node is not None:
                now = self._ordered.get(node)
                if (now if now is not None else self._rank(node)) == ranked:
                    self._hops[node] = dropped  # ranked as they were: every answer the same
                    changed.discard(node)
                    continue
            answers = self._hops[node] = {}
            same = True
            for key, (hops, asked) in dropped.items():
                fresh = self._next_hops(asked, {False: key[3], True: key[4]})
                answers[key] = (fresh, asked)
                same = same and fresh == hops
            if same:
                changed.discard(node)
        return changed

    def neighbours(self) -> list[bytes]:
        return list(self._neighbours)

    def is_neighbour(self, peer: bytes, link: str | None = None) -> bool:
        links = self._neighbours.get(peer)
        return links is not None and (link is None or link in links)

    def beacon_received(self, link: str, peer: bytes, beacon: BeaconFrame, now: float) -> None:
        via = (link, peer)
        terms = self._terms.get(via)
        if terms is None:
            return  # not a neighbour on that link
        _, hop_cost, lifetime = terms
        expires = now + lifetime
        offer = self._offers.get(via)
        if offer is not None and offer.nodes == beacon.nodes and offer.hop_cost == hop_cost:
            # The same offer again (three in five beacons of the reference scenario): its routes
            # stand, only their expiry moves, and they go first among routes of equal cost.
            if offer.routes:
                self._set_expiry(via, expires)
            for node, total in offer.routes.items():
                costs = self._routes[node]
                if len(costs) > 1 and list(costs.values()).count(total) > 1:
                    self._reordered(node, total)  # equal costs: in the order they were offered
            return
        me = self.node_id
        offered = {  # a conditional, not min(): a call per entry was a tenth of this method
            node: cost + hop_cost if cost + hop_cost < MAX_COST else MAX_COST
            for node, cost in beacon.nodes
            if node != me
        }
        # A beacon is the neighbour's whole offer: what it no longer lists it no longer reaches, so
        # a route it lost is withdrawn now rather than lingering for three beacon intervals (a
        # stale route is how a bundle ends up handed round a loop to a dead end).
        for target in offer.routes if offer is not None else ():
            if target not in offered:
                left = self._routes[target]
                del left[via]
                if not left:
                    del self._routes[target]
                    self._look_at_every_node()
                self._change(target)
        self._offers[via] = _Offer(beacon.nodes, hop_cost, offered)
        if offered:
            self._set_expiry(via, expires)
        else:
            self._forget_expiry(via)
        all_routes = self._routes
        for node, total in offered.items():
            routes = all_routes.get(node)
            if not routes:  # a new node, or one link_down emptied: its place in reach() is _routes'
                if routes is None:
                    routes = all_routes[node] = {}
                self._look_at_every_node()
            if routes.get(via) != total:
                routes[via] = total
                self._change(node)
            elif len(routes) > 1 and list(routes.values()).count(total) > 1:
                self._reordered(node, total)  # equal costs: in the order they were offered

    def _reordered(self, node: bytes, cost: int) -> None:
        """Routes to ``node`` of ``cost`` changed order (the one just refreshed goes first). That is
        a change only if a next hop changes: every held bundle to ``node`` was routed with one of
        the kept answers (or ``node`` already waits among the changes), so when no answer differs,
        routing them again would do nothing (99 % of these re-routes in the reference scenario)."""
        self._ordered.pop(node, None)
        if node in self._neighbours:
            return  # direct: routes are not read
        routes = self._routes[node]
        for key, (hops, asked) in self._hops.get(node, {}).items():
            if not hops or not hops[0].directed:
                continue  # no route fits: a copy to every neighbour, whatever their order
            paths = FLASH_PATHS if asked.priority is _FLASH else 1
            if len(hops) == paths and all(routes[(h.link, h.peer)] < cost for h in hops):
                continue  # found among cheaper routes: the reordered ones are never reached
            if self._next_hops(asked, {False: key[3], True: key[4]}) != hops:
                self._change(node, reorder=True)
                return

    def expire(self, now: float) -> None:
        first = self.next_deadline()
        if (first is None or first > now) and not self._emptied:
            return  # nothing to do, known without a look at every route (the relay asks on every timer)
        self._emptied = False
        for via in [via for via, at in self._via_expiry.items() if at <= now]:
            self._forget_expiry(via)
            for node in self._offers.pop(via).routes:
                routes = self._routes[node]
                del routes[via]
                self._change(node)
        for target in [target for target, routes in self._routes.items() if not routes]:
            del self._routes[target]
            self._look_at_every_node()

    def next_deadline(self) -> float | None:
        """When the first route expires (kept: the relay asks after every event, and most events
        move no route's expiry)."""
        if self._first_expiry is None:
            expiries = self._via_expiry.values()
            self._first_expiry = (min(expiries) if expiries else None,)  # no default=: parsed per call
        return self._first_expiry[0]

    def _set_expiry(self, via: tuple[str, bytes], at: float) -> None:
        old = self._via_expiry.get(via)
        self._via_expiry[via] = at
        kept = self._first_expiry
        if kept is not None and (old is None or (kept[0] is not None and old > kept[0])):
            # it was not the first (a conditional, not min(): the builtin parses its arguments)
            self._first_expiry = (at if kept[0] is None or at < kept[0] else kept[0],)
        else:
            self._first_expiry = None  # it may have been the first

    def _forget_expiry(self, via: tuple[str, bytes]) -> None:
        if self._via_expiry.pop(via, None) is not None:
            self._first_expiry = None

    def reach(self) -> dict[bytes, int]:
        """The cheapest known cost to every node we can reach: when it changes, neighbours should
        hear of it before the next regular beacon. The same dict while what this node offers stands
        (a refresh that only reorders equal-cost routes leaves it)."""
        kept = self._reach
        if kept is not None and kept[0] == self._offer_version:
            return kept[1]
        hops, bests, all_routes = self._hop_costs(), self._best, self._routes
        last = kept[1] if kept is not None else None
        changed = kept[2] if kept is not None else None
        nodes: Iterable[bytes]
        if last is not None and changed is not None:  # only their costs may differ, no node comes or goes
            reach, nodes = dict(last), changed
        else:  # neighbours first, then every node in _routes' order
            reach, nodes = dict(hops), all_routes.keys()
        for node in nodes:
            best = bests.get(node)
            if best is None:
                routes = all_routes[node]
                if not routes:
                    continue  # link_down emptied it
                best = MAX_COST + 1  # above any route's (offers are capped at MAX_COST)
                for cost in routes.values():  # not min(): parsing its arguments was most of the call
                    if cost < best:
                        best = cost
                bests[node] = best
            hop = hops.get(node)
            reach[node] = best if hop is None or best < hop else hop
        if last is not None and reach == last and list(reach) == list(last):  # the order too: beacons
            reach = last  # list ties in it. Most changes leave every best cost: beacons built on it stand
        only = self._only  # _only_via's entries read a node's reach: the same nodes may differ there
        if changed is None:
            self._only = (only[0], only[1], None)
        elif only[2] is not None:
            only[2].update(changed)
        self._reach = (self._offer_version, reach, set())
        return reach

    def _look_at_every_node(self) -> None:
        """_routes gained or lost a node, or a neighbour came or went: the next reach() looks at
        every node (its order follows _routes'), and so does _only_via() after it."""
        if self._reach is not None:
            self._reach = (self._reach[0], self._reach[1], None)

    def _only_via(self, reach: dict[bytes, int]) -> _OnlyVia:
        """The nodes whose cost in ``reach`` (:meth:`reach`) only routes through one neighbour give,
        with that neighbour and the best cost without it (None: none): a beacon to it must offer
        them at that cost (poisoned reverse). The same dict while what this node offers stands (a
        relay beacons each neighbour from it), and while its contents do."""
        kept = self._only
        if kept[0] == self._offer_version:
            return kept[1]
        hops, known = self._hop_costs(), self._only_nodes
        nodes: Iterable[bytes]
        if kept[2] is not None:  # reach() named the nodes whose entries may differ (order is not read)
            only, nodes = dict(kept[1]), kept[2]
        else:
            only, nodes = {}, self._routes.keys()
        for node in nodes:
            if node in known:
                entry = known[node]
            else:  # worked out here, not in a method: 22,000 calls a reference run
                # It reads only node's routes and the neighbours' link costs, as its reach does.
                routes = self._routes[node]
                entry = None
                best = reach.get(node)
                # none with no route left (link_down emptied it), or with a link of ours as cheap
                if best is not None and hops.get(node, MAX_COST + 1) > best:
                    via: bytes | None = None
                    for (_, neighbour), cost in routes.items():
                        if cost == best and neighbour != via:
                            if via is not None:
                                break  # a second neighbour as cheap: none
                            via = neighbour
                    else:
                        assert via is not None  # best is one of these costs
                        without = hops.get(node)
                        for (_, other), through in routes.items():
                            if other != via and (without is None or through < without):
                                without = through
                        entry = (via, without)
                known[node] = entry
            if entry is not None:
                only[node] = entry
            elif node in only:
                del only[node]
        if only == kept[1]:
            only = kept[1]
        self._only = (self._offer_version, only, set())
        return only

    def _hop_costs(self) -> dict[bytes, int]:
        """Each neighbour's cheapest link cost (the same dict until a neighbour comes or goes)."""
        if self._neighbour_costs is None:
            costs = {n: min(link_cost(p) for p in links.values()) for n, links in self._neighbours.items()}
            self._neighbour_costs = costs
        return self._neighbour_costs

    def route_cost(self, node: bytes) -> int | None:
        return min(self._routes.get(node, {}).values(), default=None)

    def make_beacon(self, profile: LinkProfile, peer: bytes) -> BeaconFrame:
        """What this node offers ``peer``: itself, its neighbours, its routes and its names, except
        routes that go through ``peer`` itself (poisoned reverse: no two-node routing loops). The
        same frame while what this node offers stands (a relay beacons every interval, and routes
        change far less often)."""
        key = (profile.name, peer)
        kept = self._beacons.get(key)
        if kept is not None and kept[4] == self._offer_version and kept[2] is profile:
            return kept[3]  # nothing offered changed since (a cellular round asks for each neighbour)
        reach = self.reach()
        only = self._only_via(reach)
        if (
            kept is not None
            and kept[0] is reach
            and kept[1] is only
            and (kept[2] is profile or kept[2] == profile)
        ):
            self._beacons[key] = (reach, only, profile, kept[3], self._offer_version)
            return kept[3]
        if self._only_vias[0] is not only:
            self._only_vias = (only, {via for via, _ in only.values()})
        if peer not in self._only_vias[1]:  # no node only through peer: every cost as reached
            if self._ranked[0] is not reach:
                self._ranked = (reach, sorted([(self.node_id, 0), *reach.items()], key=itemgetter(1)))
            nodes = [entry for entry in self._ranked[1] if entry[0] != peer]
        else:
            offer: dict[bytes, int] = {self.node_id: 0}
            for node, cost in reach.items():
                if node == peer:
                    continue
                through = only.get(node)
                if through is not None and through[0] == peer:  # only through peer: the best without
                    if through[1] is None:
                        continue
                    cost = through[1]
                offer[node] = cost
            nodes = sorted(offer.items(), key=itemgetter(1))
        room = profile.mtu - 3 - 4 * len(self._codes)
        fit = room // (NODE_ID_LEN + 1)
        nodes = nodes[: fit if fit > 0 else 0]
        beacon = BeaconFrame(tuple(nodes[:255]), self._names_offered)
        self._beacons[key] = (reach, only, profile, beacon, self._offer_version)
        return beacon

    def beacon_frame(self, profile: LinkProfile, peer: bytes) -> bytes:
        """:meth:`make_beacon` as a frame, encoded once per beacon (most go out unchanged)."""
        beacon = self.make_beacon(profile, peer)
        key = (profile.name, peer)
        encoded = self._encoded.get(key)
        if encoded is None or encoded[0] is not beacon:
            encoded = self._encoded[key] = (beacon, encode_frame(beacon))
        return encoded[1]

    # -- decisions -------------------------------------------------------------------------------

    def is_for_me(self, bundle: Bundle) -> bool:
        dest = bundle.destination
        if dest.kind is _NODE:
            return dest.node == self.node_id
        if dest.kind is _ALL:
            return True
        return dest.name in self.names

    def fits(self, profile: LinkProfile, size: int, priority: Priority) -> bool:
        if size <= profile.mtu:
            return True
        if size > max_fragmented_size(profile.mtu):
            return False
        if is_costly(profile) and priority is not Priority.FLASH:
            return size <= MAX_FRAGMENTS_ON_COSTLY_LINK * (profile.mtu - 4)
        return True

    def best_link(self, peer: bytes, size_for: dict[bool, int], priority: Priority) -> LinkProfile | None:
        """The cheapest link to ``peer`` the bundle fits; ``size_for[compact]`` is its frame size."""
        links = self._neighbours.get(peer)
        if links is not None and len(links) == 1:  # most neighbours are on one link
            for profile in links.values():
                size = size_for[profile.compact]
                return profile if size <= profile.mtu or self.fits(profile, size, priority) else None
        eligible = [
            p for p in self._neighbours.get(peer, {}).values() if self.fits(p, size_for[p.compact], priority)
        ]
        return min(eligible, key=lambda p: (p.cost, -p.bitrate, p.name), default=None)

    def next_hops(self, bundle: Header, size_for: dict[bool, int]) -> list[Hop]:
        """Where ``bundle`` goes next (the list is shared: do not change it). Bundles of one class,
        destination and size get the same answer until the neighbours or the routes to that
        destination change (:meth:`_change`), so the answer is kept until then: a relay routes
        every held bundle again when a neighbour comes or goes."""
        if self._fit_all is None:
            self._fit_all = self._fit_every_link()
        full, compact = size_for[False], size_for[True]
        if full <= self._fit_all[0] and compact <= self._fit_all[1]:
            full = compact = 0  # fits every link whole: its size changes nothing
        dest = bundle.destination
        answers = self._hops.get(dest.node)  # None: roles, groups, everyone
        if answers is None:
            answers = self._hops[dest.node] = {}
        key = (dest.kind, dest.name, bundle.priority, full, compact)
        kept = answers.get(key)
        if kept is None:
            if dest.node in self._was:
                self._was[dest.node] = None  # routed with an answer newer than the dropped ones
            kept = answers[key] = (self._next_hops(bundle, size_for), _new_asked((dest, bundle.priority)))
        return kept[0]

    def _fit_every_link(self) -> tuple[int, int]:
        """The largest (full, compact) frame sizes every neighbour's link carries whole."""
        profiles = [p for links in self._neighbours.values() for p in links.values()]
        return (
            min((p.mtu for p in profiles if not p.compact), default=0),
            min((p.mtu for p in profiles if p.compact), default=0),
        )

    def _rank(self, node: bytes) -> list[tuple[str, bytes]]:
        """The routes to ``node``, best first, kept in _ordered until they change. Of equal costs,
        the route heard of last first: a neighbour's cellular link comes and goes faster than LoRa
        beacons can tell, so the older offer is the likelier stale one."""
        known = self._routes.get(node, {})
        if len(known) < 2:
            routes = list(known)  # one route or none: nothing to rank (most nodes)
        else:
            expiry = self._via_expiry
            ranked = sorted(known.items(), key=lambda item: (item[1], -expiry[item[0]]))
            routes = [via for via, _ in ranked]
        self._ordered[node] = routes
        return routes

    def _next_hops(self, bundle: Header, size_for: dict[bool, int]) -> list[Hop]:
        dest = bundle.destination
        if dest.kind is _NODE and dest.node is not None:
            if dest.node == self.node_id:
                return []
            if dest.node in self._neighbours:
                profile = self.best_link(dest.node, size_for, bundle.priority)
                return [] if profile is None else [_new_hop((profile.name, dest.node, True))]
            paths = FLASH_PATHS if bundle.priority is _FLASH else 1
            routes = self._ordered.get(dest.node)
            if routes is None:  # kept like the answers: bundles to one node differ in class and size
                routes = self._rank(dest.node)
            directed: list[Hop] = []
            taken: tuple[bytes, ...] = ()  # the neighbours of directed, each taken once
            for link, via in routes:
                if via in taken:
                    continue
                profile = self._neighbours.get(via, {}).get(link)
                if profile is None:
                    continue
                size = size_for[profile.compact]
                if size <= profile.mtu or self.fits(profile, size, bundle.priority):  # fits' first test
                    directed.append(_new_hop((link, via, True)))
                    if len(directed) == paths:
                        break
                    taken += (via,)
            if directed:
                return directed
        hops = []
        for peer in self._neighbours:
            profile = self.best_link(peer, size_for, bundle.priority)
            if profile is not None:
                hops.append(_new_hop((profile.name, peer, False)))
        return hops
