"""The engine checks a batch's origins against the trust store once per origin and batch (not three
times per bundle), and still delivers nothing from an origin revoked while the batch committed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine_net import IP, Deployment

from relay.bundle import Destination, Kind, Priority

T0 = 1000.0


async def _frames_from_a(tmp_path: Path, count: int) -> tuple[Deployment, Any, Any, list[bytes]]:
    net = Deployment()
    net.enrol("a")
    net.enrol("b")
    a, b = await net.open("a", tmp_path, T0), await net.open("b", tmp_path, T0)
    await a.link_up(IP, b.node_id, T0)
    await b.link_up(IP, a.node_id, T0)
    for i in range(count):
        await a.send(
            Destination.to_node(b.node_id),
            b"msg %d" % i,
            kind=Kind.TEXT,
            priority=Priority.ROUTINE,
            lifetime=3600,
            now=T0,
        )
    frames = []
    while (out := a.next_frame("ip0", T0)) is not None:
        frames.append(out[1])
    return net, a, b, frames


async def test_a_batch_checks_each_origin_once(tmp_path: Path) -> None:
    _, a, b, frames = await _frames_from_a(tmp_path, 20)
    checks = 0
    check = b.trust.check

    def counted(node_id: bytes, now: float) -> Any:
        nonlocal checks
        checks += 1
        return check(node_id, now)

    b.trust.check = counted
    await b.frames_received([("ip0", a.node_id, frame) for frame in frames], T0)
    delivered = await b.receive()
    assert len(delivered) == 20
    # one for the batch, one per receipt sealed back to the origin (16 subjects each); 62 before
    assert checks == 1 + 2, f"{checks} trust checks for one origin's batch of 20"
    await a.close()
    await b.close()


async def test_an_origin_revoked_during_the_commit_is_not_delivered(tmp_path: Path) -> None:
    net, a, b, frames = await _frames_from_a(tmp_path, 20)
    put_each = b.store.put_each

    async def revoking(*args: Any, **kwargs: Any) -> Any:
        results = await put_each(*args, **kwargs)
        assert b.apply_revocations(net.authority.revoke(a.node_id, "stolen radio"))
        return results

    b.store.put_each = revoking
    await b.frames_received([("ip0", a.node_id, frame) for frame in frames], T0)
    assert not b.deliveries_waiting(), "an origin revoked while its batch committed was delivered"
    await a.close()
    await b.close()
