"""A UDP relay the tests own, between two WebRTC peers: it shapes rate, delay and loss.

Each peer is told (in the signal's candidates) that the other is at one of the shaper's two ports:
what arrives on ``port_a`` came from B and goes out of ``port_b`` to A's real address, and the other
way round, so every packet of the session crosses the shaper. Per direction: a serialisation queue
at ``rate`` bytes/s (a packet waits for those ahead of it; beyond ``queue_bytes`` it is dropped, as a
router's buffer would), then ``delay`` seconds of propagation, and a loss of ``loss`` drawn from a
seeded generator. ``blackhole`` drops everything (the path is gone).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import cast


@dataclass
class Shaping:
    rate: float = 1e9  # bytes/s
    delay: float = 0.0  # s, one way
    loss: float = 0.0  # probability per packet
    queue_bytes: int = 64 * 1024


@dataclass
class Direction:
    shaping: Shaping
    rng: random.Random
    free_at: float = 0.0  # when the serialiser is idle again
    queued: list[tuple[float, int]] = field(default_factory=list)  # (leaves at, size)
    passed: int = 0
    dropped: int = 0


class _End(asyncio.DatagramProtocol):
    def __init__(self, shaper: UdpShaper, side: str) -> None:
        self.shaper, self.side = shaper, side
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.shaper.arrived(self.side, data)


class UdpShaper:
    """Relays between peer A (reached through ``port_b``) and peer B (through ``port_a``)."""

    def __init__(self, host: str, shaping: Shaping, seed: int = 1) -> None:
        self.host = host
        self.a_real: tuple[str, int] | None = None  # A's own candidate
        self.b_real: tuple[str, int] | None = None
        self.blackhole = False
        self.directions = {
            "to_a": Direction(shaping, random.Random(seed)),
            "to_b": Direction(shaping, random.Random(seed + 1)),
        }
        self._ends: dict[str, _End] = {}
        self.port_a = self.port_b = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for side in ("a", "b"):
            _, protocol = await loop.create_datagram_endpoint(
                lambda s=side: _End(self, s), local_addr=(self.host, 0)
            )
            self._ends[side] = protocol
        self.port_a = self._port("a")
        self.port_b = self._port("b")

    def stop(self) -> None:
        for end in self._ends.values():
            if end.transport is not None:
                end.transport.close()

    def reshape(self, shaping: Shaping) -> None:
        for direction in self.directions.values():
            direction.shaping = shaping

    def arrived(self, side: str, data: bytes) -> None:
        """A datagram on ``port_a`` comes from B and is bound for A; on ``port_b`` the reverse."""
        key, out, target = ("to_a", "b", self.a_real) if side == "a" else ("to_b", "a", self.b_real)
        direction = self.directions[key]
        loop = asyncio.get_running_loop()
        now = loop.time()
        direction.queued = [(t, n) for t, n in direction.queued if t > now]
        backlog = sum(n for _, n in direction.queued)
        shaping = direction.shaping
        if (
            target is None
            or self.blackhole
            or backlog + len(data) > shaping.queue_bytes
            or direction.rng.random() < shaping.loss
        ):
            direction.dropped += 1
            return
        leaves = max(now, direction.free_at) + len(data) / shaping.rate
        direction.free_at = leaves
        direction.queued.append((leaves, len(data)))
        direction.passed += 1
        loop.call_at(leaves + shaping.delay, self._deliver, out, data, target)

    def _deliver(self, out: str, data: bytes, target: tuple[str, int]) -> None:
        transport = self._ends[out].transport
        if transport is not None and not transport.is_closing() and not self.blackhole:
            transport.sendto(data, target)

    def _port(self, side: str) -> int:
        transport = self._ends[side].transport
        assert transport is not None
        port: int = transport.get_extra_info("sockname")[1]
        return port
