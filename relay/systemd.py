"""systemd's notify protocol (sd_notify(3)) with the standard library: no libsystemd, no dependency.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (an AF_UNIX datagram socket, a path or an
abstract name written ``@name``) and, with ``WatchdogSec=``, ``WATCHDOG_USEC``. The daemon sends
``READY=1`` once the node runs, ``WATCHDOG=1`` at half the watchdog interval from a task on its event
loop (so a wedged loop stops the pings and systemd restarts the node), and ``STOPPING=1`` on the
way out. Without ``NOTIFY_SOCKET`` (started by hand, or ``Type=simple``) there is no notifier.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from relay.errors import Mesh112Error

log = logging.getLogger(__name__)


class NotifyError(Mesh112Error):
    """The notify socket systemd named cannot be used."""


@dataclass(frozen=True, slots=True)
class Notifier:
    """Where to send notifications, and how often the watchdog wants to hear from us."""

    address: str  # a filesystem path, or "\0name" for an abstract socket
    watchdog_interval_s: float | None  # None: no watchdog for this process

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier | None:
        """The notifier systemd asked for through the environment, or None when not under Type=notify."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if not address:
            return None
        if address.startswith("@"):
            address = "\0" + address[1:]
        elif not address.startswith("/"):
            raise NotifyError(
                f"NOTIFY_SOCKET={address!r}: only AF_UNIX sockets (a path or @name) are supported"
            )
        interval = None
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            interval = int(usec) / 2e6  # sd_watchdog_enabled(3): ping at half the interval
        return cls(address, interval)

    def notify(self, *assignments: str) -> None:
        """Send ``KEY=value`` lines in one datagram; OSError if systemd's socket is gone."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(1.0)  # a datagram to a live systemd never waits; a stuck one must not hang us
            sock.sendto("\n".join(assignments).encode(), self.address)

    async def watchdog(self) -> None:
        """Ping the watchdog until cancelled; a failed ping is logged and the next one tried."""
        assert self.watchdog_interval_s is not None
        while True:
            try:
                self.notify("WATCHDOG=1")
            except OSError as exc:
                log.warning("systemd watchdog ping failed: %s", exc)
            await asyncio.sleep(self.watchdog_interval_s)
