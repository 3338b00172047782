"""LoRaLink through the real meshtastic library and the emulated radios on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import meshtastic.tcp_interface
import pytest
from pubsub import pub

from crypto.errors import CertificateError
from crypto.hop import HopAuth
from crypto.identity import Identity, PublicIdentity
from field.lora_emulator.device import DeviceServer
from field.lora_emulator.medium import LoRaMedium
from field.lora_emulator.radio import EmulatedRadio
from relay.links.base import BROADCAST, LinkError
from relay.links.lora import LoRaLink, LoRaLinkConfig, LoRaNakError

NUM_A, NUM_B, NUM_C = 0xA0000001, 0xA0000002, 0xA0000003
KEYS = {num: Identity.generate() for num in (NUM_A, NUM_B, NUM_C)}
ID_A, ID_B, ID_C = (KEYS[num].node_id for num in (NUM_A, NUM_B, NUM_C))
ROSTER = {num: key.node_id.hex() for num, key in KEYS.items()}
PUBLIC = {key.node_id: key.public for key in KEYS.values()}


def peer_keys(node_id: bytes, now: float) -> PublicIdentity:
    """The trust store's role in these tests: every rostered node is enrolled."""
    if node_id not in PUBLIC:
        raise CertificateError(f"node {node_id.hex()[:8]} is not enrolled")
    return PUBLIC[node_id]


def make_link(num: int, config: LoRaLinkConfig, **kw: Any) -> LoRaLink:
    return LoRaLink(config, HopAuth(KEYS[num]), peer_keys, **kw)


class Recorder:
    def __init__(self) -> None:
        self.frames: list[tuple[bytes, bytes]] = []
        self.overheard: list[tuple[bytes, bytes]] = []
        self.ups: list[bytes] = []
        self.downs: list[bytes] = []

    def link_up(self, link: str, peer: bytes) -> None:
        self.ups.append(peer)

    def link_down(self, link: str, peer: bytes) -> None:
        self.downs.append(peer)

    def frame_received(self, link: str, peer: bytes, frame: bytes) -> None:
        self.frames.append((peer, frame))

    def frame_overheard(self, link: str, peer: bytes, frame: bytes) -> None:
        self.overheard.append((peer, frame))


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


class Field:
    def __init__(self) -> None:
        self.medium = LoRaMedium("LONG_FAST", seed=11, speedup=50)
        self.radios: dict[int, EmulatedRadio] = {}
        self.servers: dict[int, DeviceServer] = {}
        self.links: list[LoRaLink] = []

    def radio(self, num: int, x: float, region: str = "EU_868") -> DeviceServer:
        self.radios[num] = EmulatedRadio(self.medium, num, position=(x, 0.0), seed=11, region=region)
        server = DeviceServer(self.radios[num])
        server.start()
        self.servers[num] = server
        return server

    async def link(self, num: int, recorder: Recorder, **kw: Any) -> LoRaLink:
        config = LoRaLinkConfig(
            roster=ROSTER, port=self.servers[num].port, ack_timeout_s=2.0, reconnect_min_s=0.2, **kw
        )
        link = make_link(num, config, on_text=kw.pop("on_text", None))
        self.links.append(link)
        await link.start(recorder)
        return link

    async def close(self) -> None:
        for link in self.links:
            await link.stop()
        for server in self.servers.values():
            server.stop()
        self.medium.close()


@pytest.fixture
async def field() -> AsyncIterator[Field]:
    made = Field()
    yield made
    await made.close()


async def test_two_links_exchange_frames(field: Field) -> None:
    field.radio(NUM_A, 0)
    field.radio(NUM_B, 500)
    events_a, events_b = Recorder(), Recorder()
    link_a = await field.link(NUM_A, events_a)
    link_b = await field.link(NUM_B, events_b)
    assert link_a.profile.kind == "lora" and link_a.profile.compact
    assert 130 < link_a.profile.bitrate < 140 and link_a.profile.duty_cycle == 0.10
    assert link_a.profile.mtu == 207  # 219 bytes of a direct message less the 12-byte hop tag
    assert ID_B in events_a.ups and ID_A in events_b.ups
    await link_a.send(ID_B, b"\x01" * 207)
    await link_b.send(ID_A, b"reply")
    assert await until(lambda: len(events_b.frames) == 1 and len(events_a.frames) == 1)
    assert events_b.frames == [(ID_A, b"\x01" * 207)]  # the tag is checked and taken off
    assert events_a.frames == [(ID_B, b"reply")]
    assert link_a.state().frames_sent == 1 and link_a.state().connected
    assert link_a.state().airtime_last_hour_s == pytest.approx(2.1566, abs=0.01)  # one full frame
    with pytest.raises(LinkError, match="exceeds the LoRa limit of 207"):
        await link_a.send(ID_B, b"x" * 208)
    with pytest.raises(LinkError, match="broadcast could not be authenticated"):
        await link_a.send(BROADCAST, b"\x02" * 100)
    with pytest.raises(LinkError, match="not in the roster"):
        await link_a.send(b"\x99" * 16, b"x")


