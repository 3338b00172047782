"""The IP link's send window, frame stream and ACK records, sans-I/O (real crypto, no sockets)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.links.base import LinkError
from relay.links.ip_records import (
    MAX_FRAME,
    MAX_KEEPALIVE_S,
    FrameQueue,
    FrameReassembler,
    RecordError,
    RecordKind,
    SessionCipher,
    decode_ack,
    decode_ping,
    encode_ack,
    encode_ping,
)
from relay.links.ip_session import INLINE_AFTER_QUIET_S, PeerSession
from relay.links.ip_window import MIN_RECORD, MIN_WINDOW, TARGET_QUEUE_S, WINDOW_CAP_S, SendWindow

FRAMES = st.lists(st.binary(min_size=1, max_size=700), min_size=1, max_size=40)


@given(FRAMES, st.lists(st.integers(1, 2000), min_size=1, max_size=20))
def test_any_slicing_of_the_stream_gives_back_the_frames(frames: list[bytes], cuts: list[int]) -> None:
    queue, reassembler = FrameQueue(), FrameReassembler()
    for frame in frames:
        queue.append(frame)
    received: list[bytes] = []
    finished_total, turn = 0, 0
    while queue.bytes:
        before = queue.bytes
        chunk, finished = queue.take(cuts[turn % len(cuts)])
        assert 0 < len(chunk) <= cuts[turn % len(cuts)] and queue.bytes == before - len(chunk)
        finished_total += finished
        received += reassembler.feed(chunk)
        assert len(received) == finished_total  # "finished" counts exactly the frames a record completes
        turn += 1
    assert received == frames and reassembler.pending == 0 and len(queue) == 0


@given(st.binary(max_size=3000), st.integers(1, 500))
def test_hostile_stream_bytes_are_refused_or_parsed_with_bounded_memory(data: bytes, cut: int) -> None:
    reassembler = FrameReassembler()
    try:
        for start in range(0, len(data), cut):
            for frame in reassembler.feed(data[start : start + cut]):
                assert 0 < len(frame) <= MAX_FRAME
            assert reassembler.pending < 4 + MAX_FRAME
    except RecordError as exc:
        assert "frame length" in str(exc)


def test_stream_refuses_bad_lengths_as_soon_as_they_arrive() -> None:
    with pytest.raises(RecordError, match="frame length 0"):
        FrameReassembler().feed(b"\x00\x00\x00\x00")
    with pytest.raises(RecordError, match="frame length"):
        FrameReassembler().feed((MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(RecordError, match="empty"):
        FrameReassembler().feed(b"")
    with pytest.raises(RecordError, match="outside"):
        FrameQueue().append(b"")


def test_frames_not_yet_started_move_to_a_new_connection() -> None:
    queue = FrameQueue()
    for frame in (b"a" * 100, b"b" * 100, b"c" * 100):
        queue.append(frame)
    chunk, finished = queue.take(50)  # the first frame is started, not finished
    assert finished == 0 and len(chunk) == 50
    assert queue.take_unstarted() == ([b"b" * 100, b"c" * 100], 0)
    assert queue.bytes == 104 - 50 and len(queue) == 1
    rest, finished = queue.take(1000)
    assert finished == 1 and FrameReassembler().feed(chunk + rest) == [b"a" * 100]


@given(st.binary(max_size=20))
def test_hostile_ack_bodies_are_refused(body: bytes) -> None:
    if len(body) == 8:
        assert encode_ack(decode_ack(body)) == body
    else:
        with pytest.raises(RecordError, match="ack body"):
            decode_ack(body)


@given(st.binary(max_size=20))
def test_hostile_ping_bodies_are_refused_or_announce_a_bounded_keepalive(body: bytes) -> None:
    if len(body) != 12:
        with pytest.raises(RecordError, match="ping body"):
            decode_ping(body)
    elif body[8:] == bytes(4):
        with pytest.raises(RecordError, match="0 ms"):
            decode_ping(body)
    else:
        assert 0 < decode_ping(body)[1] <= MAX_KEEPALIVE_S


def test_a_peer_cannot_stretch_its_keepalive_beyond_the_cap() -> None:
    """Its silence is believed for three intervals and its routes live three: a day would keep a
    dead peer up and its routes alive for three days."""
    assert decode_ping(encode_ping(7, 60.0)) == (7, 60.0)  # a phone on battery
    assert decode_ping(encode_ping(7, 86_400.0)) == (7, MAX_KEEPALIVE_S)


def window(rate: float = 2000.0, rtt: float = 0.1, bitrate: float = 10_000_000.0) -> SendWindow:
    return SendWindow(bitrate, rtt, int(rate * rtt), now=0.0)


def test_the_first_window_is_a_second_of_what_the_handshake_showed() -> None:
    slow = window(rate=2000, rtt=0.2)
    assert slow.window == int(2000 * (0.2 + TARGET_QUEUE_S))
    assert window(rate=100, rtt=0.5).window == MIN_WINDOW
    assert window(rate=1e9, rtt=0.001, bitrate=50_000).window == int(50_000 * WINDOW_CAP_S)


def test_a_slow_path_keeps_the_window_near_a_second_of_its_rate() -> None:
    """Simulate a 2 kB/s bottleneck with 50 ms of delay each way: records leave as the window
    allows and are acknowledged when the bottleneck has carried them."""
    rate, delay = 2000.0, 0.05
    path = window(rate=5000, rtt=0.15)  # the handshake overestimated the path
    now, link_free, sealed = 0.0, 0.0, 0
    arrivals: list[tuple[float, int]] = []  # (ack time, records received by then)
    for _ in range(2000):
        size = path.record_size(1_000_000)
        if size:
            path.on_sent(sealed, size, 1, now)
            sealed += 1
            link_free = max(link_free, now + delay) + size / rate
            arrivals.append((link_free + delay, sealed))
            continue
        now, received = arrivals.pop(0)
        path.on_ack(received, sealed, now)
        assert path.in_flight <= path.window + MIN_RECORD or path.in_flight <= 64 * 1024
    queueing = path.in_flight / rate
    assert 0.5 < path.window / rate < 2.0, path.window  # about a second of the path, not megabytes
    assert queueing < 2.0 and path.metrics().delivery_rate == pytest.approx(rate, rel=0.25)
    assert path.patience() < 3.0


def test_a_fast_path_opens_the_window_to_its_cap() -> None:
    fast = window(rate=500_000, rtt=0.002, bitrate=1_000_000)
    now = 0.0
    for counter in range(200):
        size = fast.record_size(10_000_000)
        fast.on_sent(counter, size, 1, now)
        now += size / 50_000_000 + 0.001
        fast.on_ack(counter + 1, counter + 1, now)
    assert fast.window == int(1_000_000 * WINDOW_CAP_S)
    assert fast.patience() < 0.1  # a blackhole is noticed about as fast as on an idle link


def test_pacing_spaces_records_by_their_size_over_the_bitrate() -> None:
    paced = window(rate=1e6, rtt=0.01, bitrate=1000)
    paced.on_sent(0, 500, 1, now=10.0)
    assert paced.pace_delay(10.0) == pytest.approx(0.5)
    assert paced.pace_delay(10.6) == 0.0


@given(st.lists(st.integers(0, 2**64 - 1), max_size=20))
def test_impossible_acks_are_refused_and_change_nothing(acks: list[int]) -> None:
    flow = window()
    for counter in range(3):
        flow.on_sent(counter * 2, 300, 1, now=0.0)  # records 0, 2, 4 are DATA; 1, 3, 5 are control
    sealed = 6
    best = 0
    for ack in acks:
        before = flow.metrics()
        if ack > sealed or ack < best:
            with pytest.raises(RecordError, match="ack of"):
                flow.on_ack(ack, sealed, now=1.0)
            assert flow.metrics() == before
        else:
            flow.on_ack(ack, sealed, now=1.0)
            best = ack
        assert 0 <= flow.in_flight <= 900 and flow.window >= MIN_WINDOW


class Wire:
    """A transport that keeps what the session sends."""

    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.sent = asyncio.Event()

    async def send(self, record: bytes) -> None:
        self.records.append(record)
        self.sent.set()


def _fast_session(
    cipher: SessionCipher,
    send: Callable[[bytes], Awaitable[None]],
    *,
    try_send: Callable[[bytes], bool] | None = None,
    on_closed: Callable[[PeerSession, str], None] = lambda s, reason: None,
    unacked_records_limit: int | None = None,
) -> PeerSession:
    """A session on a fast path (10 MB/s, 10 ms) whose records go to ``send`` (and ``try_send``)."""
    return PeerSession(
        b"\x02" * 16,
        cipher,
        send,
        lambda: None,
        on_frame=lambda frame: None,
        on_closed=on_closed,
        transport_try_send=try_send,
        keepalive_interval=60.0,
        keepalive_misses=3,
        queue_limit_bytes=256 * 1024,
        window=SendWindow(10_000_000.0, 0.01, 100_000, now=time.monotonic()),
        unacked_records_limit=unacked_records_limit,
    )


async def test_a_session_with_a_record_limit_waits_for_acks_beyond_it() -> None:
    """A listener's transport discards what its queue has no room for: while DATA is in flight, DATA
    waits once the limit of records of any kind is unacknowledged, however much the window allows;
    control records do not wait, and count."""
    ours, peers = SessionCipher(b"o" * 32, b"p" * 32), SessionCipher(b"p" * 32, b"o" * 32)
    wire = Wire()
    session = _fast_session(ours, wire.send, unacked_records_limit=3)
    session.start()
    opened: list[RecordKind] = []

    async def settle() -> None:
        await asyncio.sleep(0.05)
        opened.extend(peers.open(record)[0] for record in wire.records[len(opened) :])

    try:
        for _ in range(4):  # 240 kB: four records of at most 64 KiB, well inside the window
            await session.enqueue(b"f" * 60_000)
        await settle()
        assert sorted(opened) == [RecordKind.DATA, RecordKind.DATA, RecordKind.PING]  # the PING: at start
        session.on_record(peers.seal(RecordKind.PING, encode_ping(0, 60.0)))  # answered at once
        await settle()
        assert opened[3:] == [RecordKind.PONG]
        session.on_record(peers.seal(RecordKind.ACK, encode_ack(2)))  # one DATA and the PONG still out
        await settle()
        assert opened[4:] == [RecordKind.DATA]
        session.on_record(peers.seal(RecordKind.ACK, encode_ack(5)))
        await settle()
        assert opened.count(RecordKind.DATA) == 4
    finally:
        session.close("test over")


async def test_a_session_with_a_record_limit_answers_pings_while_no_data_is_in_flight() -> None:
    """Only DATA draws an ACK: with none in flight, the control records unacknowledged hold nothing
    back (they would otherwise for ever)."""
    ours, peers = SessionCipher(b"o" * 32, b"p" * 32), SessionCipher(b"p" * 32, b"o" * 32)
    wire = Wire()
    session = _fast_session(ours, wire.send, unacked_records_limit=3)
    session.start()
    try:
        for number in range(6):
            session.on_record(peers.seal(RecordKind.PING, encode_ping(number, 60.0)))
            await asyncio.sleep(0.02)
        kinds = [peers.open(record)[0] for record in wire.records]
        assert sorted(kinds) == [RecordKind.PING] + [RecordKind.PONG] * 6  # the PING: at start
        await session.enqueue(b"f" * 1000)  # DATA still goes: nothing of it is in flight
        await asyncio.sleep(0.05)
        assert peers.open(wire.records[-1])[0] is RecordKind.DATA
    finally:
        session.close("test over")


async def test_forged_and_impossible_acks_do_not_harm_the_session() -> None:
    ours, peers = SessionCipher(b"o" * 32, b"p" * 32), SessionCipher(b"p" * 32, b"o" * 32)
    wire, closed = Wire(), []
    session = _fast_session(ours, wire.send, on_closed=lambda s, reason: closed.append(reason))
    session.start()
    try:
        await session.enqueue(b"x" * 1000)
        async with asyncio.timeout(2):
            while session.metrics().in_flight_bytes == 0 or len(wire.records) < 2:
                await asyncio.sleep(0.01)
        # the DATA, and the PING that announces this side's keepalive interval at the start
        assert sorted(peers.open(r)[0] for r in wire.records) == [RecordKind.DATA, RecordKind.PING]
        forged = SessionCipher(b"m" * 32, b"m" * 32).seal(RecordKind.ACK, encode_ack(1))
        session.on_record(forged)  # a man on the path without the key
        session.on_record(peers.seal(RecordKind.ACK, encode_ack(5)))  # authentic, acks unsent records
        session.on_record(peers.seal(RecordKind.ACK, b"\x00" * 3))  # authentic, malformed
        state = session.metrics()
        assert state.records_refused == 3 and state.in_flight_bytes == 1004 and state.up
        session.on_record(peers.seal(RecordKind.ACK, encode_ack(2)))  # the real ack still works
        state = session.metrics()
        assert state.in_flight_bytes == 0 and state.frames_acked == 1 and state.records_refused == 3
        assert closed == []
    finally:
        session.close("test over")


async def test_a_record_after_lost_ones_ends_the_session_at_once() -> None:
    """nng's polyamorous Pair1 drops a record when the connection's send queue is full: every later
    record would be refused, and the window waited for acks until the keepalive gave up (3.9 s)."""
    ours, peers = SessionCipher(b"o" * 32, b"p" * 32), SessionCipher(b"p" * 32, b"o" * 32)
    closed: list[str] = []
    session = _fast_session(ours, Wire().send, on_closed=lambda s, reason: closed.append(reason))
    session.start()
    try:
        session.on_record(peers.seal(RecordKind.PING, encode_ping(0, 1.0)))
        peers.seal(RecordKind.ACK, encode_ack(0))  # dropped on the way
        forged = bytearray(peers.seal(RecordKind.ACK, encode_ack(0)))
        forged[-1] ^= 1
        session.on_record(bytes(forged))  # ahead but not the peer's: refused, the session goes on
        assert closed == [] and session.metrics().records_refused == 1
        session.on_record(peers.seal(RecordKind.PONG, encode_ping(0, 1.0)))  # the peer's, after the gap
        assert len(closed) == 1 and "lost on the way" in closed[0]
        assert session.metrics().records_refused == 2 and not session.metrics().up
    finally:
        session.close("test over")


class NngWire(Wire):
    """A transport with nng's non-blocking hand-over, which can be told it has no room."""

    def __init__(self) -> None:
        super().__init__()
        self.room = True

    def try_send(self, record: bytes) -> bool:
        if self.room:
            self.records.append(record)
        return self.room


