"""A small user-space TCP proxy on 127.0.0.1 that tests own, to impair a link between two real peers.

Knobs (change them at any time; they apply to data read from then on):

- ``delay`` seconds added to every chunk, each direction (order is kept, like a long path);
- ``bandwidth`` bytes per second, each direction (None: unlimited);
- ``reset_probability`` per forwarded chunk: TCP cannot lose bytes, so "loss" is modelled as the
  connection being reset (RST), which is what a cellular path does when it drops;
- ``blackhole``: connections are accepted but nothing is forwarded either way (a dead path that
  keeps its TCP state);
- ``reset_all()`` resets every open connection now; ``inject(data)`` writes raw bytes into every
  open connection towards the target (a man on the path).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time


class _Pipe:
    """Forwards one direction of one connection through a delay queue and a bandwidth cap."""

    def __init__(
        self, proxy: ImpairProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._proxy = proxy
        self._reader = reader
        self.writer = writer
        self._queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=256)

    async def read(self) -> None:
        while data := await self._reader.read(65536):
            if self._proxy.blackhole:
                continue
            if self._proxy.rng.random() < self._proxy.reset_probability:
                self._proxy.resets += 1
                raise ConnectionResetError("impair proxy: simulated loss")
            await self._queue.put((time.monotonic() + self._proxy.delay, data))

    async def write(self) -> None:
        while True:
            due, data = await self._queue.get()
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if self._proxy.bandwidth:
                await asyncio.sleep(len(data) / self._proxy.bandwidth)
            if self._proxy.blackhole:
                continue
            self.writer.write(data)
            await self.writer.drain()
            self._proxy.bytes_forwarded += len(data)


class ImpairProxy:
    """Listen on 127.0.0.1:``port`` (0: any free port) and forward to 127.0.0.1:``target_port``."""

    def __init__(self, target_port: int, *, seed: int = 1) -> None:
        self.target_port = target_port
        self.delay = 0.0
        self.bandwidth: float | None = None
        self.reset_probability = 0.0
        self.blackhole = False
        self.rng = random.Random(seed)
        self.port = 0
        self.resets = 0
        self.bytes_forwarded = 0
        self.connections_accepted = 0
        self._server: asyncio.Server | None = None
        self._connections: set[tuple[_Pipe, _Pipe]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.reset_all()  # every connection's workers then end, and with them their tasks
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self._server is not None:
            await self._server.wait_closed()

    def reset_all(self) -> None:
        for upstream, downstream in list(self._connections):
            upstream.writer.transport.abort()
            downstream.writer.transport.abort()
        self._connections.clear()

    def inject(self, data: bytes) -> int:
        """Write ``data`` towards the target on every open connection; returns how many."""
        for to_target, _ in self._connections:
            to_target.writer.write(data)
        return len(self._connections)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.transport.abort()
            return
        to_target = _Pipe(self, client_reader, server_writer)
        to_client = _Pipe(self, server_reader, client_writer)
        pair = (to_target, to_client)
        self._connections.add(pair)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        workers = [
            asyncio.create_task(c())
            for c in (to_target.read, to_target.write, to_client.read, to_client.write)
        ]
        try:
            await asyncio.wait(workers, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for worker in workers:
                worker.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*workers, return_exceptions=True)
            client_writer.transport.abort()
            server_writer.transport.abort()
            self._connections.discard(pair)
            self._tasks.discard(task)

    def via(self, target_port: int) -> str:
        """Point the proxy at ``target_port`` and return the address to dial instead."""
        self.target_port = target_port
        return self.address
