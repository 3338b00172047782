"""Alarms the command post gets only in part, over a real IP link: Updates and Cancels of alerts it
never received, and follow-ups that were lost.

Real parts in one process: the gateway (SIP over UDP on loopback), two relay nodes on their real
SQLite stores joined by a real IpLink on 127.0.0.1, the gateway node's inbox loop
(:func:`ng112.node_app.deliver_acks`) and the command post's alarm app. The corpus CAPs are read from
../shared at test time and sent by SIPp (or sipsak where SIPp cannot carry one) as a panel would.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from engine_net import IP_TIMING, Deployment, free_port
from ng112_samples import BREWERY_PIDF, BREWERY_SENDER, brewery_cap, sip_message
from system_tools import require_tool
from test_ng112_corpus_lora import _as_sent, _expected, _panel_sends

from ng112.buildings import BuildingRegistry
from ng112.cap import parse_cap
from ng112.command_post import AlarmRecords, parse_record_id, record_id
from ng112.fetch import decode_fetch
from ng112.gateway import Gateway, GatewayConfig, node_accept
from ng112.kinds import NG112_FETCH, NG112_FOLLOWUP, register_kinds
from ng112.node_app import deliver_acks, with_followup
from ng112.store import AlarmStore
from relay.bundle import BundleId, Destination, Priority, to_epoch
from relay.links.ip import IpLink, IpLinkConfig
from relay.links.ip_handshake import Credentials, Trust
from relay.node import Node

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "ng112"


@dataclass
class Field:
    post: Node
    gateway_node: Node
    app: AlarmRecords
    gateway: Gateway
    store: AlarmStore
    bodies: dict[str, dict[str, Any]]
    fetches: list[tuple[int, int]]  # fetch requests the gateway node received


class DropFirstFollowUp:
    """The gateway node as ``with_followup`` sees it, except that the first follow-up bundle is lost
    (as if its store evicted it): the loss the command post's fetch request repairs."""

    def __init__(self, node: Node) -> None:
        self.node, self.dropped = node, 0

    async def send(self, destination: Destination, payload: bytes, **options: Any) -> BundleId:
        if options.get("kind") == NG112_FOLLOWUP and not self.dropped:
            self.dropped += 1
            return BundleId(self.node.node_id, 0, 0)
        return await self.node.send(destination, payload, **options)


@asynccontextmanager
async def _open_field(tmp_path: Path, fetch_after_s: float, lose_followup: bool) -> AsyncIterator[Field]:
    net = Deployment()
    net.enrol("post", frozenset({"dispatcher"}))
    net.enrol("gateway", frozenset({"building"}))
    trust = Trust(net.authority.public, net.authority.revocations)
    port = free_port()
    configs = {
        "post": IpLinkConfig(listen=f"tcp://127.0.0.1:{port}", **IP_TIMING),
        "gateway": IpLinkConfig(peers=(f"tcp://127.0.0.1:{port}",), **IP_TIMING),
    }
    nodes: dict[str, Node] = {}
    for name in ("post", "gateway"):
        (tmp_path / name).mkdir()
        engine = await net.open(name, tmp_path / name, to_epoch(time.time()))
        nodes[name] = Node(engine, [IpLink(configs[name], Credentials(*net.members[name]), trust)])
    register_kinds(nodes["post"].kinds)
    register_kinds(nodes["gateway"].kinds)
    app = AlarmRecords(
        nodes["post"], tmp_path / "post" / "alarms.sqlite", BuildingRegistry(), fetch_after_s=fetch_after_s
    )
    bodies: dict[str, dict[str, Any]] = {}
    fetches: list[tuple[int, int]] = []
    to_post = Destination.to_node(nodes["post"].node_id)
    store = await AlarmStore.open(tmp_path / "gateway" / "ng112-gateway.sqlite")
    sender: Any = DropFirstFollowUp(nodes["gateway"]) if lose_followup else nodes["gateway"]
    accept = with_followup(sender, to_post, node_accept(sender, to_post, Priority.FLASH), store)
    config = GatewayConfig(udp_port=0, tcp_port=0, rate_burst=100, global_burst=100, flash_burst=100)
    gateway = Gateway(config, store, BuildingRegistry(), accept)

    async def post_feed() -> None:
        async for delivery in nodes["post"].inbox():
            for update in await app.handle(delivery):
                bodies[update.record_id] = update.body
            await nodes["post"].ack(delivery.bundle_id)

    def note_fetch(node: Node) -> Callable[[], Awaitable[None]]:
        """Watches the gateway node's deliveries: fetch requests are noted as they are handed over."""
        inbox = node.inbox

        async def watching() -> AsyncIterator[Any]:
            async for delivery in inbox():
                if delivery.kind == NG112_FETCH:
                    fetches.append(decode_fetch(delivery.payload))
                yield delivery

        node.inbox = watching  # type: ignore[method-assign]
        return lambda: deliver_acks(node, gateway, to_post)

    tasks: list[asyncio.Task[Any]] = []
    try:
        for node in nodes.values():
            await node.start()
        await gateway.start()
        app.start_fetching(period_s=0.2)
        tasks += [asyncio.create_task(post_feed()), asyncio.create_task(note_fetch(nodes["gateway"])())]
        yield Field(nodes["post"], nodes["gateway"], app, gateway, store, bodies, fetches)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await app.close()
        await gateway.stop()
        await store.close()
        for node in nodes.values():
            await node.stop()


