"""The SOS from the first frame, before the node runs.

This module and what it imports are all the window needs for a live SOS button, so it loads in a
fraction of the node's imports (the relay stack comes afterwards, while the window is already up:
:mod:`mobile.runtime`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from mobile.appstore import AppStore
from mobile.state import AppState, Sos, SosPhase
from relay.position import Position

if TYPE_CHECKING:
    from mobile.responder import Responder

log = logging.getLogger("mesh112.mobile")


class EarlySos:
    """The SOS from the first frame, before the node runs: confirmed into the app's own table
    (durable there, fsynced) and handed to the node when the :class:`Responder` starts, as after a
    crash. ``gate`` orders the two: an SOS confirmed while the node starts is either restored by
    :meth:`Responder.start` or raised through the Responder, never lost between them."""

    def __init__(
        self,
        store: AppStore,
        state: AppState,
        position: Callable[[], Position | None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.state = store, state
        self._position, self._clock = position, clock
        self._gate = asyncio.Lock()
        self.responder: Responder | None = None

    async def restore(self) -> None:
        """The SOS of the last run (a live one is shown, and blocks a second)."""
        self.state.sos_restored(await self.store.latest_sos())

    async def raise_sos(self) -> Sos:
        """Durable in the app's table when this returns; in the node's store too once it runs."""
        async with self._gate:
            if self.responder is not None:
                return await self.responder.raise_sos()
            if self.state.sos is not None and self.state.sos.live:
                return self.state.sos
            fix = self._position()
            number = await self.store.next_sos_number()
            sos = Sos(
                number, SosPhase.CONFIRMED, self._clock(), fix.lat if fix else None, fix.lon if fix else None
            )
            await self.store.put_sos(sos)
            self.state.sos_confirmed(sos)
            log.info("SOS %d confirmed before the node runs: it goes when the node starts", number)
            return sos

    async def hand_over(self, responder: Responder) -> None:
        """Start the Responder (it sends an SOS confirmed here); from now on SOSes go through it."""
        async with self._gate:
            await responder.start()
            self.responder = responder
