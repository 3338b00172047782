"""An impairment proxy the multi-process relay tests can drive from blocking code."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from impair_proxy import ImpairProxy


class ProxyThread:
    """An :class:`ImpairProxy` running on its own event loop in a thread, so blocking test code can
    start processes and poll journals while the proxy forwards. Knobs are plain attributes
    (``proxy.delay = ...``); actions that touch connections go through :meth:`call`."""

    def __init__(self, target_port: int, seed: int = 1) -> None:
        self.proxy = ImpairProxy(target_port, seed=seed)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="impair-proxy", daemon=True)

    def __enter__(self) -> ProxyThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def call(self, action: Callable[[], object]) -> None:
        self._loop.call_soon_threadsafe(action)
