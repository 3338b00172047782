"""The NG112 SIP UAS: building panels send RFC 8876 MESSAGEs over UDP or TCP (or TLS), we answer.

A thin asyncio adapter around the pure parts (:mod:`ng112.sip`, :mod:`ng112.request`,
:mod:`ng112.canonical`). For each MESSAGE:

1. per-sender rate limit and in-flight cap: 500 + Retry-After when exceeded (RFC 8876 §5.2, §7);
2. :func:`ng112.request.evaluate` decides; rejections are answered at once;
3. an accepted alarm becomes a compact record, is written to the :class:`AlarmStore` and handed to
   ``accept`` (the relay node's durable send, see :func:`node_accept`); only when both returned is
   the 200 sent. A failure there answers 500 + Retry-After, so the panel retries.

Retransmitted requests (same Call-ID, CSeq and Via branch) get the cached final response. Ack records
from the command post go back to the panel with :meth:`Gateway.deliver_ack` (:mod:`ng112.acks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from ng112.acks import ack_message, parse_sip_target
from ng112.buildings import BuildingRegistry
from ng112.canonical import record_from_request
from ng112.cap import format_datetime
from ng112.errors import SipParseError
from ng112.kinds import NG112_ALARM
from ng112.record import AlarmRecord, decode_record
from ng112.request import Decision, EmergencyRequest, IngressPolicy, evaluate
from ng112.sip import (
    SipRequest,
    SipResponse,
    StreamFramer,
    build_response,
    parse_message,
    parse_uri_and_params,
)
from ng112.store import AlarmStore, StoredAlarm
from relay.apps import Sender

log = logging.getLogger(__name__)
MAX_TCP_CONNECTIONS = 256
TRANSACTION_CACHE = 1024
ACK_TIMEOUT_S = 2.0
ACK_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Alarm:
    """An accepted alarm as handed to ``accept``: the record for the mesh plus what it came from."""

    record: AlarmRecord
    request: EmergencyRequest
    panel: str  # SIP URI where acknowledgements go
    received_at: float


Accept = Callable[[Alarm], Awaitable[None]]


def node_accept(node: Sender, destination: Any, priority: Any, lifetime_s: int = 24 * 3600) -> Accept:
    """An ``accept`` that hands the record to a relay node as an NG112 alarm bundle (kind 32, FLASH)."""

    async def accept(alarm: Alarm) -> None:
        await node.send(
            destination, alarm.record.encode(), kind=NG112_ALARM, priority=priority, lifetime=lifetime_s
        )

    return accept


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    host: str = "127.0.0.1"
    udp_port: int = 5060  # 0: any free port
    tcp_port: int = 5060
    tls_port: int | None = None
    tls_context: ssl.SSLContext | None = None
    gateway_uri: str = "sip:ng112-gateway@127.0.0.1"
    policy: IngressPolicy = field(default_factory=IngressPolicy)
    max_in_flight: int = 64
    rate_burst: int = 20  # requests per sender at once
    rate_per_s: float = 2.0  # sustained requests per sender
    retry_after_s: int = 5


class RateLimiter:
    """Token bucket per sender (sans I/O); remembers at most ``max_senders`` senders."""

    def __init__(self, burst: int, per_s: float, max_senders: int = 10_000) -> None:
        self._burst, self._per_s, self._max = burst, per_s, max_senders
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, sender: str, now: float) -> bool:
        tokens, last = self._buckets.pop(sender, (float(self._burst), now))
        tokens = min(float(self._burst), tokens + (now - last) * self._per_s)
        allowed = tokens >= 1.0
        self._buckets[sender] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return allowed


Reply = Callable[[bytes], None]


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        transport = self.transport
        assert transport is not None
        self.gateway.spawn(self.gateway.handle(data, addr, "udp", lambda out: transport.sendto(out, addr)))


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        store: AlarmStore,
        registry: BuildingRegistry | None = None,
        accept: Accept | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.registry = registry or BuildingRegistry()
        self.accept = accept
        self.clock = clock
        self.limiter = RateLimiter(config.rate_burst, config.rate_per_s)
        self.in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._transactions: OrderedDict[tuple[str, str, str], bytes | None] = OrderedDict()
        self._pending_acks: dict[str, asyncio.Future[int]] = {}
        self._udp: _Udp | None = None
        self._servers: list[asyncio.Server] = []
        self._tcp_peers: dict[tuple[str, int], asyncio.StreamWriter] = {}
        self.udp_address: tuple[str, int] | None = None
        self.tcp_address: tuple[str, int] | None = None
        self.tls_address: tuple[str, int] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Udp(self), local_addr=(self.config.host, self.config.udp_port)
        )
        self._udp = protocol
        self.udp_address = transport.get_extra_info("sockname")[:2]
        tcp = await asyncio.start_server(self._serve_stream, self.config.host, self.config.tcp_port)
        self._servers.append(tcp)
        self.tcp_address = tcp.sockets[0].getsockname()[:2]
        if self.config.tls_context is not None and self.config.tls_port is not None:
            tls = await asyncio.start_server(
                self._serve_stream, self.config.host, self.config.tls_port, ssl=self.config.tls_context
            )
            self._servers.append(tls)
            self.tls_address = tls.sockets[0].getsockname()[:2]

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for writer in list(self._tcp_peers.values()):
            writer.close()
        if self._udp and self._udp.transport:
            self._udp.transport.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()

    def spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- transports --------------------------------------------------------------------------
    async def _serve_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[:2]
        transport = "tls" if writer.get_extra_info("sslcontext") else "tcp"
        if len(self._tcp_peers) >= MAX_TCP_CONNECTIONS:
            writer.close()
            return
        self._tcp_peers[peer] = writer
        await self._read_stream(reader, writer, peer, transport)

    async def _read_stream(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: tuple[str, int],
        transport: str,
    ) -> None:
        framer = StreamFramer()
        try:
            while data := await reader.read(65536):
                for message in framer.feed(data):
                    await self.handle(message, peer, transport, writer.write)
        except (SipParseError, ConnectionError) as exc:
            log.info("closing %s connection from %s: %s", transport, peer, exc)
        finally:
            self._tcp_peers.pop(peer, None)
            writer.close()

    # -- requests ----------------------------------------------------------------------------
    async def handle(self, data: bytes, peer: tuple[str, int], transport: str, reply: Reply) -> None:
        """Handle one SIP message from ``peer``; ``reply`` sends bytes back on the same path."""
        try:
            message = parse_message(data, datagram=transport == "udp")
        except SipParseError as exc:
            log.info("unparseable SIP from %s: %s", peer, exc)
            return  # RFC 3261 §18.3: malformed requests without usable headers are dropped
        if isinstance(message, SipResponse):
            future = self._pending_acks.get(message.headers.get("call-id") or "")
            if future is not None and not future.done() and message.status >= 200:
                future.set_result(message.status)
            return
        if message.method == "ACK":
            return
        key = (message.headers.get("call-id") or "", message.headers.get("cseq") or "", _branch(message))
        if key in self._transactions:
            cached = self._transactions[key]
            if cached is not None:
                reply(cached)
            return
        self._transactions[key] = None
        while len(self._transactions) > TRANSACTION_CACHE:
            self._transactions.popitem(last=False)
        response = await self._respond(message, peer, transport)
        wire = response.to_bytes()
        self._transactions[key] = wire
        reply(wire)

    async def _respond(self, request: SipRequest, peer: tuple[str, int], transport: str) -> SipResponse:
        tag = hashlib.blake2b((request.headers.get("call-id") or "").encode(), digest_size=6).hexdigest()
        if request.method == "OPTIONS":
            return build_response(request, 200, "OK", (("Allow", "MESSAGE, OPTIONS"),), tag)
        sender, _ = parse_uri_and_params(request.headers.get("from") or "")
        status, reason, headers = await self.process(
            sender, lambda: evaluate(request, self.config.policy), peer, transport
        )
        return build_response(request, status, reason, headers, tag)

    async def process(
        self, sender: str, decide: Callable[[], Decision], peer: tuple[str, int], transport: str
    ) -> tuple[int, str, tuple[tuple[str, str], ...]]:
        """Rate limit, decide, make durable: (status, reason, headers) for SIP or the HTTP ingress."""
        retry = (("Retry-After", str(self.config.retry_after_s)),)
        now = self.clock()
        if not self.limiter.allow(sender.lower(), now):
            return 500, "Server Internal Error - rate limit", retry
        if self.in_flight >= self.config.max_in_flight:
            return 500, "Server Internal Error - overloaded", retry
        decision = decide()
        if not decision.accepted or decision.request is None:
            return decision.status, decision.reason, decision.headers
        self.in_flight += 1
        try:
            await self._make_durable(decision.request, peer, transport, now)
        except Exception as exc:  # any failure to make it durable: the panel must retry
            log.error("alarm from %s could not be made durable: %s", sender, exc)
            return 500, "Server Internal Error - alarm not stored", retry
        finally:
            self.in_flight -= 1
        return 200, "OK", decision.headers

    async def _make_durable(
        self, request: EmergencyRequest, peer: tuple[str, int], transport: str, now: float
    ) -> None:
        key_id = self.registry.key_for(request.sender_uri)
        record = record_from_request(request, key_id, now)
        building = self.registry.by_key(key_id)
        user = request.sender_uri.split(":", 1)[-1].split("@", 1)[0] or "panel"
        panel = (
            building.panel
            if building and building.panel
            else f"sip:{user}@{peer[0]}:{peer[1]};transport={transport}"
        )
        cap = request.cap
        stored = StoredAlarm(
            record,
            cap.sender if cap else request.sender_uri,
            cap.identifier if cap else request.call_id,
            format_datetime(cap.sent) if cap else format_datetime(record.sent_datetime),
            panel,
            request.cap_xml,
            now,
        )
        new = await self.store.put(stored)
        if new and self.accept is not None:
            try:
                await self.accept(Alarm(record, request, panel, now))
            except BaseException:
                await self.store.forget(record.key_id, record.seq)
                raise

    # -- acknowledgements back to the panel ------------------------------------------------------
    async def deliver_ack(self, ack: AlarmRecord) -> bool:
        """Send the CAP Ack for ``ack`` to the panel; True once the panel answered 2xx."""
        if ack.reference is None:
            raise ValueError("an Ack record needs a reference to the alarm")
        alarm = await self.store.get(*ack.reference)
        if alarm is None:
            log.warning("Ack for unknown alarm %08x-%d", *ack.reference)
            return False
        await self.store.put_ack(ack)
        target = parse_sip_target(alarm.panel)
        for _ in range(ACK_ATTEMPTS):
            status = await self._send_request(target, ack, alarm)
            if status is not None and 200 <= status < 300:
                await self.store.mark_ack_delivered(ack)
                return True
        return False

    async def redeliver_acks(self) -> int:
        """Try again every Ack the panel has not confirmed yet (call it periodically); returns how many
        were delivered now."""
        delivered = 0
        for raw in await self.store.undelivered_acks():
            delivered += await self.deliver_ack(decode_record(raw))
        return delivered

    async def _send_request(self, target: Any, ack: AlarmRecord, alarm: StoredAlarm) -> int | None:
        writer = self._tcp_peers.get((target.host, target.port)) if target.transport == "tcp" else None
        if target.transport == "tcp" and writer is None:
            try:
                reader, new_writer = await asyncio.wait_for(
                    asyncio.open_connection(target.host, target.port), ACK_TIMEOUT_S
                )
            except (OSError, TimeoutError):
                return None
            self._tcp_peers[(target.host, target.port)] = new_writer
            self.spawn(self._read_stream(reader, new_writer, (target.host, target.port), "tcp"))
            writer = new_writer
        local = self.udp_address if writer is None else writer.get_extra_info("sockname")[:2]
        assert local is not None
        message = ack_message(ack, alarm, self.config.gateway_uri, f"{local[0]}:{local[1]}")
        call_id = message.headers.get("call-id") or ""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending_acks[call_id] = future
        try:
            if writer is not None:
                writer.write(message.to_bytes())
            elif self._udp and self._udp.transport:
                self._udp.transport.sendto(message.to_bytes(), (target.host, target.port))
            return await asyncio.wait_for(future, ACK_TIMEOUT_S)
        except (TimeoutError, OSError):
            return None
        finally:
            self._pending_acks.pop(call_id, None)


def _branch(request: SipRequest) -> str:
    via = request.headers.get("via") or ""
    for param in via.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "branch":
            return value.strip()
    return ""


@contextlib.asynccontextmanager
async def running(gateway: Gateway) -> Any:
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()
