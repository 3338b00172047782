"""ICE through TURN: a coturn server the test starts (as a command post would run one), both links
configured with it and no STUN; the test signals only relay candidates, so every packet crosses the
TURN server, and bundles still cross with receipts."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aioice.ice import get_host_addresses
from engine_net import Deployment
from system_tools import require_tool
from test_webrtc_link import collect, wait_delivered

from relay.bundle import Destination, Kind, to_epoch
from relay.links.webrtc import WebRtcLink
from relay.links.webrtc_config import TurnServer, WebRtcLinkOptions
from relay.links.webrtc_signal import CandidateType, decode, encode
from relay.node import Node

HOST = get_host_addresses(use_ipv4=True, use_ipv6=False)[0]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def turn(tmp_path: Path) -> Iterator[tuple[TurnServer, Path]]:
    port = free_udp_port()
    log = tmp_path / "turn.log"
    command = [
        require_tool("turnserver", "coturn"),
        "-n",
        "--listening-ip",
        HOST,
        "--listening-port",
        str(port),
    ]
    command += ["--relay-ip", HOST, "--min-port", "49160", "--max-port", "49260", "--lt-cred-mech"]
    command += ["--user", "mesh:secret", "--realm", "mesh112", "--no-tls", "--no-dtls", "--no-cli"]
    command += ["--log-file", str(log), "--simple-log", "--verbose", "--pidfile", str(tmp_path / "turn.pid")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        assert process.poll() is None, log.read_text() if log.exists() else "turnserver exited"
        yield TurnServer(url=f"turn:{HOST}:{port}?transport=udp", username="mesh", credential="secret"), log
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


class RelayOnlySignaller:
    """Passes each signal on with only its relay candidates: the host path is never tried."""

    def __init__(self) -> None:
        self.links: dict[bytes, WebRtcLink] = {}
        self.relay_candidates: list[int] = []

    def _relay_only(self, wire: bytes) -> bytes:
        signal_ = decode(wire)
        relays = tuple(c for c in signal_.candidates if c.type is CandidateType.RELAY)
        self.relay_candidates.append(len(relays))
        return encode(dataclasses.replace(signal_, candidates=relays))

    async def signal(self, peer: bytes, data: bytes, *, sos: bool) -> None:
        sender = decode(data).sender
        answer = await self.links[peer].accept(self._relay_only(data))
        if answer is not None:
            await self.links[sender].accept(self._relay_only(answer))


@pytest.fixture
async def pair(
    tmp_path: Path, turn: tuple[TurnServer, Path]
) -> AsyncIterator[tuple[Node, Node, RelayOnlySignaller]]:
    server, _ = turn
    net = Deployment()
    net.enrol("post")
    net.enrol("field")
    signaller = RelayOnlySignaller()
    post_id = net.members["post"][0].node_id
    options = {
        "post": WebRtcLinkOptions(turn=[server]),
        "field": WebRtcLinkOptions(turn=[server], peers=[post_id.hex()], connect_timeout=10.0),
    }
    nodes = []
    for name in ("post", "field"):
        engine = await net.open(name, tmp_path, to_epoch(time.time()))
        link = WebRtcLink(options[name], net.members[name][0], engine.trust.check, signaller=signaller)
        signaller.links[link.node_id] = link
        nodes.append(Node(engine, [link]))
    for node in nodes:
        await node.start()
    yield nodes[0], nodes[1], signaller
    for node in nodes:
        await node.stop()


async def test_bundles_cross_when_only_the_turn_relay_connects_the_peers(
    pair: tuple[Node, Node, RelayOnlySignaller], turn: tuple[TurnServer, Path]
) -> None:
    post, field, signaller = pair
    sent = [
        await field.send(Destination.to_node(post.node_id), b"via turn %d" % i, kind=Kind.TEXT)
        for i in range(20)
    ]
    assert sorted(await collect(post, 20, 30)) == sorted(b"via turn %d" % i for i in range(20))
    await wait_delivered(field, sent, 20)
    assert signaller.relay_candidates and all(count >= 1 for count in signaller.relay_candidates)
    log = turn[1].read_text()
    assert log.count("ALLOCATE processed, success") >= 2, log[-3000:]  # one relay address per peer
    assert "CHANNEL_BIND processed, success" in log, log[-3000:]  # data went through the relay
