"""A pseudo-terminal in front of an emulated device, so serial clients can use it too.

``meshtastic --port /dev/pts/N`` and ``LoRaLink`` with ``transport = "serial"`` open the pty's
path; the bridge copies bytes between the pty and the device's TCP stream API (the same framing runs
over serial). POSIX only.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import tty

POLL_S = 0.1
CHUNK = 4096


class PtyBridge:
    """Open with :meth:`start` (returns the pty path), close with :meth:`stop`."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.path = ""
        self._master = -1
        self._slave = -1
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self._sock = socket.create_connection((self.host, self.port), timeout=5)
        self._thread = threading.Thread(target=self._pump, daemon=True, name="emu-pty")
        self._thread.start()
        return self.path

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
        for fd in (self._master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = -1

    def _pump(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._master, sock.fileno()], [], [], POLL_S)
                if self._master in ready:
                    sock.sendall(os.read(self._master, CHUNK))
                if sock.fileno() in ready:
                    data = sock.recv(CHUNK)
                    if not data:
                        return
                    os.write(self._master, data)
            except OSError:
                return
