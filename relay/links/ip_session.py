"""One authenticated IP connection to one peer: outbound queue, windowed sender, acks, keepalive.

The session owns no socket: it gets a ``transport_send`` coroutine, a non-blocking
``transport_try_send`` and a ``transport_close`` callable from :mod:`relay.links.ip`, so it works
the same for dialled and accepted connections.
Records are sealed in the single sender task, which keeps record counters in sending order, or,
when that task waits with nothing queued, by ``enqueue`` itself (one loop turn earlier, see
:meth:`PeerSession._send_inline`).
Control records (ACK/PING/PONG) go ahead of data. DATA goes only as far as the send window
(:mod:`relay.links.ip_window`) allows, so neither they nor a FLASH frame queue behind more than
about a second of the path, and the outbound queue holds at most one window too. On a transport that
discards what it has no room for (a listener's), DATA also waits while DATA is in flight and
``unacked_records_limit`` records of any kind are unacknowledged.

Liveness: any authentic record from the peer proves it alive. A PING goes out at once and then
every keepalive interval, except while DATA is in flight and acks keep coming (they are the
answers); a receiver's PING measures the queue its answers wait behind. Each PING announces the
sender's interval, and the pair follows the slower side: a relay (1 s) facing a phone (a battery
profile, say 60 s) stops pinging and only watches the phone's pings, so an idle phone wakes once per
its own interval, not every second. The peer is declared dead after
``keepalive_interval × keepalive_misses`` (the slower side's interval) of silence plus twice the
window's patience (recent round trips, or what is in flight at the measured rate), at most
``MAX_DEAD_AFTER_S``: a slow path that keeps answering stays up, a blackhole on an idle or fast path
is noticed within about the keepalive timeout.

A PING is only needed on a quiet connection: when this side sent DATA within the interval and heard
the peer, both sides know the other alive and the tick sends nothing. A phone's routing beacons go
at its keepalive pace (the node follows :meth:`PeerSession.keepalive_interval`, see
:meth:`relay.links.base.Link.pace`), so an idle phone's link carries one beacon each way and their
ACKs a minute, not those and a PING and a PONG besides.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from relay.links.base import LinkError
from relay.links.ip_records import (
    FrameQueue,
    FrameReassembler,
    RecordError,
    RecordKind,
    RecordsLost,
    SessionCipher,
    decode_ack,
    decode_ping,
    encode_ack,
    encode_ping,
)
from relay.links.ip_window import SendWindow

log = logging.getLogger(__name__)

MAX_DEAD_AFTER_S = 60.0  # however slow the path, silence this long means dead
ACK_EVERY = 2  # DATA records per ACK; a lone record is acknowledged after ACK_DELAY_S
ACK_DELAY_S = 0.01
# A record is sealed in the caller's turn only after this much DATA silence: a lone message gains
# a loop turn, while a stream (a relay forwarding as frames arrive) keeps coalescing frames into
# records in the sender task; one record per frame cut a three-hop relay chain's rate by a third.
INLINE_AFTER_QUIET_S = 0.02
_MAX_CONTROL = 16  # queued PING/PONG records; more means the peer floods pings
_MAX_OUTSTANDING_PINGS = 16
_RTT_SAMPLES = 256


@dataclass(frozen=True, slots=True)
class PeerMetrics:
    """A snapshot of one peer connection, for the API's /metrics and for benchmarks."""

    peer: bytes
    up: bool
    rtt_s: float | None  # latest keepalive round trip
    rtt_samples: tuple[float, ...]  # the most recent keepalive round trips, oldest first
    bytes_in: int  # record bytes, handshake excluded
    bytes_out: int
    frames_in: int
    frames_out: int  # frames handed to the socket (not merely queued)
    records_refused: int  # records that failed authentication, sequence or decoding
    queue_frames: int
    queue_bytes: int
    window_bytes: int  # DATA bytes the sender may have unacknowledged now
    in_flight_bytes: int
    delivery_rate: float  # bytes/s the window is sized for (measured; the handshake's at first)
    frames_acked: int  # frames the peer acknowledged receiving (on this connection)
    dead_after_s: float  # silence that would declare the peer dead now


