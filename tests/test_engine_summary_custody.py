"""A relay killed after its commit and before its custody ACK, on real SQLite stores: after the
restart the sender's copy passes into the relay's custody within seconds, not at expiry.

The relay's summary after the restart names the bundle (by a 4-byte hash); that is no custody, so
the sender's copy still goes to it, and the relay ACKs the duplicate it holds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_net import IP, LORA, Deployment, EnginePump

from relay.bundle import Destination, Kind, Priority
from relay.core.frames import DataFrame, decode_frame
from relay.core.receipts import State
from relay.links.base import LinkProfile
from relay.sim.deployment import collect_crashed

T0 = 1000.0
LIFETIME = 3600


@pytest.mark.parametrize("profile", [IP, LORA], ids=["ip", "lora"])
async def test_a_relay_killed_before_its_ack_takes_the_senders_copy_after_the_restart(
    tmp_path: Path, profile: LinkProfile
) -> None:
    net = Deployment()
    for name in ("a", "relay", "c"):
        net.enrol(name)
    c_id = net.members["c"][0].node_id  # up at the relay, never answering: the relay keeps what it takes
    a, relay = await net.open("a", tmp_path, T0), await net.open("relay", tmp_path, T0)
    pump = EnginePump()
    await pump.connect(profile, a, relay, T0)
    await relay.link_up(profile, c_id, T0)
    now = await pump.run(T0, 30)  # beacons: A learns that the relay reaches C
    to_c, text = Destination.to_node(c_id), Kind.TEXT
    bundle_id = await a.send(to_c, b"to C", kind=text, priority=Priority.PRIORITY, lifetime=LIFETIME, now=now)
    while (out := a.next_frame(profile.name, now)) is not None:
        await relay.frame_received(profile.name, a.node_id, out[1], now)  # durable when this returns
        if isinstance(decode_frame(out[1], relay.core.context), DataFrame):
            break
    assert relay.core.holds(bundle_id), "the relay stored the bundle"
    relay_id = relay.node_id
    del relay  # killed before its ACK left: dropped, not closed
    await collect_crashed(tmp_path / "relay.sqlite")
    if profile is IP:
        await a.link_down(profile.name, relay_id, now)  # the IP link saw the process go
    for _ in range(40):  # 20 s down; on LoRa A's copy times out, goes into the void, backs off
        now += 0.5
        await a.on_timer(now)
        while a.next_frame(profile.name, now) is not None:
            pass
    relay = await net.open("relay", tmp_path, now)
    assert relay.core.holds(bundle_id), "the commit survived the kill"
    pump = EnginePump()
    if profile is IP:
        await pump.connect(profile, relay, a, now)  # the relay speaks first: its summary before A's copy
    else:
        pump.links.append((profile, relay, a))  # LoRa: A never saw the relay go
        await relay.link_up(profile, a.node_id, now)
    await relay.link_up(profile, c_id, now)
    start = now
    while a.core.holds(bundle_id) and now < start + 120:
        now = await pump.run(now, 1.0)
    assert not a.core.holds(bundle_id), "the sender keeps its copy until the lifetime ends"
    assert now - start <= 60, f"custody passed {now - start:.0f} s after the restart"
    status = a.status(bundle_id)
    assert (status.state, status.peer) == (State.FORWARDED, relay_id)
    assert relay.core.holds(bundle_id)
    await a.close()
    await relay.close()
