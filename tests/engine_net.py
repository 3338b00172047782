"""Test helpers: a deployment (authority, enrolled identities) and a pump between NodeEngines."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from crypto.certificate import Authority, Certificate
from crypto.identity import Identity
from field.harness import free_port
from relay.engine import NodeEngine
from relay.links.base import BROADCAST, LinkProfile
from relay.links.ip import IpLink, IpLinkConfig
from relay.links.ip_handshake import Credentials, Trust
from relay.trust import TrustStore

IP = LinkProfile("ip0", "ip", mtu=64000, bitrate=1e7)
LORA = LinkProfile(
    "lora0", "lora", mtu=219, bitrate=125.0, cost=10.0, duty_cycle=0.1, compact=True, per_frame_overhead_s=0.3
)


# Keepalives and reconnects short enough for a test to see a link drop and come back in a second.
IP_TIMING = {"keepalive_interval": 0.25, "keepalive_misses": 3, "reconnect_min": 0.05, "reconnect_max": 0.5}


@dataclass
class Deployment:
    authority: Authority = field(default_factory=lambda: Authority.generate())
    members: dict[str, tuple[Identity, Certificate]] = field(default_factory=dict)

    def enrol(self, name: str, roles: frozenset[str] = frozenset()) -> tuple[Identity, Certificate]:
        while True:
            identity = Identity.generate()
            if all(c.node_id[:3] != identity.node_id[:3] for _, c in self.members.values()):
                break
        cert = self.authority.issue(identity.public, roles, name, int(time.time()) + 86400)
        self.members[name] = (identity, cert)
        return identity, cert

    def trust(self) -> TrustStore:
        return TrustStore(self.authority.public, [c for _, c in self.members.values()])

    async def open(self, name: str, directory: Path, now: float) -> NodeEngine:
        identity, cert = self.members[name]
        return await NodeEngine.open(identity, cert, self.trust(), directory / f"{name}.sqlite", now=now)


@dataclass
class IpField:
    """A command post ("post") listening on a free loopback port and a field unit ("field") dialling it,
    enrolled in one deployment: the IP link each of them runs."""

    net: Deployment
    configs: dict[str, IpLinkConfig]

    def link(self, name: str) -> IpLink:
        trust = Trust(self.net.authority.public, self.net.authority.revocations)
        return IpLink(self.configs[name], Credentials(*self.net.members[name]), trust)


def ip_field(dial: Callable[[int], str] = lambda port: f"tcp://127.0.0.1:{port}") -> IpField:
    """The post and the field unit; the field unit dials ``dial(port)`` (an impairing proxy's address, or
    the post's own)."""
    net = Deployment()
    net.enrol("post", frozenset({"command"}))
    net.enrol("field")
    port = free_port()
    configs = {
        "post": IpLinkConfig(listen=f"tcp://127.0.0.1:{port}", **IP_TIMING),
        "field": IpLinkConfig(peers=(dial(port),), **IP_TIMING),
    }
    return IpField(net, configs)


class EnginePump:
    """Moves frames between engines by calling next_frame / frame_received directly."""

    def __init__(self) -> None:
        self.links: list[tuple[LinkProfile, NodeEngine, NodeEngine]] = []
        self.frames = 0

    async def connect(self, profile: LinkProfile, a: NodeEngine, b: NodeEngine, now: float) -> None:
        self.links.append((profile, a, b))
        await a.link_up(profile, b.node_id, now)
        await b.link_up(profile, a.node_id, now)

    async def disconnect(self, profile: LinkProfile, a: NodeEngine, b: NodeEngine, now: float) -> None:
        self.links.remove((profile, a, b))
        await a.link_down(profile.name, b.node_id, now)
        await b.link_down(profile.name, a.node_id, now)

    async def step(self, now: float, duplicate: bool = False) -> int:
        moved = 0
        engines = {e.node_id: e for _, a, b in self.links for e in (a, b)}
        for engine in engines.values():
            await engine.on_timer(now)
        for profile, a, b in list(self.links):
            for src, dst in ((a, b), (b, a)):
                out = src.next_frame(profile.name, now)
                if out is None:
                    continue
                peer, frame = out
                if peer in (dst.node_id, BROADCAST):
                    moved += 1
                    await dst.frame_received(profile.name, src.node_id, frame, now)
                    if duplicate:
                        await dst.frame_received(profile.name, src.node_id, frame, now)
        self.frames += moved
        return moved

    async def run(self, now: float, seconds: float, dt: float = 0.5, duplicate: bool = False) -> float:
        end = now + seconds
        while now < end:
            await self.step(now, duplicate)
            now += dt
        return now
