"""The cellular/IP link: pynng Pair1 over ``tcp://`` or ``tls+tcp://``, one session per enrolled peer.

Shape of the sockets: a node that listens has one Pair1 socket in polyamorous mode, and each pynng
pipe (one TCP connection) is mapped to the node id its handshake proved. That socket discards what
a connection has no room for instead of pushing back, so a listener's sessions bound the records
the dialler has not acknowledged (:data:`_LISTENER_UNACKED_RECORDS`). For every peer it dials it
has one Pair1 socket of its own, closed and made anew on each reconnect so every connection starts
with a fresh handshake and fresh keys. (Pair0 cannot talk to Pair1, so both sides use Pair1.)

Nothing is reported up before the enrolment handshake succeeds and the peer's first record came
(its PING, which announces its keepalive interval: :meth:`IpLink.pace` is known by then, and the
node paces its routing beacons to a phone by it); ``link_down`` is reported as soon as
a connection closes or stays silent for ``keepalive_misses`` keepalive intervals (longer while data is
in flight on a slow path, see :mod:`relay.links.ip_session`). Frames still queued when a connection
dies are dropped, never reported as sent: custody in the core sends them again.

When two sessions to the same peer exist (both nodes dialled each other), the one dialled by the
lower node id is kept on both ends, so they agree without talking about it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import pynng
from pydantic import BaseModel, ConfigDict, Field, model_validator

from crypto.certificate import Certificate, RevocationList
from crypto.errors import CryptoError
from crypto.identity import display_id
from relay.links.base import BROADCAST, Link, LinkError, LinkEvents, LinkProfile
from relay.links.ip_admission import Admission
from relay.links.ip_config import DEFAULT_BITRATE, Address, PositiveNumber, check_endpoints
from relay.links.ip_handshake import Credentials, Established, HandshakeError, Initiator, Responder, Trust
from relay.links.ip_records import BATCH_TARGET, MAX_FRAME, MAX_RECORD
from relay.links.ip_session import PeerMetrics, PeerSession
from relay.links.ip_tls import TlsMaterial, client_config, server_config
from relay.links.ip_window import SendWindow
from relay.resources import free_file_descriptors

log = logging.getLogger(__name__)

MAX_PENDING_HANDSHAKES = 64  # connections accepted but not yet authenticated, in all
MAX_PENDING_PER_SOURCE = 8  # likewise, from one source address
# HELLO, AUTH, and the dialler's first two records, which may come right behind its AUTH while the
# accepting task still awaits its HELLO's send (they are the session's): anything more before the
# handshake ends closes the connection (a dialler then connects again)
_HANDSHAKE_INBOX = 4
_RECORDS_PER_WAKE = 64  # records taken per readiness of a socket before other callbacks run
# A listener's polyamorous socket discards a record for a connection whose nng queue (two records,
# and one being written to TCP) is full, and says it went (docs/ip-link.md, "Sockets"). So a
# listener's session keeps at most _LISTENER_UNACKED_RECORDS records of any kind unacknowledged
# while DATA is in flight (4 DATA records and the control records beside them lost one now and then
# in a loaded test run over tls+tcp, when nng's writer lagged), and a dialling socket lets nng take
# up to _DIALLER_RECV_BUFFER records off the connection while its loop does not read (nng's most
# is 8192), so the kernel buffers do not fill behind a busy dialler.
_DIALLER_RECV_BUFFER = 1024
_LISTENER_UNACKED_RECORDS = 3
# ... and a listener's DATA records carry up to twice the usual stream bytes, so three records a
# round trip still carry 384 KB (3 x 64 KB cost a 50 ms path a quarter of its rate, 4 x 64 KB before)
_LISTENER_RECORD_BYTES = 2 * BATCH_TARGET

T = TypeVar("T")


class IpLinkConfig(BaseModel):
    """How one IP link listens, whom it dials, and its timing; validated on construction.

    node.toml says ``tls = true`` (:class:`relay.links.ip_config.IpLinkOptions`); here ``tls`` is
    the material itself.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, arbitrary_types_allowed=True)

    name: str = Field(default="ip0", min_length=1)
    listen: Address | None = None  # e.g. "tcp://127.0.0.1:7001" or "tls+tcp://0.0.0.0:7001"
    peers: tuple[Address, ...] = ()  # addresses to dial
    tls: TlsMaterial | None = None  # required when any address is tls+tcp://
    bitrate: PositiveNumber = DEFAULT_BITRATE  # bytes/s the scheduler may plan with
    keepalive_interval: PositiveNumber = 1.0
    keepalive_misses: int = Field(default=3, ge=1)
    handshake_timeout: PositiveNumber = 5.0
    reconnect_min: PositiveNumber = 0.2
    reconnect_max: PositiveNumber = 10.0
    queue_limit_bytes: int = Field(default=256 * 1024, ge=MAX_FRAME)  # per peer; send() waits above this

    @model_validator(mode="after")
    def _consistent(self) -> IpLinkConfig:
        check_endpoints(self.listen, self.peers)
        for address in ((self.listen,) if self.listen else ()) + self.peers:
            if address.startswith("tls+tcp://") and self.tls is None:
                raise ValueError(f"{address} needs TLS material (tls cert and key)")
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must be at least reconnect_min")
        return self