async def test_an_idle_session_sends_in_the_callers_turn_and_keeps_the_record_order() -> None:
    ours, peers = SessionCipher(b"o" * 32, b"p" * 32), SessionCipher(b"p" * 32, b"o" * 32)
    wire = NngWire()
    session = _fast_session(ours, wire.send, try_send=wire.try_send)
    session.start()
    try:
        async with asyncio.timeout(2):
            while not wire.records:  # the first PING goes through the sender task
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.01)  # the sender task parks: nothing to send
        await session.enqueue(b"a" * 100)
        assert len(wire.records) == 2  # no loop turn in between: sent inline
        await session.enqueue(b"z" * 100)  # right after a record: the sender task takes it, coalescing
        assert len(wire.records) == 2
        async with asyncio.timeout(2):
            while len(wire.records) < 3:
                await asyncio.sleep(0.001)
        await asyncio.sleep(INLINE_AFTER_QUIET_S)  # quiet again
        wire.room = False
        await session.enqueue(b"b" * 100)  # sealed inline, refused by nng: the sender task sends it
        wire.room = True
        await session.enqueue(b"c" * 100)  # queued behind it, never inline ahead of it
        async with asyncio.timeout(2):
            while len(wire.records) < 5:
                await asyncio.sleep(0.01)
        opened = [peers.open(record) for record in wire.records]  # counters in order, or open refuses
        assert [kind for kind, _ in opened] == [RecordKind.PING] + [RecordKind.DATA] * 4
        reassembler = FrameReassembler()
        frames = [frame for _, body in opened[1:] for frame in reassembler.feed(body)]
        assert frames == [b"a" * 100, b"z" * 100, b"b" * 100, b"c" * 100]
        assert session.metrics().frames_out == 4
    finally:
        session.close("test over")


