"""The emulated Meshtastic devices, driven by the real ``meshtastic`` library over TCP on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import meshtastic.tcp_interface
import pytest
from pubsub import pub

from field.lora_emulator.device import DeviceServer
from field.lora_emulator.medium import LoRaMedium
from field.lora_emulator.radio import EmulatedRadio

PORT = 300  # a private application port (256-511)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


class Catch:
    """A pubsub listener kept by strong reference, filtered to one interface."""

    def __init__(self, interface: Any) -> None:
        self.interface = interface
        self.packets: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, packet: dict[str, Any], interface: Any) -> None:
        if interface is self.interface:
            with self.lock:
                self.packets.append(packet)


class Field:
    def __init__(self, medium: LoRaMedium) -> None:
        self.medium = medium
        self.servers: list[DeviceServer] = []
        self.interfaces: list[Any] = []
        self.listeners: list[tuple[Catch, str]] = []

    def radio(self, num: int, position: tuple[float, float], **kw: Any) -> EmulatedRadio:
        return EmulatedRadio(self.medium, num, position=position, seed=7, **kw)

    def connect(self, radio: EmulatedRadio) -> tuple[DeviceServer, Any]:
        server = DeviceServer(radio)
        self.servers.append(server)
        port = server.start()
        interface = meshtastic.tcp_interface.TCPInterface(hostname="127.0.0.1", portNumber=port, timeout=10)
        self.interfaces.append(interface)
        return server, interface

    def listen(self, interface: Any, topic: str) -> Catch:
        catch = Catch(interface)
        pub.subscribe(catch, topic)
        self.listeners.append((catch, topic))
        return catch

    def close(self) -> None:
        for catch, topic in self.listeners:
            pub.unsubscribe(catch, topic)
        for interface in self.interfaces:
            interface.close()
        for server in self.servers:
            server.stop()
        self.medium.close()


@pytest.fixture
def field() -> Iterator[Field]:
    made = Field(LoRaMedium("LONG_FAST", seed=3, speedup=50))
    yield made
    made.close()


def routing_reason(packet: dict[str, Any]) -> str:
    return str(packet["decoded"]["routing"].get("errorReason", "NONE"))


def test_library_connects_and_completes_config(field: Field) -> None:
    a = field.radio(0xA1, (0, 0), hop_limit=3)
    field.radio(0xB2, (500, 0))
    _, iface = field.connect(a)
    iface.waitForConfig()
    assert iface.isConnected.is_set()
    assert iface.myInfo.my_node_num == 0xA1
    assert set(iface.nodes) == {"!000000a1", "!000000b2"}
    assert iface.localNode.localConfig.lora.hop_limit == 3
    assert len(iface.localNode.channels) == 8


def test_private_port_data_reaches_the_other_library_client_and_is_acked(field: Field) -> None:
    a = field.radio(0xA1, (0, 0))
    b = field.radio(0xB2, (500, 0))
    _, ia = field.connect(a)
    _, ib = field.connect(b)
    received = field.listen(ib, f"meshtastic.receive.data.{PORT}")
    acks: list[dict[str, Any]] = []
    ia.sendData(
        b"hello",
        destinationId=b.num,
        portNum=PORT,
        wantAck=True,
        onResponse=acks.append,
        onResponseAckPermitted=True,
    )
    assert wait_for(lambda: bool(received.packets) and bool(acks))
    assert received.packets[0]["decoded"]["payload"] == b"hello"
    assert received.packets[0]["from"] == a.num
    assert acks[0]["from"] == b.num and routing_reason(acks[0]) == "NONE"


def test_219_bytes_are_acked_and_220_nakked_too_large(field: Field) -> None:
    a = field.radio(0xA1, (0, 0))
    b = field.radio(0xB2, (500, 0))
    _, ia = field.connect(a)
    answers: dict[int, dict[str, Any]] = {}
    for size in (219, 220):
        ia.sendData(
            b"x" * size,
            destinationId=b.num,
            portNum=PORT,
            wantAck=True,
            onResponse=lambda p, size=size: answers.__setitem__(size, p),
            onResponseAckPermitted=True,
        )
    assert wait_for(lambda: len(answers) == 2)
    assert routing_reason(answers[219]) == "NONE" and answers[219]["from"] == b.num
    assert routing_reason(answers[220]) == "TOO_LARGE" and answers[220]["from"] == a.num
    broadcast: list[dict[str, Any]] = []
    ia.sendData(b"y" * 232, portNum=PORT, wantAck=True, onResponse=broadcast.append)  # channel limit is 231
    assert wait_for(lambda: bool(broadcast))
    assert routing_reason(broadcast[0]) == "TOO_LARGE"


def test_text_messages_on_text_port(field: Field) -> None:
    a = field.radio(0xA1, (0, 0))
    b = field.radio(0xB2, (500, 0))
    _, ia = field.connect(a)
    _, ib = field.connect(b)
    texts = field.listen(ib, "meshtastic.receive.text")
    ia.sendText("Evacuate level 2", destinationId=b.num)
    assert wait_for(lambda: bool(texts.packets))
    assert texts.packets[0]["decoded"]["text"] == "Evacuate level 2"
    assert texts.packets[0]["decoded"]["portnum"] == "TEXT_MESSAGE_APP"


def test_hop_limited_flooding_over_two_hops(field: Field) -> None:
    a = field.radio(0xA1, (0, 0))
    field.radio(0xB2, (900, 0))
    c = field.radio(0xC3, (1800, 0), hop_limit=1)
    assert field.medium.quality(a.num, c.num).loss == 1.0  # the ends cannot hear each other
    _, ia = field.connect(a)
    received = field.listen(ia, f"meshtastic.receive.data.{PORT}")
    c.send_from_app(b"two hops", portnum=PORT, to=a.num)
    assert wait_for(lambda: bool(received.packets))
    packet = received.packets[0]
    assert packet["decoded"]["payload"] == b"two hops"
    assert packet["hopStart"] - packet.get("hopLimit", 0) == 1
    c.hop_limit = 0  # a zero-hop packet is heard by the middle radio only and never relayed
    c.send_from_app(b"zero hops", portnum=PORT, to=a.num)
    time.sleep(0.6)  # 30 simulated seconds: far longer than one frame and a rebroadcast delay
    assert [p["decoded"]["payload"] for p in received.packets] == [b"two hops"]


def test_max_retransmit_when_the_destination_is_out_of_range(field: Field) -> None:
    a = field.radio(0xA1, (0, 0))
    b = field.radio(0xB2, (50_000, 0))
    _, ia = field.connect(a)
    naks: list[dict[str, Any]] = []
    ia.sendData(b"anyone?", destinationId=b.num, portNum=PORT, wantAck=True, onResponse=naks.append)
    assert wait_for(lambda: bool(naks), timeout=15)
    assert routing_reason(naks[0]) == "MAX_RETRANSMIT"
    assert field.medium.stats.transmissions == 3


def test_duty_cycle_limit_is_nakked() -> None:
    field = Field(LoRaMedium("LONG_SLOW", seed=1, speedup=2000))
    try:
        a = field.radio(0xA1, (0, 0), region="UA_868")  # 1 % duty cycle: 36 s of airtime per hour
        _, ia = field.connect(a)
        naks: list[dict[str, Any]] = []
        for _ in range(6):  # ~8.5 s of airtime each
            ia.sendData(b"d" * 150, portNum=PORT, wantAck=True, onResponse=naks.append)
        assert wait_for(lambda: any(routing_reason(n) == "DUTY_CYCLE_LIMIT" for n in naks), timeout=15)
    finally:
        field.close()


def test_queue_status_answers_every_packet(field: Field) -> None:
    a = field.radio(0xA1, (0, 0))
    field.radio(0xB2, (500, 0))
    _, ia = field.connect(a)
    assert wait_for(lambda: ia.queueStatus is not None)  # the answer to the connect-time heartbeat
    sent = ia.sendData(b"q", destinationId=0xB2, portNum=PORT)
    assert wait_for(lambda: ia.queueStatus.mesh_packet_id == sent.id)
    assert ia.queueStatus.maxlen == 16 and ia.queueStatus.res == 0


def test_library_reconnects_after_clean_drop_and_gets_the_backlog(field: Field) -> None:
    a = field.radio(0xA1, (0, 0))
    b = field.radio(0xB2, (500, 0))
    server, ia = field.connect(a)
    received = field.listen(ia, f"meshtastic.receive.data.{PORT}")
    server.drop_clients()
    b.send_from_app(b"while you were away", portnum=PORT, to=a.num)
    assert wait_for(lambda: bool(received.packets), timeout=10)
    assert server.connections == 2
