"""A lower bound of the protocol itself: the oracle's search, with what a bundle costs on the air.

The oracle counts a hop as the payload and a 16-byte header (:mod:`relay.sim.oracle`). A node sends
more: the end-to-end seal and the frame's own bytes, and a relay forwarding a bundle on the link it
came in on sends its custody ACK there first (its one radio finishes the exchange with the previous
hop before it starts the next; docs/relay-core.md, "Custody"), unless the link has the implicit ACK
(``LinkProfile.implicit_ack``: the forward is the ACK). This bound charges both and nothing
else: no loss, no queueing, no duty cycle. The core cannot beat it, so a latency against it shows
what scheduling and custody can still win, and the oracle against it what the protocol's shape
costs (docs/simulator.md, "Fourth pass").
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable

from crypto.seal import COMPACT_OVERHEAD
from relay.bundle import Bundle, Destination, Priority
from relay.core.frames import AckFrame, DataFrame, encode_frame
from relay.sim.links import Contact, SimLinkSpec
from relay.sim.oracle import Oracle, hop_arrival
from relay.sim.scenario import Scenario
from relay.sim.topology import alive_contacts, build_contacts
from relay.sim.traffic import plan_traffic

_NODE = b"\x00" * 16


def frame_lengths(payload_len: int, compact: bool) -> tuple[int, int]:
    """(DATA frame, one-id ACK frame) bytes for a bundle of ``payload_len`` plaintext bytes under
    the smallest seal the engine uses (the compact pairwise seal)."""
    bundle = Bundle(
        _NODE, Destination.to_node(_NODE), 0, 0, 60, Priority.FLASH, 0, bytes(payload_len + COMPACT_OVERHEAD)
    )
    data = encode_frame(DataFrame(bundle, 1, compact=compact))
    return len(data), len(encode_frame(AckFrame((bundle.id,))))


class ProtocolBound:
    """Earliest arrivals when every hop costs its real frames and a relay ACKs before forwarding on
    the same link (not on an ``implicit_ack`` link). Build it on the oracle's contacts
    (``topology.build_oracle``'s, crashes cut out)."""

    def __init__(self, contacts: Iterable[Contact]) -> None:
        self._adjacent: dict[str, list[Contact]] = {}
        for contact in contacts:
            self._adjacent.setdefault(contact.a, []).append(contact)
            self._adjacent.setdefault(contact.b, []).append(contact)
        self._times: dict[tuple[str, int], tuple[float, float]] = {}

    def earliest_arrival(self, src: str, dst: str, t0: float, payload_len: int) -> float | None:
        # state: (node, the link it got the bundle on; "" at the source)
        best: dict[tuple[str, str], float] = {(src, ""): t0}
        heap: list[tuple[float, str, str]] = [(t0, src, "")]
        done: set[tuple[str, str]] = set()
        while heap:
            t, node, came_on = heapq.heappop(heap)
            if node == dst:
                return t
            if (node, came_on) in done:
                continue
            done.add((node, came_on))
            for contact in self._adjacent.get(node, ()):
                link = contact.link
                data_s, ack_s = self._hop_times(link, payload_len)
                acks_first = link.name == came_on and not link.profile.implicit_ack
                hop = data_s + (ack_s if acks_first else 0.0) + link.latency_s
                arrival = hop_arrival(contact, t, hop)
                state = (contact.other(node), link.name)
                if arrival is not None and arrival < best.get(state, float("inf")):
                    best[state] = arrival
                    heapq.heappush(heap, (arrival, *state))
        return None

    def _hop_times(self, link: SimLinkSpec, payload_len: int) -> tuple[float, float]:
        """Seconds on the air of the bundle's frames (split at the MTU, without fragment headers)
        and of one ACK frame."""
        key = (link.name, payload_len)
        times = self._times.get(key)
        if times is None:
            data_len, ack_len = frame_lengths(payload_len, link.profile.compact)
            full, last = divmod(data_len, link.profile.mtu)
            data_s = full * link.frame_time(link.profile.mtu) + (link.frame_time(last) if last else 0.0)
            times = self._times[key] = (data_s, link.frame_time(ack_len))
        return times


def latencies(scenario: Scenario, priority: Priority) -> tuple[list[float], list[float]]:
    """The oracle's and this bound's latencies for the scenario's deliverable sends of ``priority``
    (the report's "deliverable": the oracle's arrival before the expiry and the end of the run); a
    send the bound cannot carry at all is ``math.inf``."""
    contacts = alive_contacts(scenario, build_contacts(scenario))
    oracle, bound = Oracle(contacts), ProtocolBound(contacts)
    oracle_s: list[float] = []
    bound_s: list[float] = []
    for send in plan_traffic(scenario):
        if send.priority is not priority:
            continue
        best = oracle.earliest_arrival(send.src, send.dst, send.at_s, send.size)
        if best is None or best > min(send.at_s + send.lifetime_s, scenario.end_s):
            continue
        arrival = bound.earliest_arrival(send.src, send.dst, send.at_s, send.size)
        oracle_s.append(best - send.at_s)
        bound_s.append(math.inf if arrival is None else arrival - send.at_s)
    return oracle_s, bound_s