@pytest.mark.long
@settings(max_examples=20_000, deadline=None)
@given(st.binary(max_size=5000), st.integers(1, 500))
def test_fuzz_hostile_stream_bytes_long(data: bytes, cut: int) -> None:
    test_hostile_stream_bytes_are_refused_or_parsed_with_bounded_memory.hypothesis.inner_test(data, cut)  # type: ignore[attr-defined]


def test_flash_frames_go_ahead_of_the_frames_not_yet_started() -> None:
    queue = FrameQueue()
    for frame in (b"a" * 100, b"b" * 100, b"c" * 100):
        queue.append(frame)
    chunk, _ = queue.take(50)  # "a" is started: it finishes first, whatever comes
    queue.append(b"F" * 10, ahead=True)
    queue.append(b"G" * 10, ahead=True)  # behind the FLASH frame that went ahead before it
    assert queue.ahead_bytes == 28 and queue.bytes == 3 * 104 - 50 + 28
    rest, finished = queue.take(10_000)
    assert finished == 5 and queue.bytes == 0 and queue.ahead_bytes == 0
    assert FrameReassembler().feed(chunk + rest) == [b"a" * 100, b"F" * 10, b"G" * 10, b"b" * 100, b"c" * 100]
    queue.append(b"x" * 10)
    queue.append(b"F" * 10, ahead=True)
    assert queue.take_unstarted() == ([b"F" * 10, b"x" * 10], 1) and queue.ahead_bytes == 0