@dataclass(frozen=True, slots=True)
class _Crossing:
    """A handshake round trip: this side's message of ``sent_bytes`` went out and the answer came
    back in ``seconds``, so the path carries at least sent_bytes / seconds: the window's first guess."""

    seconds: float
    sent_bytes: int


@dataclass(frozen=True, slots=True)
class LinkMetrics:
    name: str
    peers: tuple[PeerMetrics, ...]  # live connections, and the last state of closed ones
    handshakes_completed: int
    handshakes_refused: int
    connections_refused: int  # closed before their handshake: a source or the listener was at its cap
    connections_lost_records: int  # closed because nng lost records of the peer (RecordsLost)


class IpLink(Link):
    """A Link over pynng; see the module docstring for the socket layout."""

    def __init__(
        self,
        config: IpLinkConfig,
        credentials: Credentials,
        trust: Trust,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        learn: Callable[[Certificate], object] | None = None,
    ) -> None:
        """``learn`` is offered each peer certificate a handshake proved (see :meth:`TrustStore.learn`):
        a device enrolled after this node started is then believed as an origin too."""
        self.config = config
        self.profile = LinkProfile(
            name=config.name, kind="ip", mtu=MAX_FRAME, bitrate=config.bitrate, ordered=True
        )
        self._credentials = credentials
        self._trust = trust
        self._clock = clock
        self._rng = rng or random.Random()
        self._events: LinkEvents | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: pynng.Pair1 | None = None
        self._listener_inbound: _Inbound | None = None
        self._sessions: dict[bytes, PeerSession] = {}
        self._reported: set[bytes] = set()  # peers reported up (their session's first record came)
        self._dialler_of: dict[PeerSession, bytes] = {}
        self._closed: dict[bytes, PeerMetrics] = {}
        self._inboxes: dict[int, asyncio.Queue[bytes]] = {}  # listener pipes still in their handshake
        self._pipe_sessions: dict[int, PeerSession] = {}
        self._peer_certificates: dict[bytes, Certificate] = {}
        self._admission: Admission[pynng.Pipe] = Admission(
            MAX_PENDING_PER_SOURCE, MAX_PENDING_HANDSHAKES, free_fds=free_file_descriptors
        )
        self._learn = learn
        self._tasks: set[asyncio.Task[None]] = set()
        self._handshakes_completed = self._handshakes_refused = self._connections_lost_records = 0
        self._stopping = False

    @property
    def node_id(self) -> bytes:
        return self._credentials.certificate.node_id

    def peers(self) -> tuple[bytes, ...]:
        """Node ids of the peers connected and authenticated now."""
        return tuple(self._sessions)

    def metrics(self) -> LinkMetrics:
        live = {peer: session.metrics() for peer, session in self._sessions.items()}
        closed = tuple(m for peer, m in self._closed.items() if peer not in live)
        return LinkMetrics(
            self.config.name,
            tuple(live.values()) + closed,
            self._handshakes_completed,
            self._handshakes_refused,
            self._admission.refused.total(),
            self._connections_lost_records,
        )

    def pace(self, peer: bytes) -> float | None:
        """The connection's keepalive interval: the slower of this side's and the peer's."""
        session = self._sessions.get(peer)
        return None if session is None else session.keepalive_interval()

    def set_trust(self, trust: Trust) -> None:
        """Check new connections against ``trust`` (e.g. a newer revocation list) and cut every
        connected peer whose certificate it no longer accepts."""
        self._trust = trust
        for peer, certificate in list(self._peer_certificates.items()):
            try:
                certificate.verify(trust.authority_public, int(self._clock()), trust.revocations)
            except CryptoError as exc:
                session = self._sessions.get(peer)
                if session is not None:
                    log.warning("link %s: session with %s cut: %s", self.config.name, display_id(peer), exc)
                    session.close(f"peer certificate no longer accepted: {exc}")

    def revoked(self, revocations: RevocationList) -> None:
        self.set_trust(Trust(self._trust.authority_public, revocations))

    async def start(self, events: LinkEvents) -> None:
        self._events = events
        self._loop = asyncio.get_running_loop()
        if self.config.listen:
            self._listener = self._open_listener(self.config.listen)
            self._listener_inbound = _Inbound(self._listener, self._listener_record)
        for address in self.config.peers:
            self._spawn(self._dial_loop(address))

    async def send(self, peer: bytes, frame: bytes) -> None:
        await self._enqueue(peer, frame, flash=False)

    async def send_flash(self, peer: bytes, frame: bytes) -> None:
        """A FLASH frame goes ahead of the frames a session has queued (up to a window of them)."""
        await self._enqueue(peer, frame, flash=True)

    def try_send(self, peer: bytes, frame: bytes, flash: bool = False) -> bool | None:
        """Queue ``frame`` if ``peer``'s session has room now; None for a broadcast (send waits)."""
        if peer == BROADCAST:
            return None
        return self._session(peer, frame).offer(frame, flash)

    async def _enqueue(self, peer: bytes, frame: bytes, flash: bool) -> None:
        if peer != BROADCAST:
            await self._enqueue_when_room(peer, frame, flash)
            return
        self._check_size(frame)
        for neighbour in list(self._sessions):
            await self._enqueue_when_room(neighbour, frame, flash)

    async def _enqueue_when_room(self, peer: bytes, frame: bytes, flash: bool) -> None:
        """Queue ``frame`` on ``peer``'s session once it has room, looking the session up again
        after each wait: a newer connection that took the queue over wakes those waiting on the
        old one, whose queue is then empty and goes with it."""
        while not (session := self._session(peer, frame)).offer(frame, flash):
            await session.wait_for_room()

    def _session(self, peer: bytes, frame: bytes) -> PeerSession:
        """``peer``'s session for ``frame``; LinkError if the frame cannot go or the peer is not here."""
        self._check_size(frame)
        session = self._sessions.get(peer)
        if session is None:
            raise LinkError(f"peer {display_id(peer)} is not connected on link {self.config.name}")
        return session

    def _check_size(self, frame: bytes) -> None:
        if not 0 < len(frame) <= MAX_FRAME:
            raise LinkError(f"frame of {len(frame)} bytes outside 1..{MAX_FRAME} on link {self.config.name}")

    async def stop(self) -> None:
        """Close every connection (peers see them close) without reporting to a node that is stopping."""
        self._stopping = True
        self._events = None
        for session in list(self._dialler_of):  # every open session, lingering ones too
            session.close("link stopped")
        if self._listener_inbound is not None:
            self._listener_inbound.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    # -- listening -------------------------------------------------------------------------------

    def _open_listener(self, address: str) -> pynng.Pair1:
        socket = pynng.Pair1(polyamorous=True, recv_max_size=MAX_RECORD + 64)
        if address.startswith("tls+tcp://"):
            assert self.config.tls is not None
            socket.tls_config = server_config(self.config.tls)
        socket.add_pre_pipe_connect_cb(self._admit)
        socket.add_post_pipe_connect_cb(lambda pipe: self._from_nng_thread(self._listener_pipe_new, pipe))
        socket.add_post_pipe_remove_cb(lambda pipe: self._from_nng_thread(self._listener_pipe_gone, pipe.id))
        try:
            socket.listen(address)
        except pynng.NNGException as exc:
            socket.close()
            raise LinkError(f"link {self.config.name} cannot listen on {address}: {exc}") from exc
        return socket

    def _listener_record(self, message: pynng.Message) -> bool:
        """Hand one record to its pipe's session, or to its handshake; True for a handshake's: the
        task that finishes it must run (and make the session) before the pipe's next record is taken."""
        pipe = message.pipe
        session = self._pipe_sessions.get(pipe.id)
        if session is not None:
            self._dispatch(session, message.bytes)
            return False
        inbox = self._inboxes.get(pipe.id)
        if inbox is None:
            inbox = self._inboxes[pipe.id] = asyncio.Queue(_HANDSHAKE_INBOX)
            self._spawn(self._accept(pipe, inbox))
        if inbox.full():
            log.warning("link %s: peer sent more than a handshake before finishing it", self.config.name)
            _close_pipe(pipe)
        else:
            inbox.put_nowait(message.bytes)
        return True

    async def _accept(self, pipe: pynng.Pipe, inbox: asyncio.Queue[bytes]) -> None:
        responder = Responder(self._credentials, self._trust)
        try:
            async with asyncio.timeout(self.config.handshake_timeout):
                hello = responder.receive_hello(await inbox.get(), self._clock())
                sent_at = time.monotonic()
                await _keeping_cancellation(pipe.asend(hello))
                established = responder.receive_auth(await inbox.get())
                crossed = _Crossing(max(time.monotonic() - sent_at, 1e-6), len(hello))
        except (HandshakeError, TimeoutError, pynng.NNGException) as exc:
            self._refuse(exc, "accepted")
            _close_pipe(pipe)
            return
        finally:
            self._inboxes.pop(pipe.id, None)
            self._admission.settled(pipe.id)
        session = self._establish(
            established,
            crossed,
            pipe,
            lambda: _close_pipe(pipe),
            dialler=established.peer_node_id,
            accepted=True,
        )
        self._pipe_sessions[pipe.id] = session
        # The dialler sends its first records right behind its AUTH: while this task still awaited
        # its HELLO's send, they came into the handshake's inbox. They are the session's first, in
        # order; dropped, the session refused every later record for a counter it never saw.
        while not inbox.empty():
            self._dispatch(session, inbox.get_nowait())
        if self._listener is None or all(p.id != pipe.id for p in self._listener.pipes):
            session.close("peer disconnected during the handshake")  # its removal came too early

    def _admit(self, pipe: pynng.Pipe) -> None:
        """On pynng's thread, before the connection is added: close it at once if its source is at its
        cap of unauthenticated connections or file descriptors run short; when the listener is at its
        cap, close the oldest pending connection instead (see :mod:`relay.links.ip_admission`)."""
        source = str(pipe.remote_address).rsplit(":", 1)[0]
        verdict = self._admission.admit(pipe.id, source, pipe)
        if verdict.evict is not None:
            _close_pipe(verdict.evict)
        if verdict.refused is not None:
            _close_pipe(pipe)
        if verdict.evict is not None or verdict.refused is not None:
            log.warning(
                "link %s: closed a connection before its handshake: %s (%d so far)",
                self.config.name,
                verdict.refused or "the oldest of too many pending handshakes",
                self._admission.refused.total(),
            )

    def _listener_pipe_new(self, pipe: pynng.Pipe) -> None:
        """Each pending handshake is bounded in time as well as in number."""
        assert self._loop is not None
        self._loop.call_later(self.config.handshake_timeout, self._handshake_deadline, pipe)

    def _handshake_deadline(self, pipe: pynng.Pipe) -> None:
        self._admission.settled(pipe.id)
        if pipe.id not in self._pipe_sessions:
            _close_pipe(pipe)

    def _listener_pipe_gone(self, pipe_id: int) -> None:
        self._admission.settled(pipe_id)
        session = self._pipe_sessions.pop(pipe_id, None)
        if session is not None:
            session.close("peer closed the connection")

    # -- dialling --------------------------------------------------------------------------------

    async def _dial_loop(self, address: str) -> None:
        failures = 0
        while not self._stopping:
            peer = await self._connect_once(address)
            failures = 0 if peer is not None else failures + 1
            while peer is not None and peer in self._sessions and not self._stopping:
                await asyncio.sleep(self.config.keepalive_interval)  # the peer's own connection won
            ceiling = min(self.config.reconnect_max, self.config.reconnect_min * 2 ** min(failures, 30))
            await asyncio.sleep(ceiling * self._rng.uniform(0.5, 1.0))

    async def _connect_once(self, address: str) -> bytes | None:
        """Dial, handshake, serve until the connection ends; the peer's node id if it was authenticated."""
        socket = pynng.Pair1(recv_max_size=MAX_RECORD + 64, recv_buffer_size=_DIALLER_RECV_BUFFER)
        gone = asyncio.Event()
        inbound: _Inbound | None = None
        try:
            if address.startswith("tls+tcp://"):
                assert self.config.tls is not None
                socket.tls_config = client_config(self.config.tls)
            socket.add_post_pipe_remove_cb(lambda pipe: self._from_nng_thread(gone.set))
            handshake = asyncio.create_task(self._dial_handshake(socket, address))
            closed = asyncio.create_task(gone.wait())
            try:
                async with asyncio.timeout(self.config.handshake_timeout):
                    await asyncio.wait((handshake, closed), return_when=asyncio.FIRST_COMPLETED)
                if not handshake.done():
                    raise ConnectionError(
                        "the peer closed the connection during the handshake (is this node enrolled?)"
                    )
                established, crossed, pipe = handshake.result()
            except (HandshakeError, TimeoutError, ConnectionError, pynng.NNGException) as exc:
                self._refuse(exc, f"dialled {address}")
                return None
            finally:
                if not handshake.done():
                    socket.close()  # ends whatever the handshake awaits on it, so awaiting it below ends
                handshake.cancel()
                closed.cancel()
                await asyncio.gather(handshake, closed, return_exceptions=True)
            # No record is taken before the session exists: the reader runs in a later loop turn.
            inbound = _Inbound(socket, lambda message: self._dispatch(session, message.bytes))
            session = self._establish(established, crossed, pipe, inbound.close, dialler=self.node_id)
            self._spawn(self._close_when(gone, session))
            await inbound.ended
            session.close("connection closed")
            return established.peer_node_id
        finally:
            if inbound is not None:
                inbound.close()
            socket.close()

    async def _dial_handshake(
        self, socket: pynng.Pair1, address: str
    ) -> tuple[Established, _Crossing, pynng.Pipe]:
        initiator = Initiator(self._credentials, self._trust)
        socket.dial(address, block=False)
        hello = initiator.start()
        sent_at = time.monotonic()
        await _keeping_cancellation(socket.asend(hello))
        reply = await _keeping_cancellation(socket.arecv_msg())
        crossed = _Crossing(max(time.monotonic() - sent_at, 1e-6), len(hello))
        auth, established = initiator.receive(reply.bytes, self._clock())
        await _keeping_cancellation(reply.pipe.asend(auth))
        return established, crossed, reply.pipe

    async def _close_when(self, gone: asyncio.Event, session: PeerSession) -> None:
        await gone.wait()
        session.close("peer closed the connection")

    # -- sessions --------------------------------------------------------------------------------

    def _establish(
        self,
        established: Established,
        crossed: _Crossing,
        pipe: pynng.Pipe,
        transport_close: Callable[[], None],
        *,
        dialler: bytes,
        accepted: bool = False,
    ) -> PeerSession:
        """Start an authenticated connection: it becomes the peer's, or lingers if a better one exists.
        ``accepted``: on the listener's socket, which discards what it has no room for (see
        :data:`_LISTENER_UNACKED_RECORDS`)."""
        peer = established.peer_node_id
        self._handshakes_completed += 1
        self._peer_certificates[peer] = established.peer_certificate
        if self._learn is not None:  # before any frame of the peer reaches the node
            try:
                self._learn(established.peer_certificate)
            except CryptoError as exc:
                log.warning(
                    "link %s: certificate of %s not learned: %s", self.config.name, display_id(peer), exc
                )
        session = PeerSession(
            peer,
            established.cipher,
            _sender(pipe),
            transport_close,
            on_frame=self._frame_sink(peer),
            on_closed=self._session_closed,
            transport_try_send=_try_sender(pipe),
            on_heard=self._session_heard,
            keepalive_interval=self.config.keepalive_interval,
            keepalive_misses=self.config.keepalive_misses,
            queue_limit_bytes=self.config.queue_limit_bytes,
            window=SendWindow(
                self.config.bitrate,
                crossed.seconds,
                crossed.sent_bytes,
                time.monotonic(),
                largest_record=_LISTENER_RECORD_BYTES if accepted else BATCH_TARGET,
            ),
            unacked_records_limit=_LISTENER_UNACKED_RECORDS if accepted else None,
        )
        self._dialler_of[session] = dialler
        session.start()
        existing = self._sessions.get(peer)
        if existing is None:
            self._sessions[peer] = session
        elif self._dialler_of[existing] != dialler and self._dialler_of[existing] < dialler:
            self._retire(session, "a connection to this peer already exists")
        else:
            self._sessions[peer] = session
            session.adopt_queue(existing)
            self._retire(existing, "replaced by a newer connection")
        return session

    def _retire(self, session: PeerSession, reason: str) -> None:
        """Close a superseded connection after a grace period, not at once: the peer may not have
        its replacement yet, and closing now would make it report the peer down and up again."""
        asyncio.get_running_loop().call_later(self.config.handshake_timeout, session.close, reason)

    def _session_heard(self, session: PeerSession) -> None:
        """The peer's first record came (its PING, with its interval): report the peer up once."""
        peer = session.peer
        if self._sessions.get(peer) is not session or peer in self._reported:
            return
        self._reported.add(peer)
        log.info("link %s: peer %s up", self.config.name, display_id(peer))
        if self._events is not None:
            self._events.link_up(self.config.name, peer)

    def _session_closed(self, session: PeerSession, reason: str) -> None:
        self._dialler_of.pop(session, None)
        if session.records_lost:
            self._connections_lost_records += 1
        self._closed[session.peer] = session.metrics()
        if self._sessions.get(session.peer) is not session:
            return
        del self._sessions[session.peer]
        if session.peer not in self._reported:
            return  # closed before its first record: never reported up
        self._reported.discard(session.peer)
        log.info("link %s: peer %s down: %s", self.config.name, display_id(session.peer), reason)
        if self._events is not None:
            self._events.link_down(self.config.name, session.peer)

    def _dispatch(self, session: PeerSession, record: bytes) -> None:
        try:
            session.on_record(record)
        except Exception:  # an application callback failed; the link must keep running
            log.exception(
                "link %s: handling a record from %s failed", self.config.name, display_id(session.peer)
            )

    def _frame_sink(self, peer: bytes) -> Callable[[bytes], None]:
        """Where ``peer``'s frames go: the node's ``frame_received`` with this link and ``peer``
        bound, in C (a lambda and a method in between were two Python calls per frame)."""
        if self._events is None:  # stopped meanwhile: as before, no frame reaches a stopping node
            return _drop
        return functools.partial(self._events.frame_received, self.config.name, peer)

    def _refuse(self, exc: BaseException, where: str) -> None:
        if isinstance(exc, HandshakeError):
            self._handshakes_refused += 1
            log.warning("link %s: handshake refused (%s): %s", self.config.name, where, exc)
        else:
            log.info("link %s: no connection (%s): %s", self.config.name, where, exc or "timed out")

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _from_nng_thread(self, callback: Callable[..., None], *args: object) -> None:
        """pynng calls pipe callbacks on its own threads; hop onto the event loop (if it still runs)."""
        if self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing left to tell
            self._loop.call_soon_threadsafe(callback, *args)


