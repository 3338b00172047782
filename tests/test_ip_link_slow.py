"""Two real IpLinks on 127.0.0.1 through a path far slower than their configured bitrate.

The link must stay up (a slow path that keeps acknowledging is alive), deliver everything once and
in order, let a FLASH frame overtake a BULK backlog within about one window, and pace to ``bitrate``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import pytest
from impair_proxy import ImpairProxy
from test_ip_link import NOW, Pair, connected_pair

from crypto.certificate import Authority
from relay.links.ip import IpLink

DELAY = 0.05  # seconds each way
RECORD_OVERHEAD = 1.2  # record header, tag and pynng length (33 B) on records of 256 B or more


@pytest.fixture(scope="module")
def authority() -> Authority:
    return Authority.generate(now=NOW - 100_000)


class PriorityFeeder:
    """What the node does with a link (relay/node.py): one ``send()`` at a time, always the most
    urgent frame it holds. FLASH frames go before any BULK frame not yet handed to the link."""

    def __init__(self, pair: Pair) -> None:
        self._pair = pair
        self.flash: deque[bytes] = deque()
        self.bulk: deque[bytes] = deque()

    async def run(self) -> None:
        while self.flash or self.bulk:
            frame = self.flash.popleft() if self.flash else self.bulk.popleft()
            await self._pair.dialler.send(self._pair.listener.node_id, frame)


def window_peak(pair: Pair, peak: int) -> int:
    return max(peak, pair.dialler.metrics().peers[0].window_bytes)


async def run_backlog(links: list[IpLink], authority: Authority, proxy: ImpairProxy, backlog: int) -> None:
    bandwidth = 2000.0
    proxy.delay, proxy.bandwidth = DELAY, bandwidth  # slow from the start, handshake included
    pair = await connected_pair(links, authority, dial=proxy.via)  # default keepalive: 1 s × 3
    feeder = PriorityFeeder(pair)
    feeder.bulk.extend(b"bulk %06d " % i + b"." * 488 for i in range(backlog // 500))
    feeding = asyncio.create_task(feeder.run())
    received = pair.at_listener.frames
    peak = 0
    try:
        async with asyncio.timeout(backlog / bandwidth / 4 + 10):
            while len(received) < len(feeder.bulk) // 4:  # a quarter of the way in
                peak = window_peak(pair, peak)
                await asyncio.sleep(0.2)
        flash = b"FLASH: fire alarm, building 7"
        feeder.flash.append(flash)
        enqueued = time.monotonic()
        async with asyncio.timeout(30):
            while (pair.dialler.node_id, flash) not in received:
                peak = window_peak(pair, peak)
                await asyncio.sleep(0.05)
        latency = time.monotonic() - enqueued
        # Ahead of the FLASH frame: the frame whose send() was waiting, the link's queue (at most a
        # window) and what is in flight (at most a window), each record with its overhead.
        ahead = RECORD_OVERHEAD * (2 * peak + 2 * 500)
        bound = ahead / bandwidth + 4 * DELAY + 1.0  # + the keepalive records sharing the path
        print(f"FLASH after {latency:.2f} s (bound {bound:.2f} s), window peak {peak} B")
        assert latency < bound, f"FLASH took {latency:.1f} s, window peaked at {peak} B"
        assert peak <= 3 * bandwidth, peak  # about a second of the path, not the configured bitrate
        async with asyncio.timeout(backlog * RECORD_OVERHEAD / bandwidth + 30):
            await feeding
            while len(received) < backlog // 500 + 1:
                await asyncio.sleep(0.2)
    finally:
        feeding.cancel()
    frames = [frame for _, frame in received]
    assert frames.count(flash) == 1
    frames.remove(flash)
    assert frames == [b"bulk %06d " % i + b"." * 488 for i in range(backlog // 500)]  # once, in order
    assert pair.at_dialler.count("down") == 0 and pair.at_listener.count("down") == 0
    assert pair.at_dialler.count("up") == 1 and pair.at_listener.count("up") == 1
    assert pair.dialler.metrics().peers[0].records_refused == 0


@pytest.mark.timeout(120)
async def test_slow_path_with_a_backlog_stays_up_and_flash_overtakes(
    links: list[IpLink], authority: Authority, proxy: ImpairProxy
) -> None:
    await run_backlog(links, authority, proxy, backlog=40_000)  # 20 s of the path


@pytest.mark.long
@pytest.mark.timeout(400)
async def test_slow_path_with_a_200_kb_backlog_stays_up_and_flash_overtakes(
    links: list[IpLink], authority: Authority, proxy: ImpairProxy
) -> None:
    await run_backlog(links, authority, proxy, backlog=200_000)  # 100 s of the path


@pytest.mark.timeout(60)
async def test_a_300_byte_per_second_path_still_carries_small_frames(
    links: list[IpLink], authority: Authority, proxy: ImpairProxy
) -> None:
    proxy.delay, proxy.bandwidth = DELAY, 300.0
    pair = await connected_pair(links, authority, dial=proxy.via)
    frames = [b"position %d: 48.1374,11.5755" % i for i in range(5)]
    for frame in frames:
        await pair.dialler.send(pair.listener.node_id, frame)
        await pair.listener.send(pair.dialler.node_id, b"ack " + frame)
    await pair.at_listener.until(lambda: len(pair.at_listener.frames) == len(frames), timeout=20)
    await pair.at_dialler.until(lambda: len(pair.at_dialler.frames) == len(frames), timeout=20)
    await asyncio.sleep(4)  # more than the 3 s keepalive timeout of an idle path
    assert [f for _, f in pair.at_listener.frames] == frames
    assert [f for _, f in pair.at_dialler.frames] == [b"ack " + f for f in frames]
    assert pair.at_dialler.log[0][0] == "up" and pair.at_dialler.count("down") == 0
    assert pair.at_listener.count("down") == 0


@pytest.mark.timeout(30)
async def test_the_sender_paces_to_a_bitrate_below_the_path(
    links: list[IpLink], authority: Authority
) -> None:
    bitrate = 20_000.0
    pair = await connected_pair(links, authority, bitrate=bitrate)  # loopback: far faster
    frames = [bytes([i]) * 1000 for i in range(60)]
    started = time.monotonic()
    for frame in frames:
        await pair.dialler.send(pair.listener.node_id, frame)
    await pair.at_listener.until(lambda: len(pair.at_listener.frames) == len(frames), timeout=20)
    elapsed = time.monotonic() - started
    stream = sum(4 + len(f) for f in frames)
    first_record = bitrate * 2.0 / 4  # a quarter of the largest window goes before pacing bites
    assert elapsed >= 0.9 * (stream - first_record) / bitrate, elapsed
    assert elapsed < stream / bitrate + 2.0, elapsed
    assert [f for _, f in pair.at_listener.frames] == frames
