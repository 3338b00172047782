"""aiortc <-> aiortc in separate processes (real nodes, real SQLite stores) through a UDP shaper
the test owns: the shaper's address is put into the candidates, so every packet crosses it. The
test is the signalling channel. Bundles survive a path change (ICE restart) and a kill -9 of
either end with nothing lost and nothing delivered twice."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aioice.ice import get_host_addresses
from engine_net import Deployment
from udp_shaper import Shaping, UdpShaper

from relay.links.webrtc_signal import Candidate, SignalType, decode, encode

WORKER = Path(__file__).with_name("webrtc_worker.py")
TIMING = {"keepalive_interval": 0.3, "keepalive_misses": 4, "connect_timeout": 3.0}
PATH = Shaping(rate=32_000.0, delay=0.02, loss=0.02)  # 256 kbit/s, 20 ms, 2 % loss each way


class Worker:
    """One node process; its lines are kept, SIGNAL lines handed to ``on_signal``."""

    def __init__(self, directory: Path, name: str, peer: str, dial: bool, field: Field) -> None:
        self.directory, self.name, self.peer, self.dial, self.field = directory, name, peer, dial, field
        self.proc: asyncio.subprocess.Process | None = None
        self.lives: list[list[list[str]]] = []  # the lines of each run of the process
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        args = [str(WORKER), str(self.directory), self.name, self.peer, "--timing", json.dumps(TIMING)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(WORKER.parent.parent), str(WORKER.parent)])}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, *args, *(["--dial"] if self.dial else []),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        self.lives.append([])
        self._reader = asyncio.create_task(self._read(self.proc, self.lives[-1]))

    async def _read(self, proc: asyncio.subprocess.Process, lines: list[list[str]]) -> None:
        assert proc.stdout is not None
        while raw := await proc.stdout.readline():
            words = raw.decode().split()
            lines.append(words)
            if words and words[0] == "SIGNAL":
                self.field.route(self, words[1])

    def tell(self, *words: object) -> None:
        if self.proc is None or self.proc.returncode is not None or self.proc.stdin is None:
            return  # a dead process misses it; the dialler offers again
        self.proc.stdin.write((" ".join(map(str, words)) + "\n").encode())

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None and self.proc.stdin is not None:
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.kill9()
        await self.proc.wait()
        if self._reader is not None:
            await self._reader

    def said(self, word: str) -> list[str]:
        return [line[1] for life in self.lives for line in life if line and line[0] == word and len(line) > 1]

    def count(self, word: str) -> int:
        return sum(1 for life in self.lives for line in life if line and line[0] == word)


class Field:
    """Two worker processes, the shaper between them, and the test as their signalling channel."""

    def __init__(self, directory: Path) -> None:
        self.host = get_host_addresses(use_ipv4=True, use_ipv6=False)[0]
        self.post = Worker(directory, "post", "field", False, self)
        self.unit = Worker(directory, "field", "post", True, self)  # the field unit offers
        self.shaper = UdpShaper(self.host, PATH)
        self.old_paths: list[UdpShaper] = []
        self.signal_sizes: list[int] = []

    def route(self, sender: Worker, data: str) -> None:
        """Put the shaper's address into the candidates (they are unsigned) and pass the signal on."""
        wire = base64.b64decode(data)
        self.signal_sizes.append(len(wire))
        signal = decode(wire)
        real = next(((c.address, c.port) for c in signal.candidates if c.address == self.host), None)
        if signal.type is SignalType.OFFER:
            self.shaper.a_real, via = real, self.shaper.port_a
        else:
            self.shaper.b_real, via = real, self.shaper.port_b
        rewritten = dataclasses.replace(signal, candidates=(Candidate(self.host, via),))
        target = self.post if sender is self.unit else self.unit
        target.tell("SIGNAL", base64.b64encode(encode(rewritten)).decode())

    async def change_path(self) -> None:
        """The old path goes dark; the next offer is routed over a new one."""
        old = self.shaper
        old.blackhole = True
        self.old_paths.append(old)
        self.shaper = UdpShaper(self.host, PATH, seed=len(self.old_paths) + 1)
        await self.shaper.start()


@pytest.fixture
async def field(tmp_path: Path) -> AsyncIterator[Field]:
    net = Deployment()
    (tmp_path / "authority.pub").write_bytes(net.authority.public.encode())
    for name in ("post", "field"):
        identity, certificate = net.enrol(name)
        (tmp_path / f"{name}.key").write_bytes(identity.private_bytes())
        (tmp_path / f"{name}.cert").write_bytes(certificate.encode())
    world = Field(tmp_path)
    await world.shaper.start()
    await world.post.start()
    await world.unit.start()
    yield world
    await asyncio.gather(world.unit.stop(), world.post.stop())
    for shaper in [*world.old_paths, world.shaper]:
        shaper.stop()


async def until(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


def check_exactly_once(world: Field, expected: set[str]) -> None:
    """Every claimed bundle arrived; one delivered twice only if its first delivery was never
    acknowledged (the receiver was killed between the two: that is the store's contract)."""
    got = Counter(world.post.said("GOT"))
    assert set(got) == expected, (
        f"lost: {sorted(expected - set(got))[:5]} extra: {sorted(set(got) - expected)[:5]}"
    )
    for payload, times in got.items():
        if times > 1:
            acked_lives = [life for life in world.post.lives if ["ACKED", payload] in life]
            assert len(acked_lives) <= 1 and times - 1 <= len(world.post.lives) - 1, payload
    assert sorted(world.post.said("ACKED")) == sorted(set(world.post.said("ACKED"))), "acknowledged twice"


async def test_bundles_cross_a_shaped_path_and_survive_a_path_change(field: Field) -> None:
    await until(lambda: field.unit.count("UP") and field.post.count("UP"), 15, "the data channel")
    assert max(field.signal_sizes) <= 200
    field.unit.tell("SEND", 150, "a")
    await until(lambda: len(field.post.said("GOT")) >= 50, 30, "50 bundles")
    await field.change_path()
    await until(lambda: field.unit.count("UP") >= 2, 20, "the ICE restart on the new path")
    expected = {f"a{i}" for i in range(150)}
    await until(lambda: set(field.post.said("GOT")) >= expected, 60, "all 150 bundles")
    await asyncio.sleep(1.0)
    check_exactly_once(field, expected)
    assert field.shaper.directions["to_b"].passed > 0 and field.old_paths[0].directions["to_b"].passed > 0


@pytest.mark.parametrize("victim", ["unit", "post"])
async def test_a_kill_9_of_either_end_loses_nothing_and_delivers_nothing_twice(
    field: Field, victim: str
) -> None:
    await until(lambda: field.unit.count("UP") and field.post.count("UP"), 15, "the data channel")
    field.unit.tell("SEND", 200, "k")
    await until(lambda: len(field.post.said("GOT")) >= 60, 30, "60 bundles")
    worker: Worker = getattr(field, victim)
    worker.kill9()
    await worker.stop()
    await worker.start()
    if victim == "unit":
        sent = set(field.unit.said("SENT"))  # claims made before the kill: durable, must arrive
        field.unit.tell("SEND", 20, "after")
        expected = sent | {f"after{i}" for i in range(20)}
    else:
        await until(lambda: len(field.unit.said("SENT")) == 200, 30, "the sender's 200 claims")
        expected = {f"k{i}" for i in range(200)}
    await until(lambda: set(field.post.said("GOT")) >= expected, 90, "every claimed bundle")
    await asyncio.sleep(1.0)
    check_exactly_once(field, expected)
    assert field.unit.count("UP") >= 2