class _Inbound:
    """The records of one pynng socket, taken on the event loop as they arrive: nng marks the
    socket's receive descriptor readable while records wait, and the loop takes up to
    :data:`_RECORDS_PER_WAKE` of them without blocking before other callbacks get their turn, or
    fewer when ``on_record`` returns True (it woke a task that must run before the next record).

    Why not ``arecv_msg``: each record then cost an nng aio, a completion on an nng thread that
    took the GIL, and a thread-safe wake-up of the loop, and only one record came per loop turn:
    about twice the receiving CPU per record, and one more thread switch on a lone message's way
    (docs/ip-link.md, "Receiving")."""

    def __init__(self, socket: pynng.Socket, on_record: Callable[[pynng.Message], bool | None]) -> None:
        self._socket = socket
        self._on_record = on_record
        self._loop = asyncio.get_running_loop()
        self._fd = socket.recv_fd
        self.ended: asyncio.Future[None] = self._loop.create_future()
        self._loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        for _ in range(_RECORDS_PER_WAKE):
            if self.ended.done():  # a record's handling closed the connection
                return
            try:
                message = self._socket.recv_msg(block=False)
            except pynng.TryAgain:
                return
            except pynng.NNGException:  # the socket closed under us
                self.close()
                return
            if self._on_record(message):
                return

    def close(self) -> None:
        """Stop reading, then close the socket (its descriptor must leave the loop first)."""
        if not self.ended.done():
            self._loop.remove_reader(self._fd)
            self.ended.set_result(None)
        self._socket.close()


