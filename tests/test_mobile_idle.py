"""An idle phone's IP link is quiet between the beacons of the pace it announced (issue 17): the
phone's node (the daemon's, in this process, keepalive 35 s) dials a real command post process
(keepalive 1 s). The command post learns the phone's pace from its first PING and beacons it at that
pace; the phone's beacons are its keepalive. For 25 s after contact no record crosses the link in
either direction (the link's own beacons would come every 30 s, the command post's PINGs every
second), the link stays up, and the paced beacons then come."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from field.harness import running_field
from mobile.runtime import app_node_config
from relay import daemon
from relay.links.ip import IpLink
from relay.node import Node

PACE_S = 35.0  # above the IP link's 30 s beacons, so the pace decides


def _traffic(link: IpLink) -> tuple[int, int]:
    (peer,) = [p for p in link.metrics().peers if p.up]
    return peer.bytes_in, peer.bytes_out


async def _watch(node_dir: Path) -> dict[str, object]:
    stop = asyncio.Event()
    nodes: list[Node] = []
    running = asyncio.create_task(daemon.run(app_node_config(node_dir), stop, ready=nodes.append))
    try:
        async with asyncio.timeout(30):
            while not nodes or not nodes[0].engine.core.neighbours("ip0"):
                await asyncio.sleep(0.05)
        contact = time.monotonic()
        link = nodes[0].links["ip0"]
        assert isinstance(link, IpLink)
        (post,) = link.peers()
        await asyncio.sleep(8.0)  # contact's summaries, certificates and first beacons settle
        quiet_from = _traffic(link)
        await asyncio.sleep(contact + 33.0 - time.monotonic())
        quiet_to = _traffic(link)
        await asyncio.sleep(contact + PACE_S + 5.0 - time.monotonic())
        return {
            "pace": link.pace(post),
            "quiet": (quiet_from, quiet_to),
            "after": _traffic(link),
            "neighbours": nodes[0].engine.core.neighbours("ip0"),
            "post": post,
        }
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await running


def test_an_idle_phone_link_is_quiet_between_its_paced_beacons(
    tmp_path: Path, interpreter_restored: None
) -> None:
    with running_field(tmp_path, ("command-post", "responder-1"), started=("command-post",)) as field:
        node_dir = field.node("responder-1").directory
        with (node_dir / "node.toml").open("a") as config:  # the phone profile (ip0 is the last table)
            config.write(f"keepalive_interval = {PACE_S}\n")
        seen = asyncio.run(_watch(node_dir))
    assert seen["pace"] == PACE_S  # the slower side's, on the phone's end
    (in_from, out_from), (in_to, out_to) = seen["quiet"]  # type: ignore[misc]
    assert (in_to - in_from, out_to - out_from) == (0, 0), "a record crossed the idle link"
    in_after, out_after = seen["after"]  # type: ignore[misc]
    assert in_after > in_to and out_after > out_to  # the paced beacons (and their ACKs) came
    assert seen["neighbours"] == (seen["post"],)  # still up: nobody declared the other dead
