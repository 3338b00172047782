"""A relay's batch of frames on real engines and real SQLite stores: the bundles it takes and the
held bundles a custody ACK in the same batch hands on are written in one transaction."""

from __future__ import annotations

from pathlib import Path

from engine_net import IP, Deployment

from relay.bundle import Destination, Kind, Priority
from relay.engine import NodeEngine

T0 = 1000.0


def _frames(src: NodeEngine, now: float) -> dict[bytes, list[bytes]]:
    """Every frame ``src`` has for its IP link now, by neighbour."""
    out: dict[bytes, list[bytes]] = {}
    for _ in range(1000):  # bounded
        frame = src.next_frame(IP.name, now)
        if frame is None:
            return out
        out.setdefault(frame[0], []).append(frame[1])
    raise AssertionError("a link that never runs dry")


async def _exchange(engines: list[NodeEngine], now: float, rounds: int = 3) -> None:
    """Frames between the engines until none are left (beacons, summaries, DATA, ACKs)."""
    by_id = {engine.node_id: engine for engine in engines}
    for _ in range(rounds):
        for src in engines:
            for peer, frames in _frames(src, now).items():
                await by_id[peer].frames_received([(IP.name, src.node_id, f) for f in frames], now)


async def _send(engine: NodeEngine, to: NodeEngine, now: float) -> None:
    await engine.send(
        Destination.to_node(to.node_id),
        b"status",
        kind=Kind.TEXT,
        priority=Priority.ROUTINE,
        lifetime=600,
        now=now,
    )


async def test_a_batchs_new_bundles_and_the_deletes_its_acks_bring_share_one_commit(tmp_path: Path) -> None:
    net = Deployment()
    for name in ("a", "m", "b"):
        net.enrol(name)
    a, m, b = [await net.open(name, tmp_path, T0) for name in ("a", "m", "b")]
    for x, y in ((a, m), (m, b)):
        await x.link_up(IP, y.node_id, T0)
        await y.link_up(IP, x.node_id, T0)
    await _exchange([a, m, b], T0)  # routes: a reaches b through m
    await _send(a, b, T0 + 1)
    await m.frames_received([(IP.name, a.node_id, f) for f in _frames(a, T0 + 1)[m.node_id]], T0 + 1)
    first = m.store._db.execute("SELECT id FROM seen WHERE data IS NOT NULL").fetchall()
    assert len(first) == 1  # m holds it and hands it on to b, whose custody ACK waits
    await b.frames_received([(IP.name, m.node_id, f) for f in _frames(m, T0 + 2)[b.node_id]], T0 + 2)
    acks = _frames(b, T0 + 3)[m.node_id]  # its custody ACK, and its receipt to a
    await _send(a, b, T0 + 3)
    data = _frames(a, T0 + 3)[m.node_id]
    statements: list[str] = []
    m.store._db.set_trace_callback(statements.append)
    await m.frames_received(
        [(IP.name, b.node_id, f) for f in acks] + [(IP.name, a.node_id, f) for f in data], T0 + 3
    )
    m.store._db.set_trace_callback(None)
    assert statements.count("BEGIN IMMEDIATE") == 1, statements
    held = m.store._db.execute("SELECT id FROM seen WHERE data IS NOT NULL").fetchall()
    # the first handed on; taken: the second, and b's receipt to a that came with its ACK
    assert first[0] not in held and len(held) == 2
    for engine in (a, m, b):
        await engine.close()