async def test_nak_is_raised_and_counted(field: Field) -> None:
    field.radio(NUM_A, 0)
    field.radio(NUM_B, 50_000)  # out of range: three transmissions, then MAX_RETRANSMIT
    link_a = await field.link(NUM_A, Recorder())
    with pytest.raises(LoRaNakError) as refused:
        await link_a.send(ID_B, b"anyone there?")
    assert refused.value.reason == "MAX_RETRANSMIT"
    assert link_a.state().naks == {"MAX_RETRANSMIT": 1}
    assert "MAX_RETRANSMIT" in link_a.state().last_error
    with pytest.raises(LoRaNakError) as no_key:  # in the roster but never heard: no public key
        await link_a.send(ID_C, b"hello?")
    assert no_key.value.reason == "PKI_SEND_FAIL_PUBLIC_KEY"


async def _transfer_with_fault(field: Field, fault: Callable[[], None]) -> tuple[LoRaLink, Recorder]:
    """Send 12 numbered frames with ``fault`` after the 4th; failed sends are retried, as the core would."""
    field.radio(NUM_A, 0)
    field.radio(NUM_B, 500)
    events_b = Recorder()
    link_a = await field.link(NUM_A, Recorder())
    await field.link(NUM_B, events_b)
    for i in range(12):
        if i == 4:
            fault()
        for _attempt in range(40):
            try:
                await link_a.send(ID_B, bytes([i]) * 100)
                break
            except LinkError:
                await asyncio.sleep(0.1)
        else:
            pytest.fail(f"frame {i} never got through")
    wanted = {bytes([i]) * 100 for i in range(12)}
    assert await until(lambda: wanted <= {frame for _, frame in events_b.frames})
    return link_a, events_b


async def test_tcp_reset_mid_transfer_loses_nothing(field: Field) -> None:
    link_a, _ = await _transfer_with_fault(field, lambda: field.servers[NUM_A].reset_clients())
    # Every frame arrived (checked above). Who recovered depends on where the RST lands: on a read,
    # the library publishes connection.lost and the link rebuilds the interface; on a send, the
    # library's own TCP reconnect recovers first and the link never sees the connection drop.
    state = link_a.state()
    assert state.connected
    assert (state.connects == 2 and "lost" in state.last_error) or state.connects == 1


async def test_radio_reboot_mid_transfer_loses_nothing(field: Field) -> None:
    link_a, _ = await _transfer_with_fault(field, lambda: field.servers[NUM_A].reboot())
    assert link_a.state().connected


async def test_plain_text_interop_with_a_stock_client(field: Field) -> None:
    field.radio(NUM_A, 0)
    field.radio(NUM_C, 500)
    texts: list[tuple[int, str]] = []
    config = LoRaLinkConfig(roster=ROSTER, port=field.servers[NUM_A].port, ack_timeout_s=5.0)
    link_a = make_link(NUM_A, config, on_text=lambda num, text: texts.append((num, text)))
    field.links.append(link_a)
    await link_a.start(Recorder())
    stock = await asyncio.to_thread(
        meshtastic.tcp_interface.TCPInterface, hostname="127.0.0.1", portNumber=field.servers[NUM_C].port
    )
    heard: list[str] = []

    def on_text(packet: dict[str, Any], interface: Any) -> None:
        if interface is stock:
            heard.append(packet["decoded"]["text"])

    pub.subscribe(on_text, "meshtastic.receive.text")
    try:
        await asyncio.to_thread(stock.sendText, "Smoke on floor 3", destinationId=NUM_A)
        assert await until(lambda: texts == [(NUM_C, "Smoke on floor 3")])
        await link_a.send_text(NUM_C, "Received, team on the way")
        assert await until(lambda: heard == ["Received, team on the way"])
    finally:
        pub.unsubscribe(on_text, "meshtastic.receive.text")
        await asyncio.to_thread(stock.close)


async def test_frames_from_radios_outside_the_roster_are_dropped(field: Field) -> None:
    field.radio(NUM_A, 0)
    field.radio(0x0BADCAFE, 500)
    events_a = Recorder()
    link_a = await field.link(NUM_A, events_a)
    field.radios[0x0BADCAFE].send_from_app(b"spoof", portnum=300, to=NUM_A)
    assert await until(lambda: link_a.state().unknown_senders == 1)
    assert link_a.state().refused == {"unknown_sender": 1}
    assert events_a.frames == []


async def test_untagged_broadcast_and_foreign_frames_never_reach_the_core(field: Field) -> None:
    field.radio(NUM_A, 0)
    field.radio(NUM_B, 500)
    events_a = Recorder()
    link_a = await field.link(NUM_A, events_a)
    radio_b = field.radios[NUM_B]
    radio_b.send_from_app(b"\x70\x00\x00", portnum=300, to=NUM_A)  # a rostered radio, no hop tag
    radio_b.send_from_app(b"\x70\x00\x00" + bytes(12), portnum=300)  # a channel broadcast
    tagged_for_c = HopAuth(KEYS[NUM_B]).tag(KEYS[NUM_C].public, b"\x70\x00\x00", 0.0)
    radio_b.send_from_app(tagged_for_c, portnum=300, to=NUM_A)  # B's tag, but made for C
    assert await until(lambda: sum(link_a.state().refused.values()) == 3)
    assert link_a.state().refused == {"short": 1, "not_addressed": 1, "tag": 1}
    assert events_a.frames == [] and link_a.state().frames_received == 0