async def test_a_flash_frame_does_not_wait_behind_a_full_queue() -> None:
    """A FLASH frame handed to a session whose queue holds a window of frames goes ahead of them at
    once; without it, it waited for the window's worth to leave (80 ms behind a 100 B backlog)."""
    ours, peers = SessionCipher(b"o" * 32, b"p" * 32), SessionCipher(b"p" * 32, b"o" * 32)
    wire = Wire()
    session = _fast_session(ours, wire.send)  # not started yet: nothing leaves the queue
    for index in range(10_000):
        try:
            await asyncio.wait_for(session.enqueue(b"r%05d" % index + b"." * 994), 0.05)
        except TimeoutError:
            break  # full: an ordinary frame waits for room
    assert 90 <= index < 10_000
    await asyncio.wait_for(session.enqueue(b"FLASH", flash=True), 0.05)  # at once
    session.start()
    try:
        opened: list[tuple[RecordKind, bytes]] = []
        async with asyncio.timeout(2):
            while not any(kind is RecordKind.DATA for kind, _ in opened):
                opened += map(peers.open, wire.records[len(opened) :])  # once each, in order
                await asyncio.sleep(0.01)
        data = next(body for kind, body in opened if kind is RecordKind.DATA)
        assert FrameReassembler().feed(data)[0] == b"FLASH"
    finally:
        session.close("test over")


