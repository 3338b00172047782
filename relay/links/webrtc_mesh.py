"""WebRTC signalling over the mesh: offers and answers as bundles when no server is reachable.

A signal fits one LoRa frame, so a data channel can be set up over LoRa alone. An offer asking for
SOS video travels as FLASH, every other signal as IMMEDIATE; both expire with the link's
``signal_max_age`` (a late signal is refused anyway).

:class:`MeshSignaller` is the link's signaller and also a :class:`relay.apps.CommandPostApp` for
:attr:`Kind.WEBRTC_SIGNAL`: at a command post the journal feed hands it every signal, it answers
offers over the mesh and puts a ``webrtc`` record in the journal (who asked, SOS or not, answered or
refused why) for the console. Any other node's inbox loop calls :meth:`handle` the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crypto.identity import display_id
from relay.apps import RecordUpdate, Sender
from relay.bundle import BundleId, Destination, Kind, Priority
from relay.engine import Delivery
from relay.links.base import Link
from relay.links.webrtc_signal import SignalError, decode

if TYPE_CHECKING:
    from relay.links.webrtc import WebRtcLink  # aiortc (the "video" extra) loads with the link only

log = logging.getLogger(__name__)


class MeshSignaller:
    record_type = "webrtc"

    def __init__(self, sender: Sender, link: WebRtcLink) -> None:
        self.kinds: Mapping[int, str] = {int(Kind.WEBRTC_SIGNAL): "webrtc_signal"}
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

    async def handle(self, delivery: Delivery) -> list[RecordUpdate]:
        """Take a signal: answer an offer over the mesh, complete an offer with its answer. The
        record says what happened to it (nothing for a delivery of another kind)."""
        if delivery.kind != Kind.WEBRTC_SIGNAL:
            return []
        body: dict[str, Any] = {"link": self._link.config.name, "peer": delivery.origin.hex()}
        try:
            signal = decode(delivery.payload)
            body.update(session=signal.session, sos=signal.sos, signal=signal.type.name.lower())
            answer = await self._link.accept(delivery.payload)
        except SignalError as exc:
            self.refused += 1
            log.warning("WebRTC signal from %s refused: %s", display_id(delivery.origin), exc)
            return [
                RecordUpdate(
                    f"webrtc-{delivery.bundle_id.key().hex()}", {**body, "state": "refused", "why": str(exc)}
                )
            ]
        if answer is not None:
            await self.signal(delivery.origin, answer, sos=delivery.priority is Priority.FLASH)
        state = "answered" if answer is not None else "connecting"
        return [RecordUpdate(f"webrtc-{delivery.origin.hex()}-{signal.session}", {**body, "state": state})]

    async def acknowledge(self, record_id: str, ack: dict[str, Any]) -> BundleId | None:
        """Nothing to carry back: the answer already went."""
        return None


def command_post_webrtc(sender: Sender, links: Iterable[Link], video_dir: Path) -> list[MeshSignaller]:
    """What a command post adds to each of its webrtc links: a mesh signaller (answers offers over
    the mesh; returned, to be fed the journal's deliveries) and a video hub (relays each unit's video
    to viewers, records it in ``video_dir``). aiortc loads only when there is such a link."""
    webrtc = [link for link in links if link.profile.kind == "webrtc"]
    if not webrtc:
        return []
    from relay.links.webrtc import WebRtcLink
    from relay.links.webrtc_video import VideoHub

    signallers = []
    for link in webrtc:
        if isinstance(link, WebRtcLink):
            VideoHub(video_dir).attach(link)
            signallers.append(MeshSignaller(sender, link))
    return signallers
