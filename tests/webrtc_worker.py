"""Child process for the WebRTC process tests: one real node (SQLite store) with a WebRtcLink.

Usage: ``python webrtc_worker.py DIR NAME PEER [--dial] [--timing JSON]``. DIR holds
``authority.pub``, ``NAME.key`` and the certificates ``NAME.cert`` and ``PEER.cert``. The parent is
the signalling channel and the driver; the protocol is one line each way:

    parent -> child   SIGNAL <base64>       a signal from the peer
                      SEND <count> <prefix> send bundles <prefix><i> to the peer
    child -> parent   SIGNAL <base64>       a signal for the peer
                      UP / DOWN             the data channel opened / closed
                      SENT <payload>        the bundle is durable here (a claim it must arrive)
                      GOT <payload>         delivered to this node's application ...
                      ACKED <payload>       ... and acknowledged to the store (never delivered again)
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from pathlib import Path

from crypto.certificate import Certificate
from crypto.identity import Identity, PublicIdentity
from relay.bundle import Destination, Kind, to_epoch
from relay.engine import NodeEngine
from relay.links.webrtc import WebRtcLink
from relay.links.webrtc_config import WebRtcLinkOptions
from relay.links.webrtc_signal import SignalError
from relay.node import Node
from relay.trust import TrustStore


def say(*words: object) -> None:
    print(*words, flush=True)


class ParentSignaller:
    async def signal(self, peer: bytes, data: bytes, *, sos: bool) -> None:
        say("SIGNAL", base64.b64encode(data).decode())


class Reporter:
    """Wraps the node's link events to tell the parent when the channel is up."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def link_up(self, link: str, peer: bytes) -> None:
        say("UP")
        self.node.link_up(link, peer)

    def link_down(self, link: str, peer: bytes) -> None:
        say("DOWN")
        self.node.link_down(link, peer)

    def frame_received(self, link: str, peer: bytes, frame: bytes) -> None:
        self.node.frame_received(link, peer, frame)


async def main(directory: Path, name: str, peer_name: str, dial: bool, timing: dict[str, float]) -> None:
    authority = PublicIdentity.decode((directory / "authority.pub").read_bytes())
    identity = Identity.from_private_bytes((directory / f"{name}.key").read_bytes())
    certs = [Certificate.decode((directory / f"{n}.cert").read_bytes()) for n in (name, peer_name)]
    peer = certs[1].node_id
    engine = await NodeEngine.open(
        identity,
        certs[0],
        TrustStore(authority, certs),
        directory / f"{name}.sqlite",
        now=to_epoch(time.time()),
    )
    options = WebRtcLinkOptions(peers=[peer.hex()] if dial else [], **timing)  # type: ignore[arg-type]
    link = WebRtcLink(options, identity, engine.trust.check, signaller=ParentSignaller())
    node = Node(engine, [link])
    original_start = link.start
    link.start = lambda events: original_start(Reporter(node))  # type: ignore[method-assign]
    await node.start()
    receiver = asyncio.create_task(receive(node))
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    while line := (await reader.readline()).decode().split():
        if line[0] == "SIGNAL":
            try:
                answer = await link.accept(base64.b64decode(line[1]))
            except SignalError as exc:
                say("REFUSED", str(exc).replace(" ", "_"))
                continue
            if answer is not None:
                say("SIGNAL", base64.b64encode(answer).decode())
        elif line[0] == "SEND":
            for i in range(int(line[1])):
                payload = f"{line[2]}{i}".encode()
                await node.send(Destination.to_node(peer), payload.ljust(200, b"."), kind=Kind.TEXT)
                say("SENT", payload.decode())
    receiver.cancel()
    await node.stop()


async def receive(node: Node) -> None:
    async for delivery in node.inbox():
        payload = delivery.payload.rstrip(b".").decode()
        say("GOT", payload)
        await node.ack(delivery.bundle_id)
        say("ACKED", payload)


if __name__ == "__main__":
    args = sys.argv[1:]
    timing = json.loads(args[args.index("--timing") + 1]) if "--timing" in args else {}
    asyncio.run(main(Path(args[0]), args[1], args[2], "--dial" in args, timing))