async def test_a_forward_that_acknowledges_reaches_its_addressee_and_is_overheard_by_the_acknowledged(
    field: Field,
) -> None:
    """send_acknowledging: one channel broadcast; B takes it as its frame, C as overheard (its
    custody ACK), each after checking its own hop tag; a replay of it is refused at both."""
    for num, x in ((NUM_A, 500), (NUM_B, 0), (NUM_C, 1000)):
        field.radio(num, x)
    events = {num: Recorder() for num in (NUM_A, NUM_B, NUM_C)}
    link_a = await field.link(NUM_A, events[NUM_A])
    link_b = await field.link(NUM_B, events[NUM_B])
    link_c = await field.link(NUM_C, events[NUM_C])
    assert link_a.profile.implicit_ack  # the default
    alarm = b"\x25" + bytes(100)
    await link_a.send_acknowledging(ID_B, alarm, (ID_C,))  # no radio ACK to wait for
    assert await until(lambda: events[NUM_B].frames and events[NUM_C].overheard)
    assert events[NUM_B].frames == [(ID_A, alarm)] and events[NUM_B].overheard == []
    assert events[NUM_C].overheard == [(ID_A, alarm)] and events[NUM_C].frames == []
    assert link_a.state().frames_sent == 1 and link_a.state().implicit_acks_sent == 1
    assert link_c.state().frames_overheard == 1 and link_b.state().frames_overheard == 0
    sent = [p for p in field.radios[NUM_A].sent_from_phone if p.decoded.portnum == 300]
    assert [p.to for p in sent] == [0xFFFFFFFF] and not sent[0].want_ack
    field.radios[NUM_A].send_from_app(sent[0].decoded.payload, portnum=300)  # replayed on the air
    assert await until(
        lambda: link_b.state().refused.get("replay") == 1 == link_c.state().refused.get("replay")
    )
    too_long = bytes(207)  # with two tags past a channel packet's 231 bytes: a direct message to B
    await link_a.send_acknowledging(ID_B, too_long, (ID_C,))
    assert await until(lambda: len(events[NUM_B].frames) == 2)
    assert events[NUM_B].frames[1] == (ID_A, too_long) and len(events[NUM_C].overheard) == 1


async def test_link_waits_for_a_radio_that_is_not_there_yet(field: Field) -> None:
    server = DeviceServer(EmulatedRadio(field.medium, NUM_A))
    field.servers[NUM_A] = server
    server.start()
    port = server.port
    server.stop()
    config = LoRaLinkConfig(
        roster=ROSTER, port=port, reconnect_min_s=0.1, reconnect_max_s=0.2, connect_timeout_s=2
    )
    link = make_link(NUM_A, config)
    field.links.append(link)
    await link.start(Recorder())
    assert not link.state().connected and "cannot connect" in link.state().last_error
    with pytest.raises(LinkError, match="not connected"):
        await link.send(ID_B, b"x")
    restarted = DeviceServer(server.radio, port=port)
    field.servers[NUM_A] = restarted
    restarted.start()
    assert await until(lambda: link.state().connected, timeout=10)


async def test_serial_transport_through_a_pty(field: Field) -> None:
    from field.lora_emulator.serial_pty import PtyBridge

    field.radio(NUM_A, 0)
    field.radio(NUM_B, 500)
    bridge = PtyBridge("127.0.0.1", field.servers[NUM_A].port)
    path = bridge.start()
    try:
        config = LoRaLinkConfig(roster=ROSTER, transport="serial", address=path, ack_timeout_s=5.0)
        link_a = make_link(NUM_A, config)
        field.links.append(link_a)
        events_b = Recorder()
        await link_a.start(Recorder())
        await field.link(NUM_B, events_b)
        assert link_a.state().connected and link_a.state().my_num == NUM_A
        await link_a.send(ID_B, b"over serial")
        assert await until(lambda: events_b.frames == [(ID_A, b"over serial")])
        await link_a.stop()
    finally:
        bridge.stop()


async def test_spent_duty_cycle_budget_refuses_frames_before_the_radio(field: Field) -> None:
    field.radio(NUM_A, 0, region="UA_868")  # the link refuses a radio on another region than its own
    field.radio(NUM_B, 500, region="UA_868")
    link_a = await field.link(NUM_A, Recorder(), region="UA_868")  # 1 %: 36 s of airtime per hour
    for _ in range(17):  # 17 full LongFast frames (207 bytes and the tag): 36.7 s
        await link_a.send(ID_B, bytes(207))
    with pytest.raises(LoRaNakError) as refused:
        await link_a.send(ID_B, bytes(207))
    assert refused.value.reason == "DUTY_CYCLE_LIMIT"
    assert link_a.state().naks == {"DUTY_CYCLE_LIMIT": 1}
