"""An enrolled insider over real IP links (real handshakes, stores and engines on 127.0.0.1) sends
bundles under another node's ids ahead of it, and bundles dated years ahead."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from engine_net import IP, Deployment, EnginePump

from field.adversary import ip_run
from relay.bundle import Bundle, Destination, Kind, Priority, to_epoch
from relay.core.frames import DataFrame, encode_frame


def _free_ports(count: int) -> tuple[int, ...]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return tuple(int(probe.getsockname()[1]) for probe in sockets)
    finally:
        for probe in sockets:
            probe.close()


async def test_an_insider_cannot_preempt_another_nodes_ids_over_ip(tmp_path: Path) -> None:
    relay_port, post_port = _free_ports(2)
    quiet = await ip_run(tmp_path / "quiet", False, (relay_port, post_port))
    relay_port, post_port = _free_ports(2)
    attacked = await ip_run(tmp_path / "attacked", True, (relay_port, post_port))
    print(
        f"\ninsider_preempt: alarm {quiet.latency_s} s without (each {quiet.latencies_s}), "
        f"{attacked.latency_s} s with {attacked.attack} (each {attacked.latencies_s}); "
        f"seen by operators: {attacked.counters}"
    )
    assert quiet.delivered and attacked.delivered, "the real alarms must arrive"
    # Loopback latencies are milliseconds: 50 ms of slack covers the event loop's scheduling.
    assert attacked.latency_s <= 2 * quiet.latency_s + 0.05, (quiet.latency_s, attacked.latency_s)
    assert attacked.counters.get("post.unopenable", 0) >= 1  # forged bundles reported, not taken as seen


async def test_forged_bundle_does_not_make_the_real_one_a_duplicate_and_future_dates_are_refused(
    tmp_path: Path,
) -> None:
    """Engine level: a forged bundle under the real id arrives at the destination first."""
    net = Deployment()
    for name in ("post", "field", "insider"):
        net.enrol(name)
    now = to_epoch(time.time())
    post, field = await net.open("post", tmp_path, now), await net.open("field", tmp_path, now)
    try:
        pump = EnginePump()
        await pump.connect(IP, field, post, now)
        real = await field.send(
            Destination.to_node(post.node_id),
            b"FIRE",
            kind=Kind.SOS,
            priority=Priority.FLASH,
            lifetime=3600,
            now=now,
        )
        forged = Bundle(field.node_id, Destination.to_node(post.node_id), real.created, real.seq, 3600,
                        Priority.FLASH, Kind.SOS, bytes(40))  # fmt: skip
        await post.frame_received("ip0", field.node_id, encode_frame(DataFrame(forged)), now)
        assert post.security.unopenable == 1
        ahead = Bundle(field.node_id, Destination.to_node(post.node_id), int(now) + 10 * 365 * 86400, 7,
                       3600, Priority.FLASH, Kind.SOS, bytes(40))  # fmt: skip
        await post.frame_received("ip0", field.node_id, encode_frame(DataFrame(ahead)), now)
        assert post.security.future_bundles == 1
        await pump.run(now, 5.0)
        delivered = await post.receive()
        assert [d.bundle_id for d in delivered] == [real] and delivered[0].payload == b"FIRE"
    finally:
        await post.close()
        await field.close()
