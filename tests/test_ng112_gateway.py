"""The NG112 gateway on loopback sockets: durability before 200, retransmissions, overload, rate
limits, hostile input storing nothing, TLS, and the HTTP ingress."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ng112.alarmbook import AlarmBook, SendAck
from ng112.buildings import Building, BuildingRegistry
from ng112.gateway import Alarm, Gateway, GatewayConfig
from ng112.http_ingress import http_ingress_app
from ng112.sip import SipResponse, StreamFramer, build_response, parse_message
from ng112.store import AlarmStore

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "ng112"
WIRE = (CORPUS / "sip" / "synthetic-sipp-fire-alarm-message.sip").read_bytes()
XXE = (CORPUS / "cap" / "google-xxe-attack.cap").read_bytes()
CAP = WIRE[WIRE.index(b"<?xml") : WIRE.index(b"</alert>") + 8]


def _variant(n: int, sender: str = "fire-panel-17") -> bytes:
    """The corpus wire capture with its own Call-ID, branch and CAP identifier."""
    body = WIRE.split(b"\r\n\r\n", 1)[1].replace(b"FP17-2026-000123", f"FP17-{n}".encode())
    head = WIRE.split(b"\r\n\r\n", 1)[0].replace(b"1-16807@127.0.0.1", f"{n}-t@127.0.0.1".encode())
    head = head.replace(b"z9hG4bK-16807-1-0", f"z9hG4bK-{n}".encode())
    head = head.replace(b"fire-panel-17@", f"{sender}@".encode())
    head = head.replace(b"Content-Length:  2287", f"Content-Length: {len(body)}".encode())
    return head + b"\r\n\r\n" + body


class UdpClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.responses: asyncio.Queue[SipResponse] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = parse_message(data)
        assert isinstance(message, SipResponse)
        self.responses.put_nowait(message)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AlarmStore]:
    alarm_store = await AlarmStore.open(tmp_path / "gw.sqlite")
    yield alarm_store
    await alarm_store.close()


async def _udp(gateway: Gateway) -> tuple[asyncio.DatagramTransport, UdpClient]:
    assert gateway.udp_address
    transport, client = await asyncio.get_running_loop().create_datagram_endpoint(
        UdpClient, remote_addr=gateway.udp_address
    )
    return transport, client


async def test_200_only_after_accept_and_retransmission_answered_once(store: AlarmStore) -> None:
    release = asyncio.Event()
    accepted: list[Alarm] = []

    async def accept(alarm: Alarm) -> None:
        await release.wait()
        accepted.append(alarm)

    gateway = Gateway(GatewayConfig(udp_port=0, tcp_port=0), store, accept=accept)
    await gateway.start()
    transport, client = await _udp(gateway)
    try:
        transport.sendto(_variant(1))
        await asyncio.sleep(0.2)
        assert client.responses.empty()  # not durable yet: no answer
        transport.sendto(_variant(1))  # retransmission while pending: absorbed
        release.set()
        first = await asyncio.wait_for(client.responses.get(), 2)
        transport.sendto(_variant(1))  # retransmission after the answer: same answer
        second = await asyncio.wait_for(client.responses.get(), 2)
    finally:
        transport.close()
        await gateway.stop()
    assert first.status == 200 and second.to_bytes() == first.to_bytes()
    assert len(accepted) == 1 and await store.count() == 1


async def test_failed_handoff_is_500_and_retry_succeeds(store: AlarmStore) -> None:
    attempts: list[int] = []

    async def flaky(alarm: Alarm) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("disk full")

    gateway = Gateway(GatewayConfig(udp_port=0, tcp_port=0), store, accept=flaky)
    await gateway.start()
    transport, client = await _udp(gateway)
    try:
        transport.sendto(_variant(2))
        failed = await asyncio.wait_for(client.responses.get(), 2)
        transport.sendto(_variant(2).replace(b"z9hG4bK-2", b"z9hG4bK-2b"))  # the panel retries
        retried = await asyncio.wait_for(client.responses.get(), 2)
    finally:
        transport.close()
        await gateway.stop()
    assert failed.status == 500 and failed.headers.get("retry-after") == "5"
    assert retried.status == 200 and len(attempts) == 2 and await store.count() == 1


async def test_rate_limit_by_source_address_overload_and_hostile_input(store: AlarmStore) -> None:
    block = asyncio.Event()

    async def slow(alarm: Alarm) -> None:
        await block.wait()

    config = GatewayConfig(udp_port=0, tcp_port=0, rate_burst=4, rate_per_s=0.01, max_in_flight=1)
    gateway = Gateway(config, store, accept=slow)
    await gateway.start()
    transport, client = await _udp(gateway)
    try:
        transport.sendto(_variant(10, "panel-a"))  # occupies the only in-flight slot
        await asyncio.sleep(0.1)
        transport.sendto(_variant(11, "panel-b"))
        overloaded = await asyncio.wait_for(client.responses.get(), 2)
        block.set()
        assert (await asyncio.wait_for(client.responses.get(), 2)).status == 200
        for n, sender in ((12, "panel-c"), (13, "panel-d")):
            transport.sendto(_variant(n, sender))
            assert (await asyncio.wait_for(client.responses.get(), 2)).status == 200
        transport.sendto(_variant(14, "panel-e"))  # a fresh From does not buy a fresh budget
        limited = await asyncio.wait_for(client.responses.get(), 2)
        hostile = _variant(15, "panel-c")
        start = hostile.index(b"<?xml version")
        end = hostile.index(b"</alert>") + 8
        body = hostile.split(b"\r\n\r\n", 1)[1]
        body = body.replace(hostile[start:end], XXE)
        head = hostile.split(b"\r\n\r\n", 1)[0].split(b"Content-Length:")[0]
        other, other_client = await asyncio.get_running_loop().create_datagram_endpoint(
            UdpClient, local_addr=("127.0.0.2", 0), remote_addr=gateway.udp_address
        )  # another source address has its own budget
        other.sendto(head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        refused = await asyncio.wait_for(other_client.responses.get(), 2)
        other.close()
    finally:
        transport.close()
        await gateway.stop()
    assert overloaded.status == 500 and "overloaded" in overloaded.reason
    assert limited.status == 500 and "rate limit" in limited.reason and limited.headers.get("retry-after")
    assert refused.status == 425 and (refused.headers.get("alertmsg-error") or "").startswith("103")
    assert await store.count() == 3  # 10, 12, 13: nothing from the overload, the limit or the XXE
    assert gateway.counts["rate_limited"] == 1 and gateway.counts["overloaded"] == 1


def _tls_contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client = ssl.create_default_context(cafile=tmp_path / "cert.pem")
    return server, client


async def test_tls_message(store: AlarmStore, tmp_path: Path) -> None:
    server_ctx, client_ctx = _tls_contexts(tmp_path)
    config = GatewayConfig(udp_port=0, tcp_port=0, tls_port=0, tls_context=server_ctx)
    gateway = Gateway(config, store)
    await gateway.start()
    try:
        assert gateway.tls_address
        reader, writer = await asyncio.open_connection(
            *gateway.tls_address, ssl=client_ctx, server_hostname="localhost"
        )
        writer.write(_variant(20).replace(b"SIP/2.0/TCP", b"SIP/2.0/TLS"))
        framer = StreamFramer()
        messages: list[bytes] = []
        async with asyncio.timeout(3):
            while not messages:
                messages = framer.feed(await reader.read(4096))
        writer.close()
    finally:
        await gateway.stop()
    response = parse_message(messages[0], datagram=False)
    assert isinstance(response, SipResponse) and response.status == 200
    assert await store.count() == 1


async def test_http_ingress_same_semantics(store: AlarmStore) -> None:
    gateway = Gateway(GatewayConfig(udp_port=0, tcp_port=0), store)
    app = http_ingress_app(gateway)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
    ) as client:
        headers = {
            "content-type": "application/cap+xml",
            "x-panel-sender": "sip:fire-panel-17@building.example.org",
        }
        ok = await client.post("/alarms", content=CAP, headers=headers)
        hostile = await client.post("/alarms", content=XXE, headers=headers)
        unsupported = await client.post("/alarms", content=b"x", headers={"content-type": "image/png"})
    assert ok.status_code == 200 and ok.json()["status"] == "accepted"
    assert hostile.status_code == 422 and hostile.headers["alertmsg-error"].startswith("103")
    assert unsupported.status_code == 415 and "application/cap+xml" in unsupported.headers["accept"]
    assert await store.count() == 1


async def test_undelivered_ack_is_kept_and_redelivered(store: AlarmStore) -> None:
    listener = UdpClient()
    loop = asyncio.get_running_loop()
    panel_transport, _ = await loop.create_datagram_endpoint(lambda: listener, local_addr=("127.0.0.1", 0))
    port = panel_transport.get_extra_info("sockname")[1]
    panel_transport.close()  # the panel is offline at first
    building = Building(7, "sip:fire-panel-17@building.example.org", "Tower", panel=f"sip:p@127.0.0.1:{port}")
    alarms: list[Alarm] = []

    async def accept(alarm: Alarm) -> None:
        alarms.append(alarm)

    gateway = Gateway(GatewayConfig(udp_port=0, tcp_port=0), store, BuildingRegistry([building]), accept)
    await gateway.start()
    transport, client = await _udp(gateway)
    try:
        transport.sendto(_variant(30))
        assert (await asyncio.wait_for(client.responses.get(), 2)).status == 200
        (receipt,) = [e.ack for e in AlarmBook().apply(alarms[0].record, 0) if isinstance(e, SendAck)]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("ng112.gateway.ACK_TIMEOUT_S", 0.2)
            assert await gateway.deliver_ack(receipt) is False
        assert len(await store.undelivered_acks()) == 1

        class Panel(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                request = parse_message(data)
                assert not isinstance(request, SipResponse)
                self.transport.sendto(build_response(request, 200, "OK").to_bytes(), addr)  # type: ignore[attr-defined]

        panel, _ = await loop.create_datagram_endpoint(Panel, local_addr=("127.0.0.1", port))
        try:
            assert await gateway.redeliver_acks() == 1
        finally:
            panel.close()
        assert await store.undelivered_acks() == []
    finally:
        transport.close()
        await gateway.stop()
