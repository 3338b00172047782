"""One authenticated IP connection to one peer: outbound queue, batching sender, keepalive, counters.

The session owns no socket: it gets a ``transport_send`` coroutine and a ``transport_close``
callable from :mod:`relay.links.ip`, so it works the same for dialled and accepted connections.
All sealing happens in the single sender task, which keeps record counters in sending order.
Control records (PING/PONG) go ahead of data so keepalives are not stuck behind a full batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from relay.links.base import LinkError
from relay.links.ip_records import (
    BATCH_TARGET,
    RecordError,
    RecordKind,
    SessionCipher,
    decode_ping,
    encode_ping,
    pack_frames,
    unpack_frames,
)

log = logging.getLogger(__name__)

_FRAME_OVERHEAD = 4  # the length prefix of a frame inside a batch
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
        keepalive_interval: float,
        keepalive_misses: int,
        queue_limit_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.peer = peer
        self._cipher = cipher
        self._transport_send = transport_send
        self._transport_close = transport_close
        self._on_frame = on_frame
        self._on_closed = on_closed
        self._interval = keepalive_interval
        self._misses = keepalive_misses
        self._limit = queue_limit_bytes
        self._clock = clock
        self._queue: deque[bytes] = deque()
        self._queue_bytes = 0
        self._control: deque[tuple[RecordKind, bytes]] = deque()
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_received = clock()
        self._pings: dict[int, float] = {}
        self._next_ping = 0
        self._rtts: deque[float] = deque(maxlen=_RTT_SAMPLES)
        self._bytes_in = self._bytes_out = self._frames_in = self._frames_out = self._refused = 0
        self.closed = False
        self.close_reason = ""

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._sender()), asyncio.create_task(self._keepalive())]

    async def enqueue(self, frame: bytes) -> None:
        """Queue one frame; waits while the queue is over its byte bound (backpressure)."""
        while self._queue_bytes >= self._limit and not self.closed:
            self._room.clear()
            await self._room.wait()
        if self.closed:
            raise LinkError(f"connection to peer closed: {self.close_reason}")
        self._queue.append(frame)
        self._queue_bytes += len(frame)
        self._wakeup.set()

    def adopt_queue(self, other: PeerSession) -> None:
        """Take over the unsent frames of a connection this one replaces."""
        while other._queue:
            frame = other._queue.popleft()
            other._queue_bytes -= len(frame)
            self._queue.append(frame)
            self._queue_bytes += len(frame)
        self._wakeup.set()

    def on_record(self, record: bytes) -> None:
        """Handle one received record; a refused record is counted and dropped, the session goes on."""
        if self.closed:
            return
        try:
            kind, body = self._cipher.open(record)
        except RecordError as exc:
            self._refused += 1
            log.warning("refused a record from %s: %s", self.peer.hex()[:8], exc)
            return
        self._last_received = self._clock()
        self._bytes_in += len(record)
        if kind is RecordKind.DATA:
            try:
                frames = unpack_frames(body)
            except RecordError as exc:  # authentic but malformed: the peer is broken, not an attacker
                self._refused += 1
                self.close(f"peer sent a malformed batch: {exc}")
                return
            self._frames_in += len(frames)
            for frame in frames:
                self._on_frame(frame)
        elif kind is RecordKind.PING:
            if len(self._control) < _MAX_CONTROL:
                self._control.append((RecordKind.PONG, body))
                self._wakeup.set()
        else:
            self._on_pong(body)

    def _on_pong(self, body: bytes) -> None:
        try:
            sent = self._pings.pop(decode_ping(body), None)
        except RecordError:
            self._refused += 1
            return
        if sent is not None:
            self._rtts.append(self._clock() - sent)

    def close(self, reason: str) -> None:
        """Stop everything and tell the link once; unsent frames are dropped, never reported as sent."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
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
            queue_frames=len(self._queue),
            queue_bytes=self._queue_bytes,
        )

    def _take_batch(self) -> list[bytes]:
        batch = [self._queue.popleft()]
        size = _FRAME_OVERHEAD + len(batch[0])
        while self._queue and size + _FRAME_OVERHEAD + len(self._queue[0]) <= BATCH_TARGET:
            frame = self._queue.popleft()
            size += _FRAME_OVERHEAD + len(frame)
            batch.append(frame)
        self._queue_bytes -= size - _FRAME_OVERHEAD * len(batch)
        self._room.set()
        return batch

    async def _sender(self) -> None:
        try:
            while not self.closed:
                await self._wakeup.wait()
                self._wakeup.clear()
                while (self._control or self._queue) and not self.closed:
                    if self._control:
                        kind, body = self._control.popleft()
                        await self._send_record(kind, body)
                    else:
                        batch = self._take_batch()
                        await self._send_record(RecordKind.DATA, pack_frames(batch))
                        self._frames_out += len(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # pynng raises its own exception types when the pipe dies
            self.close(f"send failed: {exc}")

    async def _send_record(self, kind: RecordKind, body: bytes) -> None:
        record = self._cipher.seal(kind, body)
        await self._transport_send(record)
        self._bytes_out += len(record)

    async def _keepalive(self) -> None:
        deadline = self._interval * self._misses
        while not self.closed:
            await asyncio.sleep(self._interval)
            silent = self._clock() - self._last_received
            if silent > deadline:
                self.close(f"no answer for {silent:.1f} s (keepalive, {self._misses} missed)")
                return
            if len(self._pings) >= _MAX_OUTSTANDING_PINGS:
                self._pings.pop(next(iter(self._pings)))
            self._pings[self._next_ping] = self._clock()
            if len(self._control) < _MAX_CONTROL:
                self._control.append((RecordKind.PING, encode_ping(self._next_ping)))
                self._wakeup.set()
            self._next_ping += 1