async def _until(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        await asyncio.sleep(0.1)


def _original_of(update: bytes) -> bytes:
    """The alert a corpus Update/Cancel refers to (its first reference), as its panel sent it before."""
    cap, _ = parse_cap(update)
    ref = cap.references[0]
    alert = re.sub(
        rb"<identifier>[^<]*</identifier>",
        f"<identifier>{ref.identifier}</identifier>".encode(),
        update,
        count=1,
    )
    alert = re.sub(rb"<sent>[^<]*</sent>", f"<sent>{ref.sent}</sent>".encode(), alert, count=1)
    alert = re.sub(rb"<msgType>[^<]*</msgType>", b"<msgType>Alert</msgType>", alert, count=1)
    return re.sub(rb"\s*<references>[^<]*</references>", b"", alert, count=1)


@pytest.fixture
async def ip_field(tmp_path: Path) -> AsyncIterator[Field]:
    async with _open_field(tmp_path, fetch_after_s=3600, lose_followup=False) as field:
        yield field


async def test_updates_and_cancels_of_alerts_not_received_are_shown_then_merged(
    ip_field: Field, tmp_path: Path
) -> None:
    sipp, sipsak = require_tool("sipp", "sip-tester"), require_tool("sipsak", "sipsak")
    field = ip_field
    assert field.gateway.udp_address is not None
    port = field.gateway.udp_address[1]
    work = tmp_path / "panel"
    work.mkdir()
    orphans: dict[str, bytes] = {}
    shown: dict[str, str] = {}  # corpus file -> its alarm record at the command post
    for path in sorted((CORPUS / "cap").iterdir()):
        cap = _as_sent(path.read_bytes())
        expected = _expected(cap)
        if expected is None or expected[1].reference is None:
            continue  # refused at the gateway, or not an Update/Cancel naming an alert of its sender
        code, tool = await _panel_sends(path.stem, cap, port, work, sipp, sipsak)
        assert code == 0, f"{path.name}: {tool}"
        orphans[path.name], shown[path.name] = cap, expected[0]
    assert len(orphans) >= 4
    await _until("an alarm for every Update/Cancel", lambda: set(shown.values()) <= set(field.bodies), 30)
    for name, rid in shown.items():
        alert, _ = parse_cap(orphans[name])
        body = field.bodies[rid]
        assert body["msgType"] == alert.msg_type
        assert body["orphan"].startswith(f"{alert.msg_type.lower()} of an alert not received (references ")
        assert body["summary"].startswith("[UNAUTHENTICATED] [" + body["orphan"] + "] ")
        view = field.app.book.alarms[parse_record_id(rid)]
        assert view.orphan_of is not None and view.receipt is not None
        print(f"\n{name}: {rid} shown as {body['summary'][:110]}")
    await _until("the follow-ups", lambda: all(b["followup"] != "pending" for b in field.bodies.values()), 30)
    for name, rid in shown.items():  # once the CAP is in, the note names the panel's own references
        alert, _ = parse_cap(orphans[name])
        ref = alert.references[0]
        assert f"{ref.sender},{ref.identifier},{ref.sent}" in field.bodies[rid]["orphan"], name

    name = "oasis-spec-earthquake-update.xml"  # its alert arrives late: the Update joins it
    orphan_id = shown[name]
    code, tool = await _panel_sends("original", _original_of(orphans[name]), port, work, sipp, sipsak)
    assert code == 0, tool
    await _until("the merge", lambda: "merged_into" in field.bodies[orphan_id], 30)
    into = field.bodies[orphan_id]["merged_into"]
    body = field.bodies[into]
    assert body["orphan"] is None and body["msgType"] == "Update" and body["updates"] == 2
    assert parse_record_id(orphan_id) not in field.app.book.alarms
    assert field.app.book.resolve(parse_record_id(orphan_id)) == parse_record_id(into)
    assert body["cap"]["identifier"] == parse_cap(orphans[name])[0].identifier  # the Update's own CAP
    ack = await field.app.acknowledge(
        orphan_id, {"operator": "Jana", "action": "on scene", "at": time.time()}
    )
    assert ack is not None and field.app.book.alarms[parse_record_id(into)].operator_ack is not None
    print(f"{name}: {orphan_id} merged into {into} when its alert arrived")


async def test_a_lost_follow_up_is_fetched_over_ip(tmp_path: Path) -> None:
    async with _open_field(tmp_path, fetch_after_s=2.0, lose_followup=True) as field:
        assert field.gateway.udp_address is not None
        message = sip_message(
            BREWERY_SENDER, brewery_cap(datetime.now(UTC).replace(microsecond=0)), BREWERY_PIDF, "f1"
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as panel:
            panel.bind(("127.0.0.1", 0))
            panel.setblocking(False)
            loop = asyncio.get_running_loop()
            await loop.sock_sendto(panel, message, field.gateway.udp_address)
            reply = await asyncio.wait_for(loop.sock_recv(panel, 65535), 20)
        assert reply.startswith(b"SIP/2.0 200"), reply[:200]
        started = time.monotonic()
        await _until("the first frame", lambda: bool(field.bodies), 20)
        (rid, body) = next(iter(field.bodies.items()))
        assert body["followup"] == "pending" and body["instruction"] is None
        await asyncio.sleep(1.0)
        assert field.bodies[rid]["followup"] == "pending" and not field.fetches  # not asked yet
        await _until("the fetched follow-up", lambda: field.bodies[rid]["followup"] == "complete", 30)
        done = time.monotonic() - started
        assert field.fetches == [parse_record_id(rid)]  # one request, naming the alarm's digest
        body = field.bodies[rid]
        assert body["cap"]["identifier"] == "PHD-NH3-2026-0042" and "severní brány" in body["instruction"]
        assert body["civic_address"]["A3"] == "Plzeň" and record_id(parse_record_id(rid)) == rid
        await asyncio.sleep(1.0)
        assert len(field.fetches) == 1, "a completed alarm is not asked for again"
        print(
            f"\nfollow-up lost at the gateway, fetched over IP: complete {done:.1f} s after the first frame"
        )
