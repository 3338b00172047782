"""A tiny in-test network for RelayCore: frames move between cores on explicit calls, no I/O."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from relay.bundle import Bundle, BundleId, CompactContext
from relay.core.actions import Action, DeliverLocal, Drop, Persist
from relay.core.machine import RelayCore
from relay.links.base import BROADCAST, LinkProfile


@dataclass
class CoreNode:
    core: RelayCore
    delivered: list[Bundle] = field(default_factory=list)
    dropped: list[tuple[BundleId, str]] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)

    def apply(self, actions: list[Action], now: float) -> None:
        """Act like an engine whose store accepts everything at once."""
        pending = list(actions)
        while pending:
            action = pending.pop(0)
            self.actions.append(action)
            if isinstance(action, Persist):
                pending += self.core.persisted([action.bundle.id], [], now)
            elif isinstance(action, DeliverLocal):
                self.delivered += action.bundles
            elif isinstance(action, Drop):
                self.dropped += [(bundle_id, action.reason) for bundle_id in action.bundle_ids]


@dataclass
class Wire:
    """Both directions of one link between two nodes, with optional seeded loss."""

    profile: LinkProfile
    a: bytes
    b: bytes
    loss: float = 0.0


class Pump:
    def __init__(self, context: CompactContext | None = None, seed: int = 0) -> None:
        self.nodes: dict[bytes, CoreNode] = {}
        self.wires: list[Wire] = []
        self.context = context
        self.random = random.Random(seed)
        self.frames_sent = 0

    def add(self, node_id: bytes, names: frozenset[str] = frozenset()) -> CoreNode:
        node = self.nodes[node_id] = CoreNode(RelayCore(node_id, names, context=self.context))
        return node

    def connect(self, profile: LinkProfile, a: bytes, b: bytes, now: float, loss: float = 0.0) -> Wire:
        wire = Wire(profile, a, b, loss)
        self.wires.append(wire)
        self.nodes[a].core.link_up(profile, b, now)
        self.nodes[b].core.link_up(profile, a, now)
        return wire

    def disconnect(self, wire: Wire, now: float) -> None:
        self.wires.remove(wire)
        self.nodes[wire.a].core.link_down(wire.profile.name, wire.b, now)
        self.nodes[wire.b].core.link_down(wire.profile.name, wire.a, now)

    def step(self, now: float) -> int:
        """Every node sends at most one frame per link it has; returns how many frames moved."""
        moved = 0
        for node_id, node in self.nodes.items():
            node.apply(node.core.timer(now), now)
            links = sorted({w.profile.name for w in self.wires if node_id in (w.a, w.b)})
            for link in links:
                out = node.core.next_frame(link, now)
                if out is None:
                    continue
                peer, frame = out
                moved += 1
                self.frames_sent += 1
                peers = self._peers_on(link, node_id)
                for receiver, wire in peers:
                    if peer not in (BROADCAST, receiver):
                        continue
                    if wire.loss and self.random.random() < wire.loss:
                        continue
                    target = self.nodes[receiver]
                    target.apply(target.core.frame(link, node_id, frame, now), now)
        return moved

    def _peers_on(self, link: str, node_id: bytes) -> list[tuple[bytes, Wire]]:
        out = []
        for wire in self.wires:
            if wire.profile.name == link and node_id in (wire.a, wire.b):
                out.append((wire.b if node_id == wire.a else wire.a, wire))
        return out

    def run(self, start: float, until: float, dt: float = 0.1) -> float:
        """Step with time advancing by ``dt`` until ``until``; returns the final time."""
        now = start
        while now < until:
            self.step(now)
            now += dt
        return now
