"""Stock Meshtastic users heard on the air: a stock client's text and position reach the hooks of a
LoRa link (real meshtastic library, emulated radios) as unauthenticated records, within budgets."""

from __future__ import annotations

import asyncio
from typing import Any

import meshtastic.tcp_interface

from crypto.hop import HopAuth
from crypto.identity import Identity, PublicIdentity
from field.lora_emulator.device import DeviceServer
from field.lora_emulator.medium import LoRaMedium
from field.lora_emulator.radio import EmulatedRadio
from relay.heard import PER_RADIO_BURST, Heard, HeardGate, listen
from relay.links.lora import LoRaLink, LoRaLinkConfig

POST, STOCK = 0xA0000001, 0x0C0FFEE1
KEY = Identity.generate()


class _Events:
    def link_up(self, link: str, peer: bytes) -> None: ...
    def link_down(self, link: str, peer: bytes) -> None: ...
    def frame_received(self, link: str, peer: bytes, frame: bytes) -> None: ...


def _no_peers(node_id: bytes, now: float) -> PublicIdentity:
    raise AssertionError("no Mesh112 frame is expected from a stock radio")


async def test_stock_text_and_position_reach_the_command_posts_hooks() -> None:
    medium = LoRaMedium("LONG_FAST", seed=5, speedup=50)
    servers = [
        DeviceServer(EmulatedRadio(medium, num, position=(x, 0.0), seed=5))
        for num, x in ((POST, 0), (STOCK, 300))
    ]
    for server in servers:
        server.start()
    link = LoRaLink(
        LoRaLinkConfig(roster={}, port=servers[0].port, ack_timeout_s=5.0), HopAuth(KEY), _no_peers
    )
    heard: list[Heard] = []
    assert listen([link], lambda _: "lora", heard.append) == 1
    stock: Any = None
    try:
        await link.start(_Events())
        stock = await asyncio.to_thread(
            meshtastic.tcp_interface.TCPInterface, hostname="127.0.0.1", portNumber=servers[1].port
        )
        await asyncio.to_thread(stock.sendText, "help, trapped at the silo")
        await asyncio.to_thread(stock.sendPosition, 49.7384, 13.3737)
        for _ in range(250):
            if len(heard) >= 2:
                break
            await asyncio.sleep(0.02)
    finally:
        if stock is not None:
            await asyncio.to_thread(stock.close)
        await link.stop()
        for server in servers:
            server.stop()
        medium.close()
    text, position = sorted(heard, key=lambda h: h.text is None)
    assert text.radio == STOCK and text.text == "help, trapped at the silo"
    assert position.lat is not None and position.lon is not None
    assert abs(position.lat - 49.7384) < 1e-6 and abs(position.lon - 13.3737) < 1e-6
    body = text.body()
    assert body["authenticated"] is False and body["radio"] == "!0c0ffee1" and "help" in body["summary"]
    assert position.record_id() == "meshtastic-0c0ffee1-position" and position.body()["location"]["lat"]


def test_budgets_per_radio_and_overall() -> None:
    gate = HeardGate()
    at = 1000.0
    chatty = [gate.allow(Heard("lora", 1, at, text="x")) for _ in range(PER_RADIO_BURST + 5)]
    assert chatty == [True] * PER_RADIO_BURST + [False] * 5 and gate.dropped == 5
    assert gate.allow(Heard("lora", 2, at, text="help"))  # another radio is not held up by the first
    assert gate.allow(Heard("lora", 1, at + 10.0, text="again"))  # the budget refills (6 a minute)
    many = [gate.allow(Heard("lora", radio, at + 10.0, text="x")) for radio in range(100, 200)]
    assert 0 < sum(many) < 100  # the overall budget stops a crowd of claimed numbers
