"""Bundles for another post's nodes across the backbone (sans I/O).

A command post may hold bundles its own mesh cannot bring to their destination: a unit that moved
into another post's sector, a building that reports elsewhere. Unit sightings already cross the
backbone, so every post knows which post heard each node last. A bundle held here for
:data:`HOLD_S` seconds, addressed to a node another post heard more recently than this one, is
handed over: published on ``<region>.<post>.bundles`` with ``Nats-Msg-Id`` set to the bundle's id,
naming that post. That post's bridge gives it to its own node
(:meth:`relay.engine.NodeEngine.hand_over`), which takes custody as from a neighbour and routes it
over its mesh. This post keeps its own copy meanwhile (two custodians; the destination keeps the
first and receipts it once), so nothing is lost if the other post never reaches the node either.
JetStream drops a republished handover by its id and the receiving store keeps a bundle once by id
and digest, so nothing is applied twice. A handover names the relay node of the post that made it,
which is always at that post: so the destination's receipt, held at the receiving post, finds its
way back the same way.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from relay.bundle import Bundle, BundleDecodeError, BundleId, decode_full, encode_full

HOLD_S = 10.0  # how long this post's own mesh gets before a bundle goes to the post that heard its node


class HandoverError(ValueError):
    """A handed-over bundle that cannot be read."""


@dataclass(frozen=True, slots=True)
class Handover:
    to: str  # the post that heard the destination last
    bundle: Bundle
    by: str  # the handing post's relay node (hex id)

    @property
    def event_id(self) -> str:
        return f"bundle:{self.bundle.key.hex()}"

    def encode(self) -> bytes:
        return json.dumps({"to": self.to, "bundle": encode_full(self.bundle).hex(), "by": self.by}).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Handover:
        try:
            data = json.loads(raw)
            return cls(str(data["to"]), decode_full(bytes.fromhex(data["bundle"])), str(data["by"]))
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, BundleDecodeError) as exc:
            raise HandoverError(f"not a handed-over bundle: {exc}") from None


@dataclass
class Sightings:
    """Which post heard each node last, from the region's unit sightings (a tie keeps the first)."""

    last: dict[bytes, tuple[float, str]] = field(default_factory=dict)

    def heard(self, node_id: str, at: float, post: str) -> None:
        try:
            node = bytes.fromhex(node_id)
        except ValueError:
            return  # not a node id: nothing can be addressed to it
        known = self.last.get(node)
        if known is None or at > known[0]:
            self.last[node] = (at, post)

    def home(self, node_id: str, post: str) -> None:
        """A post's own relay node: always at that post, whatever was heard of it."""
        self.heard(node_id, math.inf, post)

    def elsewhere(self, post: str) -> set[bytes]:
        """The nodes another post heard last."""
        return {node for node, (_, heard_by) in self.last.items() if heard_by != post}


@dataclass
class HandoverPlan:
    """Which held bundles go to another post now: each once, after :data:`HOLD_S` seconds here."""

    post: str
    node_id: str  # this post's relay node (hex id), named in each handover
    hold_s: float = HOLD_S
    first_held: dict[BundleId, float] = field(default_factory=dict)
    sent: set[BundleId] = field(default_factory=set)

    def due(self, held: list[Bundle], sightings: Sightings, now: float) -> list[Handover]:
        """``held``: the bundles this node holds for nodes another post heard last."""
        current = {bundle.id for bundle in held}
        for bundle_id in [b for b in self.first_held if b not in current]:
            del self.first_held[bundle_id]  # delivered, handed on over the mesh, or expired
            self.sent.discard(bundle_id)
        out = []
        for bundle in held:
            first = self.first_held.setdefault(bundle.id, now)
            if bundle.id in self.sent or now - first < self.hold_s:
                continue
            heard = sightings.last.get(bundle.destination.node or b"")
            if heard is None or heard[1] == self.post:
                continue
            self.sent.add(bundle.id)
            out.append(Handover(heard[1], bundle, self.node_id))
        return out
