"""The NG112 SIP UAS: building panels send RFC 8876 MESSAGEs over UDP or TCP (or TLS), we answer.

A thin asyncio adapter around the pure parts (:mod:`ng112.sip`, :mod:`ng112.digest`,
:mod:`ng112.request`, :mod:`ng112.canonical`). For each MESSAGE:

1. a building enrolled with a digest secret must authenticate (401 challenge); a request with bad
   credentials is not refused but handled as unauthenticated (an emergency is never dropped);
2. budgets (:mod:`relay.ratelimit`): an authenticated building has its own bucket; unauthenticated
   requests are limited per source *address* (not the sender-chosen From) and by one global bucket,
   both answered 500 + Retry-After without storing (RFC 8876 §5.2); an in-flight cap likewise;
3. :func:`ng112.request.evaluate` decides; rejections are answered at once;
4. an accepted alarm becomes a compact record, is written to the :class:`AlarmStore` and handed to
   ``accept`` (the relay node's durable send, see :func:`node_accept`); only when both returned is
   the 200 sent. Unauthenticated alarms beyond a small FLASH budget are still accepted but go on at
   IMMEDIATE (``Alarm.lowered``), so a flood cannot take the FLASH airtime. A failure to store
   answers 500 + Retry-After, so the panel retries.

Stream connections are bounded: per address, in total (the longest idle is closed to make room),
by an idle timeout and by a deadline for each message once its first byte arrived.

Retransmitted requests (same Call-ID, CSeq and Via branch) get the cached final response. Ack records
from the command post go back to the panel with :meth:`Gateway.deliver_ack` (:mod:`ng112.acks`).
Every refusal is counted in :attr:`Gateway.counts` and logged (folded by :mod:`relay.logs`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, cast

from ng112.acks import ack_message, parse_sip_target
from ng112.buildings import Building, BuildingRegistry
from ng112.canonical import record_from_request
from ng112.cap import format_datetime
from ng112.digest import DigestAuthenticator, DigestError, Verdict, parse_authorization
from ng112.errors import SipHeaderError, SipParseError
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
from relay.bundle import Priority
from relay.ratelimit import RateLimiter

log = logging.getLogger(__name__)
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
    authenticated: bool = False  # the panel proved its building's digest secret
    lowered: bool = False  # unauthenticated and over the FLASH budget: sent on at IMMEDIATE


Accept = Callable[[Alarm], Awaitable[None]]


def node_accept(node: Sender, destination: Any, priority: Any, lifetime_s: int = 24 * 3600) -> Accept:
    """An ``accept`` that hands the record to a relay node as an NG112 alarm bundle (kind 32, FLASH;
    IMMEDIATE for an unauthenticated alarm over the FLASH budget)."""

    async def accept(alarm: Alarm) -> None:
        await node.send(
            destination,
            alarm.record.encode(),
            kind=NG112_ALARM,
            priority=Priority.IMMEDIATE if alarm.lowered else priority,
            lifetime=lifetime_s,
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
    rate_burst: int = 20  # requests at once per source address (unauthenticated) or per building
    rate_per_s: float = 2.0  # sustained, likewise
    global_burst: int = 100  # unauthenticated requests at once, all sources together
    global_per_s: float = 10.0
    flash_burst: int = 5  # unauthenticated alarms sent on as FLASH at once, all sources together;
    flash_per_s: float = 1 / 30  # beyond that they are accepted and sent on at IMMEDIATE
    retry_after_s: int = 5
    realm: str = "mesh112-ng112"
    digest_algorithms: tuple[str, ...] = ("SHA-256", "MD5")
    max_connections: int = 256  # TCP/TLS, all addresses
    max_connections_per_address: int = 16
    idle_timeout_s: float = 120.0  # a stream connection with nothing pending is closed after this
    message_timeout_s: float = 10.0  # a message begun must be complete within this


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


@dataclass
class _Stream:
    """One TCP/TLS connection: its framer and when it was last heard from."""

    writer: asyncio.StreamWriter
    framer: StreamFramer
    last_active: float


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
        self.digest = DigestAuthenticator(config.realm, algorithms=config.digest_algorithms)
        self.per_source: RateLimiter[str] = RateLimiter(config.rate_per_s, config.rate_burst)
        self.per_building: RateLimiter[int] = RateLimiter(config.rate_per_s, config.rate_burst)
        self.unauthenticated: RateLimiter[str] = RateLimiter(config.global_per_s, config.global_burst, 1)
        self.unauthenticated_flash: RateLimiter[str] = RateLimiter(config.flash_per_s, config.flash_burst, 1)
        self.counts: Counter[str] = Counter()  # refusals, challenges, lowered alarms: for operators
        self.responses: Counter[int] = Counter()  # SIP final responses sent, by status code
        self.in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._transactions: OrderedDict[tuple[str, str, str], bytes | None] = OrderedDict()
        self._pending_acks: dict[str, asyncio.Future[int]] = {}
        self._udp: _Udp | None = None
        self._servers: list[asyncio.Server] = []
        self._streams: dict[tuple[str, int], _Stream] = {}
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
                self._serve_stream,
                self.config.host,
                self.config.tls_port,
                ssl=self.config.tls_context,
                ssl_handshake_timeout=self.config.message_timeout_s,  # a stalled TLS handshake, too
            )
            self._servers.append(tls)
            self.tls_address = tls.sockets[0].getsockname()[:2]

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for stream in list(self._streams.values()):
            stream.writer.close()
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
        if not self._make_room(peer[0]):
            writer.close()
            return
        await self._read_stream(reader, writer, peer, transport)

    def _make_room(self, address: str) -> bool:
        """Whether a new connection from ``address`` may stay; closes the longest idle one when full."""
        same = sum(1 for peer in self._streams if peer[0] == address)
        if same >= self.config.max_connections_per_address:
            self.counts["connections_refused_per_address"] += 1
            log.warning(
                "NG112: refused a connection from %s: it holds %d already (%d refused so far)",
                address,
                same,
                self.counts["connections_refused_per_address"],
            )
            return False
        if len(self._streams) < self.config.max_connections:
            return True
        idle = [s for s in self._streams.values() if s.framer.pending == 0]
        if not idle:
            self.counts["connections_refused_full"] += 1
            log.warning("NG112: refused a connection from %s: all connections are mid-message", address)
            return False
        oldest = min(idle, key=lambda s: s.last_active)
        oldest.writer.close()
        self.counts["connections_closed_for_room"] += 1
        log.warning(
            "NG112: %d connections open; closed the longest idle one to let %s in (%d so far)",
            len(self._streams),
            address,
            self.counts["connections_closed_for_room"],
        )
        return True

    async def _read_stream(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: tuple[str, int],
        transport: str,
    ) -> None:
        loop = asyncio.get_running_loop()
        stream = _Stream(writer, StreamFramer(), loop.time())
        self._streams[peer] = stream
        begun = 0.0
        try:
            while True:
                if stream.framer.pending:
                    timeout, why = begun + self.config.message_timeout_s - loop.time(), "message_timeout"
                else:
                    timeout, why = self.config.idle_timeout_s, "idle_timeout"
                try:
                    async with asyncio.timeout(max(0.0, timeout)):
                        data = await reader.read(65536)
                except TimeoutError:
                    self.counts[why] += 1
                    log.info("closing %s connection from %s: %s", transport, peer, why.replace("_", " "))
                    return
                if not data:
                    return
                if not stream.framer.pending:
                    begun = loop.time()
                stream.last_active = loop.time()
                for message in stream.framer.feed(data):
                    await self.handle(message, peer, transport, writer.write)
        except (SipParseError, ConnectionError) as exc:
            log.info("closing %s connection from %s: %s", transport, peer, exc)
        finally:
            if self._streams.get(peer) is stream:
                del self._streams[peer]
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
        self.responses[response.status] += 1
        wire = response.to_bytes()
        self._transactions[key] = wire
        reply(wire)

    async def _respond(self, request: SipRequest, peer: tuple[str, int], transport: str) -> SipResponse:
        tag = hashlib.blake2b((request.headers.get("call-id") or "").encode(), digest_size=6).hexdigest()
        if request.method == "OPTIONS":
            return build_response(request, 200, "OK", (("Allow", "MESSAGE, OPTIONS"),), tag)
        sender, _ = parse_uri_and_params(request.headers.get("from") or "")
        building, challenge = self._authenticate(request, sender, peer)
        if challenge:
            return build_response(request, 401, "Unauthorized", challenge, tag)
        status, reason, headers = await self.process(
            sender, lambda: evaluate(request, self.config.policy), peer, transport, building
        )
        return build_response(request, status, reason, headers, tag)

    def _authenticate(
        self, request: SipRequest, sender: str, peer: tuple[str, int]
    ) -> tuple[Building | None, tuple[tuple[str, str], ...]]:
        """(the building the request proved to come from, or None; a challenge to answer 401 with)."""
        now = self.clock()
        raw = request.headers.get("authorization")
        if raw is None:
            enrolled = self.registry.by_sender(sender)
            if enrolled is not None and enrolled.digest_secret:
                self.counts["challenged"] += 1
                return None, self.digest.challenges(now)
            return None, ()
        try:
            credentials = parse_authorization(raw)
        except DigestError as exc:
            self._auth_failed(peer, str(exc))
            return None, ()
        building = self.registry.by_digest_user(credentials.username)
        if building is None:
            self._auth_failed(peer, f"unknown digest user {credentials.username[:40]!r}")
            return None, ()
        verdict = self.digest.verify(credentials, request.method, building.digest_secret, now)
        if verdict is Verdict.STALE:
            return None, self.digest.challenges(now, stale=True)
        if verdict is Verdict.BAD:
            self._auth_failed(peer, f"wrong digest credentials for {building.name}")
            return None, ()
        return building, ()

    def _auth_failed(self, peer: tuple[str, int], why: str) -> None:
        """Bad credentials: counted and logged; the request goes on as unauthenticated (never dropped)."""
        self.counts["authentication_failed"] += 1
        log.warning(
            "NG112: authentication failed from %s (%s); handled as unauthenticated (%d so far)",
            peer[0],
            why,
            self.counts["authentication_failed"],
        )

    async def process(
        self,
        sender: str,
        decide: Callable[[], Decision],
        peer: tuple[str, int],
        transport: str,
        building: Building | None = None,
    ) -> tuple[int, str, tuple[tuple[str, str], ...]]:
        """Budgets, decide, make durable: (status, reason, headers) for SIP or the HTTP ingress.

        ``building`` is the enrolled building the request authenticated as, if any.
        """
        retry = (("Retry-After", str(self.config.retry_after_s)),)
        now = self.clock()
        if building is not None:
            limited = self.per_building.take(building.key_id, now) > 0
        else:
            limited = self.per_source.take(peer[0], now) > 0 or self.unauthenticated.take("", now) > 0
        if limited:
            self.counts["rate_limited"] += 1
            log.warning(
                "NG112: rate limit: refused a request from %s (From %s) with 500 + Retry-After (%d so far)",
                peer[0],
                sender[:80],
                self.counts["rate_limited"],
            )
            return 500, "Server Internal Error - rate limit", retry
        if self.in_flight >= self.config.max_in_flight:
            self.counts["overloaded"] += 1
            return 500, "Server Internal Error - overloaded", retry
        decision = decide()
        if not decision.accepted or decision.request is None:
            return decision.status, decision.reason, decision.headers
        lowered = building is None and self.unauthenticated_flash.take("", now) > 0
        if building is None:
            self.counts["unauthenticated_accepted"] += 1
        if lowered:
            self.counts["lowered_to_immediate"] += 1
            log.warning(
                "NG112: unauthenticated alarm from %s over the FLASH budget: accepted, sent on at "
                "IMMEDIATE (%d so far)",
                peer[0],
                self.counts["lowered_to_immediate"],
            )
        self.in_flight += 1
        try:
            await self._make_durable(decision.request, peer, transport, now, building, lowered)
        except Exception as exc:  # any failure to make it durable: the panel must retry
            self.counts["not_stored"] += 1
            log.error("alarm from %s could not be made durable: %s", sender, exc)
            return 500, "Server Internal Error - alarm not stored", retry
        finally:
            self.in_flight -= 1
        return 200, "OK", decision.headers

    async def _make_durable(
        self,
        request: EmergencyRequest,
        peer: tuple[str, int],
        transport: str,
        now: float,
        building: Building | None,
        lowered: bool,
    ) -> None:
        key_id = building.key_id if building else self.registry.key_for(request.sender_uri)
        record = record_from_request(request, key_id, now)
        if building is None:  # flagged all the way to the operator's screen
            record = replace(record, unauthenticated=True)
        enrolled = self.registry.by_key(key_id)
        user = request.sender_uri.split(":", 1)[-1].split("@", 1)[0] or "panel"
        panel = (
            enrolled.panel
            if enrolled and enrolled.panel
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
                await self.accept(Alarm(record, request, panel, now, building is not None, lowered))
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
        stream = self._streams.get((target.host, target.port)) if target.transport == "tcp" else None
        writer = stream.writer if stream else None
        if target.transport == "tcp" and writer is None:
            try:
                reader, new_writer = await asyncio.wait_for(
                    asyncio.open_connection(target.host, target.port), ACK_TIMEOUT_S
                )
            except (OSError, TimeoutError):
                return None
            self.spawn(self._read_stream(reader, new_writer, (target.host, target.port), "tcp"))
            writer = new_writer
        local = self.udp_address if writer is None else writer.get_extra_info("sockname")[:2]
        assert local is not None
        message = ack_message(ack, alarm, self.config.gateway_uri, f"{local[0]}:{local[1]}")
        try:
            wire = message.to_bytes()
        except SipHeaderError as exc:  # e.g. a hostile CAP <sender>: never written out
            log.error("Ack for alarm %08x-%d not sent: %s", ack.key_id, ack.seq, exc)
            return None
        call_id = message.headers.get("call-id") or ""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending_acks[call_id] = future
        try:
            if writer is not None:
                writer.write(wire)
            elif self._udp and self._udp.transport:
                self._udp.transport.sendto(wire, (target.host, target.port))
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
