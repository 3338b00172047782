"""An alarm whose follow-up is cut off by a LoRa partition: its first frame is shown, marked
incomplete, and the alarm completes when the path returns.

Real parts in one process: the gateway (SIP over UDP on loopback), two relay nodes on their real
stores, each on an emulated Meshtastic radio (20x real time) through the real ``meshtastic``
library, and the command post's alarm app. The partition falls between the two bundles: the node
passed to the gateway waits until the command post shows the first frame, then cuts the air between
the radios before the follow-up is handed over.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine_net import Deployment
from ng112_samples import BREWERY_PIDF, BREWERY_SENDER, brewery_cap, sip_message

from crypto.hop import HopAuth
from field.lora_emulator.device import DeviceServer
from field.lora_emulator.medium import LoRaMedium
from field.lora_emulator.radio import EmulatedRadio
from ng112.buildings import BuildingRegistry
from ng112.command_post import AlarmRecords, command_post_app
from ng112.gateway import Gateway, GatewayConfig, node_accept
from ng112.kinds import NG112_FOLLOWUP, register_kinds
from ng112.node_app import with_followup
from ng112.store import AlarmStore
from relay.bundle import BundleId, Destination, Priority, to_epoch
from relay.links.lora import LoRaLink, LoRaLinkConfig
from relay.node import Node

POST, GATEWAY = 0xA0000001, 0xA0000003


class CutBeforeFollowUp:
    """The gateway's node, except that before the follow-up is handed over it waits for the first
    frame to be shown at the command post and then cuts the air between the two radios."""

    def __init__(self, node: Node, shown: Callable[[], bool], cut: Callable[[], None]) -> None:
        self.node, self.shown, self.cut = node, shown, cut

    async def send(
        self, destination: Destination, payload: bytes, *, kind: int, priority: Priority, lifetime: int
    ) -> BundleId:
        if kind == NG112_FOLLOWUP:
            deadline = time.monotonic() + 60
            while not self.shown():
                assert time.monotonic() < deadline, "the first frame never reached the command post"
                await asyncio.sleep(0.1)
            self.cut()
        return await self.node.send(destination, payload, kind=kind, priority=priority, lifetime=lifetime)


async def _until(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        await asyncio.sleep(0.2)


async def _feed(node: Node, app: AlarmRecords, bodies: dict[str, dict[str, Any]]) -> None:
    """The command post's journal feed, reduced to the alarm app: latest body per record."""
    async for delivery in node.inbox():
        for update in await app.handle(delivery):
            bodies[update.record_id] = update.body
        await node.ack(delivery.bundle_id)


async def _sip(message: bytes, address: tuple[str, int], timeout: float) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_sendto(sock, message, address)
        return await asyncio.wait_for(loop.sock_recv(sock, 65535), timeout)


async def test_follow_up_lost_in_a_partition_arrives_when_the_path_returns(tmp_path: Path) -> None:
    net = Deployment()
    net.enrol("post", frozenset({"dispatcher"}))
    net.enrol("gateway", frozenset({"building"}))
    medium = LoRaMedium("LONG_FAST", seed=3, speedup=20)
    servers = {
        name: DeviceServer(EmulatedRadio(medium, num, position=(x, 0.0), seed=3))
        for name, num, x in (("post", POST, 0.0), ("gateway", GATEWAY, 450.0))
    }
    nums = {"post": POST, "gateway": GATEWAY}
    nodes: dict[str, Node] = {}
    tasks: list[asyncio.Task[Any]] = []
    bodies: dict[str, dict[str, Any]] = {}
    store: AlarmStore | None = None
    gateway: Gateway | None = None
    try:
        for name, other in (("post", "gateway"), ("gateway", "post")):
            (tmp_path / name).mkdir()
            servers[name].start()
            engine = await net.open(name, tmp_path / name, to_epoch(time.time()))
            roster = {nums[other]: net.members[other][1].node_id.hex()}
            config = LoRaLinkConfig(roster=roster, port=servers[name].port, ack_timeout_s=10.0)
            nodes[name] = Node(engine, [LoRaLink(config, HopAuth(net.members[name][0]), engine.trust.check)])
        app = command_post_app(nodes["post"])
        register_kinds(nodes["gateway"].kinds)
        for node in nodes.values():
            await node.start()
        tasks.append(asyncio.create_task(_feed(nodes["post"], app, bodies)))

        def cut() -> None:
            medium.set_link(GATEWAY, POST, loss=1.0)

        to_post = Destination.to_node(nodes["post"].node_id)
        sender = CutBeforeFollowUp(nodes["gateway"], lambda: bool(bodies), cut)
        accept = with_followup(sender, to_post, node_accept(sender, to_post, Priority.FLASH))
        store = await AlarmStore.open(tmp_path / "gateway" / "ng112-gateway.sqlite")
        gateway = Gateway(GatewayConfig(udp_port=0, tcp_port=0), store, BuildingRegistry(), accept)
        await gateway.start()
        assert gateway.udp_address is not None
        cap = brewery_cap(datetime.now(UTC).replace(microsecond=0))
        message = sip_message(BREWERY_SENDER, cap, BREWERY_PIDF, "p1")
        reply = await _sip(message, gateway.udp_address, 90)
        assert reply.startswith(b"SIP/2.0 200"), reply[:200]

        (body,) = bodies.values()
        assert body["followup"] == "pending" and body["pending_parts"] and body["instruction"] is None
        assert body["hazard"] == "gas (ammonia)" and body["cap"]["language"] == "cs-CZ"
        await asyncio.sleep(3.0)  # a minute of emulated air: nothing crosses the partition
        (body,) = bodies.values()
        assert body["followup"] == "pending", "the follow-up crossed a cut link"

        medium.set_link(GATEWAY, POST, loss=0.0)  # the path returns
        returned = time.monotonic()
        complete = lambda: next(iter(bodies.values()))["followup"] == "complete"  # noqa: E731
        await _until("the follow-up after the partition", complete, 120)
        (body,) = bodies.values()
        assert body["cap"]["identifier"] == "PHD-NH3-2026-0042" and "severní brány" in body["instruction"]
        print(
            f"\nfollow-up arrived {time.monotonic() - returned:.1f} s (x20 emulated) after the path returned"
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if gateway is not None:
            await gateway.stop()
        if store is not None:
            await store.close()
        for node in nodes.values():
            await node.stop()
        for server in servers.values():
            server.stop()
        medium.close()