def _drop(frame: bytes) -> None:
    """The frame sink of a session made after the link stopped."""


async def _keeping_cancellation(operation: Awaitable[T]) -> T:
    """Await a pynng operation, and raise the task's cancellation even if pynng swallowed it.

    pynng answers a cancel by cancelling the nng aio and awaiting its completion; when nng had
    completed it already (a send handed to the connection before the loop heard), it returns the
    result and the CancelledError is gone. A handshake then went on to await an answer that never
    came, and ``stop()`` waited for it for ever (issue 15, docs/ip-link.md "Stopping")."""
    task = asyncio.current_task()
    assert task is not None
    requested = task.cancelling()
    result = await operation
    if task.cancelling() > requested:
        raise asyncio.CancelledError
    return result


def _try_sender(pipe: pynng.Pipe) -> Callable[[bytes], bool]:
    """Hand a record to nng on ``pipe`` now if it has room; False (nothing sent) if it has none."""
    socket = pipe.socket

    def try_send(record: bytes) -> bool:
        try:
            socket.send_msg(pynng.Message(record, pipe), block=False)
        except pynng.TryAgain:
            return False
        return True

    return try_send


def _sender(pipe: pynng.Pipe) -> Callable[[bytes], Awaitable[None]]:
    """Send records on ``pipe``: handed to nng at once while it has room, waiting only when it has
    none. ``pipe.asend`` alone has an nng thread wake the event loop after every record to say it
    went (three more context switches a record: an idle phone's wake-ups, a busy relay's CPU)."""
    try_send = _try_sender(pipe)

    async def send(record: bytes) -> None:
        if not try_send(record):
            await pipe.asend(record)

    return send


def _close_pipe(pipe: pynng.Pipe) -> None:
    """Close one connection; it may already be gone, which is what we wanted."""
    with contextlib.suppress(pynng.NNGException):
        pipe.close()