async def test_a_frame_waiting_for_room_on_a_replaced_connection_goes_to_its_replacement() -> None:
    """A frame that found no room waits for it on the session it found. When the peer connects
    again, the new session adopts the old one's queue and wakes that wait: the frame must not go
    into the old session's emptied queue (behind a window nobody acknowledges, dropped unreported
    when the old one is retired, overtaken by the peer's later frames on the new connection). The
    replaced session refuses it; ``IpLink`` then hands it to the new one (found by the review of
    8e47368)."""
    old_cipher = SessionCipher(b"o" * 32, b"p" * 32)
    new_cipher = SessionCipher(b"O" * 32, b"P" * 32)
    old = _fast_session(old_cipher, Wire().send)  # not started: a stalled path, nothing leaves
    new = _fast_session(new_cipher, Wire().send)
    for index in range(10_000):
        if not old.offer(b"r%05d" % index + b"." * 994):
            break  # full
    waiting = asyncio.create_task(old.enqueue(b"parked" + b"." * 994))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    new.adopt_queue(old)  # the peer connected again
    try:
        async with asyncio.timeout(1):
            await waiting
    except LinkError:
        pass  # told to hand it over again: as good
    try:
        assert old.metrics().queue_frames == 0, "the parked frame stayed on the replaced connection"
    finally:
        old.close("test over")
        new.close("test over")
