"""NG112 ingress under hostile conditions, on loopback sockets: digest authentication of enrolled
buildings, unauthenticated alarms accepted but capped, stream connection limits and timeouts, the
linear stream framer and CR/LF never written into a header."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ng112.alarmbook import AlarmBook, SendAck
from ng112.buildings import Building, BuildingRegistry
from ng112.command_post import alarm_body
from ng112.digest import (
    Credentials,
    DigestAuthenticator,
    DigestError,
    Verdict,
    digest_response,
    parse_authorization,
)
from ng112.errors import SipHeaderError
from ng112.gateway import Alarm, Gateway, GatewayConfig, node_accept
from ng112.record import AlarmRecord, decode_record
from ng112.sip import Headers, SipRequest, SipResponse, StreamFramer, parse_message
from ng112.store import AlarmStore
from relay.bundle import Priority

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "ng112"
WIRE = (CORPUS / "sip" / "synthetic-sipp-fire-alarm-message.sip").read_bytes()
SECRET = "correct horse battery staple"
TOWER = Building(
    0x0A1B2C3D,
    "sip:fire-panel-17@building.example.org",
    "Tower",
    digest_user="fire-panel-17",
    digest_secret=SECRET,
)


def _variant(n: int, sender: str = "fire-panel-17", authorization: str = "", cseq: int = 1) -> bytes:
    """The corpus wire capture with its own Call-ID, branch, CAP identifier and optional credentials."""
    head, body = WIRE.split(b"\r\n\r\n", 1)
    body = body.replace(b"FP17-2026-000123", f"FP17-{n}".encode())
    body = body.replace(b"fire-panel-17@", f"{sender}@".encode())
    head = head.replace(b"1-16807@127.0.0.1", f"{n}-t@127.0.0.1".encode())
    head = head.replace(b"z9hG4bK-16807-1-0", f"z9hG4bK-{n}-{cseq}".encode())
    head = head.replace(b"fire-panel-17@", f"{sender}@".encode())
    head = head.replace(b"CSeq: 1 MESSAGE", f"CSeq: {cseq} MESSAGE".encode())
    head = head.replace(b"Content-Length:  2287", f"Content-Length: {len(body)}".encode())
    if authorization:
        head += f"\r\nAuthorization: {authorization}".encode()
    return head + b"\r\n\r\n" + body


def _authorization(challenge: str, secret: str, cnonce: str = "0a4f113b") -> str:
    """What a panel answers to ``challenge`` (computed independently of ng112.digest)."""
    params = dict(
        (k.strip(), v.strip().strip('"'))
        for k, v in (p.split("=", 1) for p in challenge.removeprefix("Digest ").split(", "))
    )
    h = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5}[params["algorithm"]]
    ha1 = h(f"fire-panel-17:{params['realm']}:{secret}".encode()).hexdigest()
    ha2 = h(b"MESSAGE:urn:service:sos").hexdigest()
    response = h(f"{ha1}:{params['nonce']}:00000001:{cnonce}:auth:{ha2}".encode()).hexdigest()
    return (
        f'Digest username="fire-panel-17", realm="{params["realm"]}", nonce="{params["nonce"]}", '
        f'uri="urn:service:sos", response="{response}", algorithm={params["algorithm"]}, '
        f'qop=auth, nc=00000001, cnonce="{cnonce}"'
    )


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


async def _exchange(gateway: Gateway, wire: bytes, source: str = "127.0.0.1") -> SipResponse:
    assert gateway.udp_address
    transport, client = await asyncio.get_running_loop().create_datagram_endpoint(
        UdpClient, local_addr=(source, 0), remote_addr=gateway.udp_address
    )
    try:
        transport.sendto(wire)
        return await asyncio.wait_for(client.responses.get(), 3)
    finally:
        transport.close()


async def test_enrolled_building_is_challenged_then_authenticated_with_sha256(store: AlarmStore) -> None:
    alarms: list[Alarm] = []

    async def accept(alarm: Alarm) -> None:
        alarms.append(alarm)

    gateway = Gateway(GatewayConfig(udp_port=0, tcp_port=0), store, BuildingRegistry([TOWER]), accept)
    await gateway.start()
    try:
        challenged = await _exchange(gateway, _variant(1))
        offered = challenged.headers.get_all("www-authenticate")
        authorization = _authorization(offered[0], SECRET)
        accepted = await _exchange(gateway, _variant(1, authorization=authorization, cseq=2))
    finally:
        await gateway.stop()
    assert challenged.status == 401 and "algorithm=SHA-256" in offered[0] and "algorithm=MD5" in offered[1]
    assert accepted.status == 200 and await store.count() == 1
    assert alarms[0].authenticated and not alarms[0].lowered and alarms[0].record.key_id == TOWER.key_id
    assert not alarms[0].record.unauthenticated
    assert gateway.counts["challenged"] == 1 and gateway.counts["authentication_failed"] == 0


async def test_wrong_secret_is_still_accepted_but_flagged_unauthenticated(store: AlarmStore) -> None:
    alarms: list[Alarm] = []

    async def accept(alarm: Alarm) -> None:
        alarms.append(alarm)

    gateway = Gateway(GatewayConfig(udp_port=0, tcp_port=0), store, BuildingRegistry([TOWER]), accept)
    await gateway.start()
    try:
        challenge = (await _exchange(gateway, _variant(2))).headers.get_all("www-authenticate")[1]  # MD5
        response = await _exchange(
            gateway, _variant(2, authorization=_authorization(challenge, "guess"), cseq=2)
        )
    finally:
        await gateway.stop()
    assert response.status == 200 and len(alarms) == 1 and not alarms[0].authenticated
    assert gateway.counts["authentication_failed"] == 1
    flagged = decode_record(alarms[0].record.encode())  # the flag travels in the compact record
    assert flagged.unauthenticated and flagged == alarms[0].record
    (view,) = _book(flagged)
    body = alarm_body(view, BuildingRegistry([TOWER]), None, flagged.sent)
    assert body["authenticated"] is False and body["summary"].startswith("[UNAUTHENTICATED] ")


def _book(record: AlarmRecord) -> list[Any]:
    book = AlarmBook()
    book.apply(record, now=record.sent)
    return list(book.alarms.values())


def test_digest_stale_nonce_foreign_nonce_and_parsing() -> None:
    authenticator = DigestAuthenticator("r", key=b"k" * 32, nonce_lifetime_s=300)
    nonce = authenticator.challenges(1000.0)[0][1].split('nonce="')[1].split('"')[0]
    credentials = Credentials("u", "r", nonce, "urn:service:sos", "", "SHA-256", "auth", "00000001", "c")
    good = Credentials(**{**_fields(credentials), "response": digest_response(credentials, "MESSAGE", "s")})
    assert authenticator.verify(good, "MESSAGE", "s", 1200.0) is Verdict.OK
    assert authenticator.verify(good, "MESSAGE", "s", 1400.0) is Verdict.STALE
    assert authenticator.verify(good, "MESSAGE", "wrong", 1200.0) is Verdict.BAD
    other = DigestAuthenticator("r", key=b"x" * 32)  # a nonce this gateway never issued
    assert other.verify(good, "MESSAGE", "s", 1200.0) is Verdict.BAD
    parsed = parse_authorization(
        'Digest username="u", realm="r", nonce="1.ab", uri="sip:x", response="AB", algorithm=MD5'
    )
    assert parsed.response == "ab" and parsed.algorithm == "MD5" and parsed.qop == ""
    with pytest.raises(DigestError, match="SHA-1"):
        parse_authorization(
            'Digest username="u", realm="r", nonce="n", uri="x", response="a", algorithm=SHA-1'
        )


def _fields(credentials: Credentials) -> dict[str, Any]:
    return {name: getattr(credentials, name) for name in Credentials.__slots__}


async def test_unauthenticated_alarms_over_the_flash_budget_go_on_at_immediate(store: AlarmStore) -> None:
    sent: list[Priority] = []

    class Node:
        async def send(self, destination: Any, payload: bytes, **kwargs: Any) -> Any:
            sent.append(kwargs["priority"])

    accept = node_accept(Node(), None, Priority.FLASH)  # type: ignore[arg-type]
    config = GatewayConfig(udp_port=0, tcp_port=0, flash_burst=2, flash_per_s=0.001)
    gateway = Gateway(config, store, accept=accept)
    await gateway.start()
    try:
        statuses = [(await _exchange(gateway, _variant(n, f"spoof-{n}"))).status for n in range(4)]
    finally:
        await gateway.stop()
    assert statuses == [200, 200, 200, 200] and await store.count() == 4  # never dropped
    assert sent == [Priority.FLASH, Priority.FLASH, Priority.IMMEDIATE, Priority.IMMEDIATE]
    assert gateway.counts["lowered_to_immediate"] == 2 and gateway.counts["unauthenticated_accepted"] == 4


async def _tcp_alarm(gateway: Gateway, n: int, source: str = "127.0.0.1") -> int:
    assert gateway.tcp_address
    reader, writer = await asyncio.open_connection(*gateway.tcp_address, local_addr=(source, 0))
    try:
        writer.write(_variant(n, f"tcp-panel-{n}"))
        framer = StreamFramer()
        async with asyncio.timeout(5):
            while not (messages := framer.feed(await reader.read(4096))):
                pass
    finally:
        writer.close()
    response = parse_message(messages[0], datagram=False)
    assert isinstance(response, SipResponse)
    return response.status


async def _idle(gateway: Gateway, count: int, source: str) -> list[asyncio.StreamWriter]:
    assert gateway.tcp_address
    writers = []
    for _ in range(count):
        _, writer = await asyncio.open_connection(*gateway.tcp_address, local_addr=(source, 0))
        writers.append(writer)
    await asyncio.sleep(0.2)
    return writers


async def test_connection_caps_per_address_and_longest_idle_closed_for_room(store: AlarmStore) -> None:
    config = GatewayConfig(udp_port=0, tcp_port=0, max_connections=8, max_connections_per_address=4)
    gateway = Gateway(config, store)
    await gateway.start()
    writers: list[asyncio.StreamWriter] = []
    try:
        writers += await _idle(gateway, 6, "127.0.0.2")  # only 4 stay
        writers += await _idle(gateway, 4, "127.0.0.3")
        writers += await _idle(gateway, 4, "127.0.0.4")  # the table is full: the longest idle go
        status = await _tcp_alarm(gateway, 1)  # a panel still gets in
    finally:
        for writer in writers:
            writer.close()
        await gateway.stop()
    assert status == 200
    assert gateway.counts["connections_refused_per_address"] == 2
    assert gateway.counts["connections_closed_for_room"] >= 4


async def test_idle_and_message_timeouts_close_streams(store: AlarmStore) -> None:
    config = GatewayConfig(udp_port=0, tcp_port=0, idle_timeout_s=0.3, message_timeout_s=0.3)
    gateway = Gateway(config, store)
    await gateway.start()
    try:
        assert gateway.tcp_address
        idle_reader, idle = await asyncio.open_connection(*gateway.tcp_address)
        slow_reader, slow = await asyncio.open_connection(*gateway.tcp_address)
        for byte in _variant(3)[:10]:  # a message begun, dribbled, never finished
            slow.write(bytes([byte]))
            await asyncio.sleep(0.01)
        async with asyncio.timeout(3):
            assert await idle_reader.read() == b"" and await slow_reader.read() == b""
        idle.close()
        slow.close()
        status = await _tcp_alarm(gateway, 4)
    finally:
        await gateway.stop()
    assert status == 200
    assert gateway.counts["idle_timeout"] >= 1 and gateway.counts["message_timeout"] == 1


def test_stream_framer_examines_a_dribbled_60_kb_header_in_linear_time() -> None:
    lines = b"".join(b"X-Padding-%02d: %s\r\n" % (i, b"p" * 700) for i in range(90))  # ~64 kB
    wire = b"MESSAGE urn:service:sos SIP/2.0\r\n" + lines + b"Content-Length: 2\r\n\r\nok"
    assert len(wire) > 60_000
    framer = StreamFramer()
    messages = []
    for i in range(len(wire)):
        messages += framer.feed(wire[i : i + 1])
    assert messages == [wire]
    assert framer.examined <= 5 * len(wire)  # the old framer rescanned the whole buffer per byte: ~n²/2


def test_cr_lf_is_never_written_into_a_header() -> None:
    hostile = "sip:panel@example.org>\r\nX-Injected: yes\r\nTo: <sip:victim@example.org"
    request = SipRequest("MESSAGE", "sip:p@127.0.0.1", Headers((("to", f"<{hostile}>"),)))
    with pytest.raises(SipHeaderError, match="CR, LF or NUL"):
        request.to_bytes()
    with pytest.raises(SipHeaderError):
        SipRequest("MESSAGE", "sip:p@h\r\nX: y", Headers(())).to_bytes()


async def test_a_hostile_cap_sender_cannot_inject_headers_into_the_ack(
    store: AlarmStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A CAP <sender> with CR/LF (XML character references) is stored as sent; the Ack that would copy
    it into a header is never written, and the panel receives nothing injected."""
    received: list[bytes] = []

    class Panel(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            received.append(data)

    loop = asyncio.get_running_loop()
    panel, _ = await loop.create_datagram_endpoint(Panel, local_addr=("127.0.0.1", 0))
    port = panel.get_extra_info("sockname")[1]
    hostile = "sip:x@evil.example&#13;&#10;X-Injected: yes"
    alarms: list[Alarm] = []

    async def accept(alarm: Alarm) -> None:
        alarms.append(alarm)

    building = Building(0x0B0B0B0B, TOWER.sender, "Depot", panel=f"sip:p@127.0.0.1:{port}")  # no secret
    gateway = Gateway(GatewayConfig(udp_port=0, tcp_port=0), store, BuildingRegistry([building]), accept)
    await gateway.start()
    try:
        wire = _variant(9)
        wire = wire.replace(
            b"<sender>sip:fire-panel-17@building.example.org</sender>", f"<sender>{hostile}</sender>".encode()
        )
        head, body = wire.split(b"\r\n\r\n", 1)
        head = head.split(b"Content-Length:")[0] + f"Content-Length: {len(body)}".encode()
        assert (await _exchange(gateway, head + b"\r\n\r\n" + body)).status == 200
        stored = await store.get(alarms[0].record.key_id, alarms[0].record.seq)
        assert stored is not None and "\n" in stored.cap_sender  # the hostile sender, as sent
        (receipt,) = [e.ack for e in AlarmBook().apply(alarms[0].record, 0) if isinstance(e, SendAck)]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("ng112.gateway.ACK_TIMEOUT_S", 0.2)
            assert await gateway.deliver_ack(receipt) is False
    finally:
        panel.close()
        await gateway.stop()
    assert not any(b"X-Injected" in data for data in received)
    assert "CR, LF or NUL" in caplog.text  # refused by the writer, not lost on the way