class PeerSession:
    """Frames to and from one authenticated peer over one connection."""

    def __init__(
        self,
        peer: bytes,
        cipher: SessionCipher,
        transport_send: Callable[[bytes], Awaitable[None]],
        transport_close: Callable[[], None],
        on_frame: Callable[[bytes], None],
        on_closed: Callable[[PeerSession, str], None],
        *,
        transport_try_send: Callable[[bytes], bool] | None = None,
        on_heard: Callable[[PeerSession], None] | None = None,
        keepalive_interval: float,
        keepalive_misses: int,
        queue_limit_bytes: int,
        window: SendWindow,
        unacked_records_limit: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``unacked_records_limit``: while DATA is in flight, DATA waits once this many records of
        any kind are unacknowledged, for a transport that discards what it has no room for instead
        of pushing back (a listener's polyamorous socket, see :mod:`relay.links.ip`); None for one
        that pushes back."""
        self.peer = peer
        self._cipher = cipher
        self._transport_send = transport_send
        self._transport_try_send = transport_try_send
        self._transport_close = transport_close
        self._on_frame = on_frame
        self._on_closed = on_closed
        self._on_heard = on_heard
        self.heard = False  # an authentic record came: the first is the peer's PING (its interval)
        self._interval = keepalive_interval
        self._peer_interval: float | None = None  # announced in the peer's PINGs
        self._misses = keepalive_misses
        self._limit = queue_limit_bytes
        self._window = window
        self._unacked_limit = unacked_records_limit
        self._clock = clock
        self._outbox = FrameQueue()
        self._reassembler = FrameReassembler()
        self._control: deque[tuple[RecordKind, bytes]] = deque()
        self._ack_due = False
        self._unacknowledged = 0  # DATA records received since the last ACK went out
        self._ack_timer: asyncio.TimerHandle | None = None
        self._queue_bound = min(queue_limit_bytes, window.window)
        self._wakeup = asyncio.Event()
        self._parked = False  # the sender task waits for work and holds no sealed record
        self._unsent: tuple[bytes, int] | None = None  # a DATA record sealed inline that nng refused
        self._room = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_received = self._last_answer = clock()
        self._data_sent_at: float | None = None  # when the last DATA record went out
        self._pings: dict[int, float] = {}
        self._next_ping = 0
        self._rtts: deque[float] = deque(maxlen=_RTT_SAMPLES)
        self._bytes_in = self._bytes_out = self._frames_in = self._frames_out = self._refused = 0
        self.closed = False
        self.close_reason = ""
        self.replaced = False  # a newer connection took the queue over: no more frames here
        self.records_lost = False  # closed because the transport lost the peer's records

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._sender()), asyncio.create_task(self._keepalive())]

    async def enqueue(self, frame: bytes, flash: bool = False) -> None:
        """Queue one frame; waits while the queue holds a window's worth (``queue_limit_bytes`` at
        most), so whoever hands frames over keeps the choice of what goes next. A FLASH frame goes
        ahead of the frames queued (not behind up to a window of them) and waits only while the
        FLASH frames ahead of them hold that much."""
        while not self.offer(frame, flash):
            await self.wait_for_room()

    async def wait_for_room(self) -> None:
        """Until the queue may have room again: an ack released some, or a newer connection took
        the queue over (whoever waits then hands the frame to that one, see ``IpLink._enqueue``)."""
        self._room.clear()
        await self._room.wait()

    def offer(self, frame: bytes, flash: bool = False) -> bool:
        """Queue one frame if the queue has room for it now (see :meth:`enqueue`); False if it has
        none (nothing queued). Raises LinkError once the session is closed."""
        if self.closed:
            raise LinkError(f"connection to peer closed: {self.close_reason}")
        if self.replaced:
            raise LinkError("connection to peer replaced by a newer one: hand the frame to that one")
        outbox = self._outbox
        queued = outbox.ahead_bytes if flash else outbox.bytes
        if queued and queued + len(frame) > self._queue_bound:
            return False
        idle = (
            self._parked
            and not outbox.bytes
            and not self._control
            and not self._ack_due
            and (self._data_sent_at is None or self._clock() - self._data_sent_at >= INLINE_AFTER_QUIET_S)
        )
        outbox.append(frame, flash)
        if idle and self._unsent is None and self._transport_try_send is not None and self._send_inline():
            return True
        self._wakeup.set()
        return True

    def _send_inline(self) -> bool:
        """Seal and hand the first record to nng in the caller's turn, not the sender task's next
        one: only when that task is parked with nothing queued (so the counter order and control
        records first still hold) and the window and pacing allow it now. True if the outbox
        emptied, so the sender task need not wake."""
        size = self._data_size()
        if not size or self._window.pace_delay(self._clock()) > 0:
            return False
        record, finished = self._seal_data(size)
        try:
            sent = self._transport_try_send is not None and self._transport_try_send(record)
        except Exception as exc:  # the pipe died: the sender task tries once more and closes the session
            log.debug("inline send to %s failed: %s", self.peer.hex()[:8], exc)
            sent = False
        if not sent:
            self._unsent = (record, finished)
            return False
        self._data_sent(record, finished)
        return not self._outbox.bytes

    def adopt_queue(self, other: PeerSession) -> None:
        """Take over the frames a connection this one replaces has not begun to send; the old one
        takes no more (those waiting for its room wake, and go to this one)."""
        other.replaced = True
        frames, ahead = other._outbox.take_unstarted()
        for index, frame in enumerate(frames):
            self._outbox.append(frame, ahead=index < ahead)
        other._room.set()
        self._wakeup.set()

    def on_record(self, record: bytes) -> None:
        """Handle one received record; a refused record is counted and dropped, the session goes on."""
        if self.closed:
            return
        try:
            kind, body = self._cipher.open(record)
        except RecordsLost as exc:  # no later record could open: connect again now, not after silence
            self._refuse(exc)
            self.records_lost = True
            self.close(f"the peer's records were lost on the way: {exc}")
            return
        except RecordError as exc:
            self._refuse(exc)
            return
        self._last_received = self._clock()
        self._bytes_in += len(record)
        if not self.heard and kind is not RecordKind.PING:  # a PING is heard once its interval is read
            self._first_heard()
        if kind is RecordKind.DATA:
            try:
                frames = self._reassembler.feed(body)
            except RecordError as exc:  # authentic but malformed: the peer is broken, not an attacker
                self._refused += 1
                self.close(f"peer sent a malformed DATA stream: {exc}")
                return
            self._unacknowledged += 1
            if self._unacknowledged >= ACK_EVERY:
                self._acknowledge()
            elif self._ack_timer is None:
                self._ack_timer = asyncio.get_running_loop().call_later(ACK_DELAY_S, self._acknowledge)
            self._frames_in += len(frames)
            for frame in frames:
                self._on_frame(frame)
        elif kind is RecordKind.ACK:
            self._on_ack(body)
        elif kind is RecordKind.PING:
            try:
                _, self._peer_interval = decode_ping(body)
            except RecordError as exc:
                self._refuse(exc)
                return
            if not self.heard:
                self._first_heard()
            if len(self._control) < _MAX_CONTROL:
                self._control.append((RecordKind.PONG, body))
                self._wakeup.set()
        else:
            self._on_pong(body)

    def _first_heard(self) -> None:
        self.heard = True
        if self._on_heard is not None:
            self._on_heard(self)

    def keepalive_interval(self) -> float:
        """The slower of the two sides' intervals: the pace this connection keeps alive at."""
        return max(self._interval, self._peer_interval or 0.0)

    def pings(self) -> bool:
        """Whether this side sends PINGs: not when the peer asked for a slower pace (it pings)."""
        return self._peer_interval is None or self._peer_interval <= self._interval

    def dead_after(self) -> float:
        """Seconds of silence after which the peer is declared dead, given what is in flight now."""
        timeout = self.keepalive_interval() * self._misses
        return min(max(timeout, MAX_DEAD_AFTER_S), timeout + 2 * self._window.patience())

    def _acknowledge(self) -> None:
        self._ack_due = True
        self._wakeup.set()
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None

    def _refuse(self, exc: RecordError) -> None:
        self._refused += 1
        log.warning("refused a record from %s: %s", self.peer.hex()[:8], exc)

    def _on_ack(self, body: bytes) -> None:
        try:
            released = self._window.on_ack(decode_ack(body), self._cipher.sealed, self._clock())
        except RecordError as exc:  # authentic, yet impossible: refuse it, keep the session
            self._refuse(exc)
            return
        if released:
            self._last_answer = self._clock()
            self._queue_bound = min(self._limit, self._window.window)
            self._room.set()
            self._wakeup.set()

    def _on_pong(self, body: bytes) -> None:
        try:
            sent = self._pings.pop(decode_ping(body)[0], None)
        except RecordError as exc:
            self._refuse(exc)
            return
        if sent is not None:
            self._last_answer = self._clock()
            self._rtts.append(self._clock() - sent)
            self._window.add_rtt(self._rtts[-1])

    def close(self, reason: str) -> None:
        """Stop everything and tell the link once; unsent frames are dropped, never reported as sent."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        if self._ack_timer is not None:
            self._ack_timer.cancel()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._room.set()
        try:
            self._transport_close()
        except Exception as exc:  # closing a socket that already failed
            log.debug("closing transport to %s: %s", self.peer.hex()[:8], exc)
        self._on_closed(self, reason)

    def metrics(self) -> PeerMetrics:
        window = self._window.metrics()
        return PeerMetrics(
            peer=self.peer,
            up=not self.closed,
            rtt_s=self._rtts[-1] if self._rtts else None,
            rtt_samples=tuple(self._rtts),
            bytes_in=self._bytes_in,
            bytes_out=self._bytes_out,
            frames_in=self._frames_in,
            frames_out=self._frames_out,
            records_refused=self._refused,
            queue_frames=len(self._outbox),
            queue_bytes=self._outbox.bytes,
            window_bytes=window.window_bytes,
            in_flight_bytes=window.in_flight_bytes,
            delivery_rate=window.delivery_rate,
            frames_acked=window.frames_acked,
            dead_after_s=self.dead_after(),
        )

    async def _sender(self) -> None:
        try:
            while not self.closed:
                self._wakeup.clear()
                if self._unsent is not None:  # sealed before anything queued since: it goes first
                    record, finished = self._unsent
                    self._unsent = None
                    await self._transport_send(record)
                    self._data_sent(record, finished)
                    continue
                if self._control or self._ack_due:
                    await self._send_control()
                    continue
                size = self._data_size()
                if not size:
                    self._parked = True
                    try:
                        await self._wakeup.wait()  # data, room in the window, or a control record
                    finally:
                        self._parked = False
                    continue
                delay = self._window.pace_delay(self._clock())
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wakeup.wait()
                    continue
                await self._send_data(size)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # pynng raises its own exception types when the pipe dies
            self.close(f"send failed: {exc}")

    async def _send_control(self) -> None:
        if self._ack_due:
            self._ack_due = False
            self._unacknowledged = 0
            kind, body = RecordKind.ACK, encode_ack(self._cipher.opened)
        else:
            kind, body = self._control.popleft()
        record = self._cipher.seal(kind, body)
        await self._transport_send(record)
        self._bytes_out += len(record)

    async def _send_data(self, size: int) -> None:
        record, finished = self._seal_data(size)
        await self._transport_send(record)
        self._data_sent(record, finished)

    def _data_size(self) -> int:
        """Stream bytes the next DATA record may carry now (0: wait for an ack): what the window
        allows, unless the transport may be full (:meth:`_transport_full`)."""
        if self._transport_full():
            return 0
        return self._window.record_size(self._outbox.bytes)

    def _transport_full(self) -> bool:
        """Whether ``unacked_records_limit`` records of any kind (DATA, ACK, PING, PONG) are handed
        over and not yet acknowledged, so another DATA record could be discarded. Counted only while
        DATA is in flight: only DATA draws an ACK, and that ACK covers every record sealed before it.
        Control records never wait for it: they are few, and one sent after a lost record shows the
        peer the gap at once (it then connects again) rather than after the keepalive's silence."""
        limit = self._unacked_limit
        return (
            limit is not None
            and self._window.records_in_flight > 0
            and self._cipher.sealed - self._window.acked_records >= limit
        )

    def _seal_data(self, size: int) -> tuple[bytes, int]:
        """The next DATA record of ``size`` stream bytes, counted in flight before an ack can come."""
        chunk, finished = self._outbox.take(size)
        self._room.set()
        counter = self._cipher.sealed
        record = self._cipher.seal(RecordKind.DATA, chunk)
        self._window.on_sent(counter, len(chunk), finished, self._clock())
        return record, finished

    def _data_sent(self, record: bytes, finished: int) -> None:
        self._bytes_out += len(record)
        self._frames_out += finished
        self._data_sent_at = self._clock()

    async def _keepalive(self) -> None:
        self._ping()  # at once: the peer learns this side's interval, and the first round trip
        while not self.closed:
            await asyncio.sleep(self.keepalive_interval())
            silent = self._clock() - self._last_received
            dead_after = self.dead_after()
            if silent > dead_after:
                self.close(
                    f"no answer for {silent:.1f} s (keepalive, {self._misses} missed; "
                    f"{dead_after:.1f} s allowed with what was in flight)"
                )
                return
            if not self.pings():
                continue  # the peer pings at its slower pace; this side watches its silence
            if self._window.in_flight and self._clock() - self._last_answer < self._interval:
                continue  # acks are answering: no need to ask
            if self._quietly_alive():
                continue
            self._ping()

    def _quietly_alive(self) -> bool:
        """DATA went to the peer and something came from it within the interval: each side heard
        the other, as a PING and its PONG would show (an idle phone's beacons and their ACKs)."""
        now, interval = self._clock(), self.keepalive_interval()
        sent = self._data_sent_at
        return sent is not None and now - sent < interval and now - self._last_received < interval

    def _ping(self) -> None:
        if len(self._pings) >= _MAX_OUTSTANDING_PINGS:
            self._pings.pop(next(iter(self._pings)))
        self._pings[self._next_ping] = self._clock()
        if len(self._control) < _MAX_CONTROL:
            self._control.append((RecordKind.PING, encode_ping(self._next_ping, self._interval)))
            self._wakeup.set()
        self._next_ping += 1
