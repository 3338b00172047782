"""WebRTC signalling over the mesh: offers and answers as bundles when no server is reachable.

A signal fits one LoRa frame, so a data channel can be set up over LoRa alone. An offer asking for
SOS video travels as FLASH, every other signal as IMMEDIATE; both expire with the link's
``signal_max_age`` (a late signal is refused anyway). Whoever reads the node's inbox passes each
delivery to :meth:`MeshSignaller.handle`, which takes the signals and leaves the rest.
"""

from __future__ import annotations

import logging

from crypto.identity import display_id
from relay.apps import Sender
from relay.bundle import Destination, Kind, Priority
from relay.engine import Delivery
from relay.links.webrtc import WebRtcLink
from relay.links.webrtc_signal import SignalError

log = logging.getLogger(__name__)


class MeshSignaller:
    def __init__(self, sender: Sender, link: WebRtcLink) -> None:
        self._sender = sender
        self._link = link
        self.refused = 0  # signals that failed their checks (also counted by the link)
        link.signaller = self

    async def signal(self, peer: bytes, data: bytes, *, sos: bool) -> None:
        await self._sender.send(
            Destination.to_node(peer),
            data,
            kind=Kind.WEBRTC_SIGNAL,
            priority=Priority.FLASH if sos else Priority.IMMEDIATE,
            lifetime=int(self._link.config.signal_max_age),
        )

    async def handle(self, delivery: Delivery) -> bool:
        """Take ``delivery`` if it is a signal (answering an offer over the mesh); False otherwise."""
        if delivery.kind != Kind.WEBRTC_SIGNAL:
            return False
        try:
            answer = await self._link.accept(delivery.payload)
        except SignalError as exc:
            self.refused += 1
            log.warning("WebRTC signal from %s refused: %s", display_id(delivery.origin), exc)
            return True
        if answer is not None:
            await self.signal(delivery.origin, answer, sos=delivery.priority is Priority.FLASH)
        return True
