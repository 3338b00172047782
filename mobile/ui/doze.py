"""Doze: when nothing happens the window draws no frames, and wakes the moment something does.

Kivy draws on a timer (60 frames a second) and reads input by polling the window system once per
frame, so an idle window would wake the process 60 times a second. After ``IDLE_AFTER_S`` without a
touch or a key the app dozes. On X11 the asyncio loop watches the X server's socket, and no frame is
drawn until the server sends something (a touch, an expose: full rate again) or the node has news
(a few frames to show it): the process sleeps. Where that socket cannot be found (Wayland, macOS,
Android, whose window is paused anyway while in the background) it draws one frame a second, which
still sees a touch within a second. Kivy's interruptible clock (``mobile/ui/__init__.py``) lets a
wake-up end the frame's sleep at once instead of at the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from collections.abc import Awaitable
from typing import Any

from kivy.cache import Cache
from kivy.clock import Clock

IDLE_AFTER_S = 10.0  # no touch and no news this long: doze
DOZE_FPS = 1.0  # without the X socket to watch
DEEP_DOZE_FPS = 1 / 300  # with it: anything that matters wakes the window through the socket
# Frames drawn for news while dozing: a layout settles over a frame or two (a label's new texture
# sets its height, which moves the box around it).
NEWS_FRAMES_S = (0.0, 0.1, 0.5)


def prepare_clock() -> None:
    """Two things Kivy 2.3's interruptible clock needs to sleep under asyncio.

    It waits for its wake-up event with ``asyncio.wait_for``, whose TimeoutError (a frame with
    nothing to do) it does not catch, so it crashes on the first idle frame (its trio path catches
    it); this wraps the ``init_async_lib`` that ``App.async_run`` calls. And its resolution follows
    the frame rate (a third of a frame), so while dozing any event due within minutes would count as
    due now and the loop would spin: it is fixed at that of 60 frames a second."""
    Clock.clock_resolution = 1 / 180
    initialise = Clock.init_async_lib

    def init_async_lib(lib: str) -> None:
        initialise(lib)
        if lib == "asyncio":
            Clock._async_wait_for = _wait_for

    Clock.init_async_lib = init_async_lib


async def _wait_for(awaitable: Awaitable[Any], timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(awaitable, timeout)


def x11_socket() -> int | None:
    """This process's connection to the X server (the window's), or None when there is none."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:  # not Linux
        return None
    for name in names:
        fd = int(name)
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            probe = socket.socket(fileno=os.dup(fd))
        except OSError:  # closed meanwhile (listdir's own fd)
            continue
        with probe:
            if probe.family != socket.AF_UNIX:
                continue
            try:
                peer = probe.getpeername()
            except OSError:
                continue
        if ".X11-unix/X" in (peer.decode(errors="replace") if isinstance(peer, bytes) else peer):
            return fd
    return None


class Doze:
    """Full frame rate while someone uses the app; asleep otherwise.

    Kivy has no public setter for its frame rate; ``Clock._max_fps`` is read on every tick."""

    def __init__(self) -> None:
        self._full_fps = float(Clock._max_fps)
        self._fd = x11_socket()
        self._watching = False
        interrupt = Clock.on_schedule
        # Only a dozing window's sleep is cut short by a new event. Awake, Kivy keeps its frame
        # rate: were every animation step and layout trigger to start a frame at once, frames would
        # follow each other without a pause and the loop's other work would wait behind them (an
        # SOS stored in 3 ms took 150-250 ms).
        Clock.on_schedule = lambda event: interrupt(event) if self.dozing else None
        self._event = Clock.schedule_once(self._doze, IDLE_AFTER_S)

    @property
    def dozing(self) -> bool:
        return bool(Clock._max_fps != self._full_fps)

    def news(self) -> None:
        """Something new to show: draw it now without waking to full rate (news comes with every
        status push; nobody may be looking)."""
        if self.dozing:
            for delay in NEWS_FRAMES_S:
                Clock.schedule_once(_draw, delay)

    def awake(self, *_args: Any) -> None:
        """A touch, a key, the X server: draw now at full rate, and doze again after ``IDLE_AFTER_S``."""
        if self._watching and self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
            self._watching = False
        if self.dozing:
            Clock.schedule_once(_draw, 0)  # while still dozing: this ends the long sleep
            Clock._max_fps = self._full_fps
            Clock.schedule_interval(Cache._purge_by_timeout, 1)  # as kivy.cache does on import
        self._event.cancel()
        self._event = Clock.schedule_once(self._doze, IDLE_AFTER_S)

    def _doze(self, _dt: float) -> None:
        Clock.unschedule(Cache._purge_by_timeout)  # Kivy's cache looks every second; nothing is added now
        if self._fd is None:
            Clock._max_fps = DOZE_FPS
            return
        Clock._max_fps = DEEP_DOZE_FPS
        asyncio.get_running_loop().add_reader(self._fd, self.awake)
        self._watching = True


def _draw(_dt: float) -> None:
    """Nothing to do: the frame this event causes is the point."""
