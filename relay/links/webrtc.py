"""The WebRTC link: Mesh112 frames over an aiortc data channel (ordered, reliable), one per peer.

Who the peer is: a data channel comes up only after DTLS, and aiortc checks the certificate the peer
shows against the fingerprint in the remote description. That fingerprint arrives in a
:class:`relay.links.webrtc_signal.Signal` signed with the sender's enrolled Ed25519 identity and
checked against the trust store (revocations apply), so a channel is only ever up with the node that
signed its signal. Nothing is reported to the core before the channel opens.

Signalling goes through a :class:`Signaller` (bundles over the mesh, :mod:`relay.links.webrtc_mesh`;
or whoever relays them, the tests for instance); incoming signals are handed to :meth:`accept`,
which returns the answer to an offer. The API takes offers at ``POST /api/v1/webrtc/signal``.

ICE: host candidates, and relay candidates from the configured TURN servers; never a STUN default.
aiortc cannot restart ICE inside a peer connection, so an ICE restart here is a new peer connection
with fresh ICE credentials and DTLS keys: made when the channel stays silent for
``keepalive_misses`` keepalive intervals (the path changed or died) or when :meth:`restart_ice` is
called. The link reports the peer down; frames in flight on the old path are custody's to resend,
and the core's duplicate check drops any that had arrived after all.

Which side offers: a link offers to the peers in its configuration and answers everyone else. When
both offer at once, the lower node id's offer wins on both sides; an offer of ours older than half
``connect_timeout`` no longer does (it evidently did not arrive, and the peer's did). An offer made
before the one whose connection it would replace is refused: a unit whose path is slow to come up
offers again, and both copies cross at once; answered last, the older one tore the new connection down.

Each data-channel message is one type byte and its body: a frame, or a keepalive ping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)

from crypto.errors import CryptoError
from crypto.identity import Identity, PublicIdentity, display_id
from relay.bundle import to_epoch
from relay.links.base import BROADCAST, Link, LinkError, LinkEvents, LinkProfile
from relay.links.webrtc_config import WebRtcLinkOptions
from relay.links.webrtc_signal import Flags, Signal, SignalError, SignalType, decode, encode, from_sdp, to_sdp

log = logging.getLogger(__name__)

MTU = 16 * 1024  # the size every WebRTC stack sends in one data-channel message
CHANNEL_ID = 0  # one negotiated channel: no DCEP round trip before the first frame
QUEUE_LIMIT_BYTES = 256 * 1024  # per peer; send() waits above this
_FRAME, _PING = b"\x00", b"\x01"
_POLL_S = 0.05
ANSWERED_KEPT = 64  # offers remembered per peer; older ones are past signal_max_age in practice

PeerKeys = Callable[[bytes, float], PublicIdentity]  # (node id, mesh time) -> key; raises if not trusted
VideoSource = Callable[[bytes], MediaStreamTrack | None]  # peer -> the track to send it, if any


class VideoSink(Protocol):
    """Where the video peers send arrives (:class:`relay.links.webrtc_video.VideoHub`)."""

    def incoming(self, peer: bytes, track: MediaStreamTrack) -> None: ...

    def subscribe(self, peer: bytes) -> MediaStreamTrack: ...

    def live(self) -> list[bytes]: ...

    def viewers(self) -> int: ...

    async def view(self, peer: bytes, offer_sdp: str) -> str: ...

    async def close(self) -> None: ...


class Signaller(Protocol):
    """Carries an encoded signal to ``peer`` (as a bundle, through an API, through a test)."""

    async def signal(self, peer: bytes, data: bytes, *, sos: bool) -> None: ...


@dataclass(eq=False)
class _Session:
    """One peer connection to ``peer``: the current one, or one on its way up."""

    peer: bytes
    session: int
    pc: RTCPeerConnection
    channel: RTCDataChannel
    offerer: bool
    # An answered offer's creation time (the peer's clock): a copy of an older offer arriving later
    # (signals queued while the path was down cross together) must not replace this connection.
    offered: int = 0
    sos: bool = False  # an SOS video request: its ICE restarts are SOS requests too (FLASH)
    up: bool = False
    closed: bool = False
    heard: float = field(default_factory=time.monotonic)
    opened: float = field(default_factory=time.monotonic)
    drained: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True, slots=True)
class LinkMetrics:
    name: str
    peers_up: int
    offers_made: int
    offers_answered: int
    signals_refused: int
    ice_restarts: int


class WebRtcLink(Link):
    def __init__(
        self,
        config: WebRtcLinkOptions,
        identity: Identity,
        peer_keys: PeerKeys,
        *,
        signaller: Signaller | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.profile = LinkProfile(name=config.name, kind="webrtc", mtu=MTU, bitrate=config.bitrate)
        self.signaller = signaller  # may be set after construction (the mesh signaller needs the node)
        self.video_source: VideoSource | None = None  # asked at each offer: video to send the peer
        self.video_sink: VideoSink | None = None  # receives each peer's video (relays, records)
        self._identity = identity
        self._peer_keys = peer_keys
        self._clock = clock
        self._dial = frozenset(bytes.fromhex(peer) for peer in config.peers)
        self._events: LinkEvents | None = None
        self._sessions: dict[bytes, _Session] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing: set[asyncio.Task[None]] = set()  # peer connections closing: stop() awaits them
        self._dialling: dict[bytes, asyncio.Task[None]] = {}
        self._answered: dict[bytes, deque[int]] = {}  # recent offers per peer: a replay is refused
        self._offers = self._answers = self._refused = self._restarts = 0
        self._stopping = False

    @property
    def node_id(self) -> bytes:
        return self._identity.node_id

    def peers(self) -> tuple[bytes, ...]:
        """Node ids whose data channel is open now."""
        return tuple(peer for peer, session in self._sessions.items() if session.up)

    def metrics(self) -> LinkMetrics:
        return LinkMetrics(
            self.config.name, len(self.peers()), self._offers, self._answers, self._refused, self._restarts
        )

    def configuration(self) -> RTCConfiguration:
        """Only the configured TURN servers: an empty list keeps aiortc off its public STUN default.
        One bundled transport for video and data: one set of candidates to signal."""
        servers = [RTCIceServer(t.url, t.username, t.credential) for t in self.config.turn]
        return RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)

    def video_sender(self, peer: bytes) -> RTCRtpSender | None:
        """The RTP sender of the video this link sends ``peer`` now (its encoder's target bitrate
        follows the receiver's estimate)."""
        session = self._sessions.get(peer)
        if session is None:
            return None
        return next((t.sender for t in session.pc.getTransceivers() if t.kind == "video"), None)

    async def start(self, events: LinkEvents) -> None:
        self._events = events
        self._spawn(self._watch())
        for peer in sorted(self._dial):
            self._keep_offering(peer)

    async def send(self, peer: bytes, frame: bytes) -> None:
        if not 0 < len(frame) <= MTU:
            raise LinkError(f"frame of {len(frame)} bytes outside 1..{MTU} on link {self.config.name}")
        targets = [s for s in self._sessions.values() if s.up] if peer == BROADCAST else [self._up(peer)]
        for session in targets:
            while session.channel.bufferedAmount > QUEUE_LIMIT_BYTES and session.up:
                session.drained.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(session.drained.wait(), self.config.keepalive_interval)
            if not session.up:
                raise LinkError(f"peer {display_id(session.peer)} went down on link {self.config.name}")
            session.channel.send(_FRAME + frame)

    async def stop(self) -> None:
        self._stopping = True
        self._events = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        sessions, self._sessions = list(self._sessions.values()), {}
        await asyncio.gather(*(s.pc.close() for s in sessions), return_exceptions=True)
        while self._closing:  # never cancelled: a close cut short leaves the connection up
            await asyncio.gather(*self._closing, return_exceptions=True)
        if self.video_sink is not None:
            await self.video_sink.close()  # recordings are finished, not cut

    # -- signalling ------------------------------------------------------------------------------

    async def offer(self, peer: bytes, *, sos: bool = False) -> bytes:
        """A signed, encoded offer to ``peer`` on a new peer connection (replacing any current one:
        an ICE restart). Hand it to the peer's :meth:`accept`; its answer comes back the same way."""
        if peer == self.node_id or len(peer) != 16:
            raise LinkError("an offer needs another node's 16-byte id")
        track = self.video_source(peer) if self.video_source is not None else None
        session = await self._open(peer, random.getrandbits(32), video=track)
        session.sos = sos
        await session.pc.setLocalDescription(await session.pc.createOffer())
        self._offers += 1
        flags = (Flags.SOS if sos else 0) | (Flags.VIDEO if track is not None else 0)
        return self._signed(session, SignalType.OFFER, flags)

    async def accept(self, data: bytes) -> bytes | None:
        """Take a signal from a peer: an offer returns the encoded answer to send back, an answer
        completes the offer it answers (None). Raises :class:`SignalError` (counted) if the signal
        is malformed, stale, not signed by a trusted node for this one, or answers nothing."""
        try:
            signal = self._verified(data)
            if signal.type is SignalType.OFFER:
                return await self._answer(signal)
            await self._complete(signal)
            return None
        except SignalError:
            self._refused += 1
            raise

    def restart_ice(self, peer: bytes) -> None:
        """The path to ``peer`` changed: offer a new connection through the signaller (whichever
        side calls it; the peer's answer replaces its connection as well)."""
        self._restarts += 1
        current = self._sessions.get(peer)
        if current is not None:
            self._close(current, "ICE restart asked for", reoffer=False)
        self._keep_offering(peer, sos=current is not None and current.sos)

    def connect(self, peer: bytes, *, sos: bool = False) -> None:
        """Offer ``peer`` a data channel through the signaller until it is up (an SOS video request
        travels as FLASH)."""
        if peer == self.node_id or len(peer) != 16:
            raise LinkError("a data channel needs another node's 16-byte id")
        self._keep_offering(peer, sos=sos)

    def _verified(self, data: bytes) -> Signal:
        signal = decode(data)
        now = to_epoch(self._clock())
        if signal.sender == self.node_id:
            raise SignalError("a signal from this node itself came back")
        try:
            key = self._peer_keys(signal.sender, now)
        except CryptoError as exc:
            raise SignalError(f"signal from node {display_id(signal.sender)} refused: {exc}") from None
        signal.verify(key, self.node_id)
        age = now - signal.created
        if not -self.config.signal_max_age < age < self.config.signal_max_age:
            raise SignalError(
                f"signal from node {display_id(signal.sender)} is {age:.0f} s old (limit "
                f"{self.config.signal_max_age:.0f} s; are both clocks right?)"
            )
        return signal

    async def _answer(self, offer: Signal) -> bytes | None:
        answered = self._answered.setdefault(offer.sender, deque(maxlen=ANSWERED_KEPT))
        if offer.session in answered:
            raise SignalError(f"offer {offer.session} from {display_id(offer.sender)} was answered already")
        current = self._sessions.get(offer.sender)
        if (
            current is not None
            and current.offerer
            and not current.up
            and self.node_id < offer.sender
            and time.monotonic() - current.opened < self.config.connect_timeout / 2
        ):
            log.info("link %s: both offered to each other; ours (lower id) wins", self.config.name)
            return None
        if current is not None and not current.offerer and offer.created < current.offered:
            raise SignalError(
                f"offer {offer.session} from {display_id(offer.sender)} is older than the connection it "
                "would replace (a late copy: the peer made a newer one since)"
            )
        answered.append(offer.session)
        session = await self._open(offer.sender, offer.session, remote_offer=offer)
        session.offered, session.sos = offer.created, bool(offer.flags & Flags.SOS)
        await session.pc.setLocalDescription(await session.pc.createAnswer())
        self._answers += 1
        return self._signed(session, SignalType.ANSWER, offer.flags)

    async def _complete(self, answer: Signal) -> None:
        session = self._sessions.get(answer.sender)
        if session is None or not session.offerer or session.session != answer.session:
            raise SignalError(f"answer from {display_id(answer.sender)} answers no offer pending here")
        if session.pc.remoteDescription is not None:
            raise SignalError(f"offer {answer.session} was answered already")
        await session.pc.setRemoteDescription(RTCSessionDescription(to_sdp(answer), "answer"))

    def _signed(self, session: _Session, kind: SignalType, flags: int) -> bytes:
        description = session.pc.localDescription
        created = int(to_epoch(self._clock()))
        unsigned = from_sdp(
            description.sdp, kind, self.node_id, session.session, created, flags=flags, ipv6=self.config.ipv6
        )
        return encode(unsigned.sign(self._identity, session.peer))

    def _keep_offering(self, peer: bytes, *, sos: bool = False) -> None:
        """Run one offering loop for ``peer`` unless one runs already."""
        if self._stopping or (peer in self._dialling and not self._dialling[peer].done()):
            return
        task = asyncio.create_task(self._offer_until_up(peer, sos))
        self._dialling[peer] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _offer_until_up(self, peer: bytes, sos: bool) -> None:
        """Offer to ``peer`` through the signaller, again after ``connect_timeout`` until it is up."""
        while not self._stopping:
            session = self._sessions.get(peer)
            if session is not None and (session.up or not session.offerer):
                return  # up, or the peer's own offer is being answered
            if self.signaller is None:
                log.warning(
                    "link %s: no signaller; waiting for %s to offer", self.config.name, display_id(peer)
                )
                return
            try:
                await self.signaller.signal(peer, await self.offer(peer, sos=sos), sos=sos)
            except LinkError as exc:
                log.warning("link %s: offer to %s not sent: %s", self.config.name, display_id(peer), exc)
            deadline = time.monotonic() + self.config.connect_timeout * random.uniform(0.8, 1.0)
            while time.monotonic() < deadline and peer not in self.peers():
                await asyncio.sleep(_POLL_S)

    # -- connections -----------------------------------------------------------------------------

    async def _open(
        self,
        peer: bytes,
        session_id: int,
        *,
        remote_offer: Signal | None = None,
        video: MediaStreamTrack | None = None,
    ) -> _Session:
        """A new peer connection for ``peer`` (answering ``remote_offer``, or sending ``video``);
        the one it replaces is closed. The data channel is made after the video transceiver and the
        remote offer: made before, aiortc bundles onto a transport it then drops, and never connects."""
        old = self._sessions.get(peer)
        if old is not None:
            self._close(old, "replaced by a new connection (ICE restart)", reoffer=False)
        pc = RTCPeerConnection(self.configuration())

        @pc.on("track")
        def _track(track: MediaStreamTrack) -> None:
            if track.kind == "video" and self.video_sink is not None:
                self.video_sink.incoming(peer, track)

        if video is not None:
            transceiver = pc.addTransceiver(video, direction="sendonly")
            codecs = RTCRtpSender.getCapabilities("video").codecs
            transceiver.setCodecPreferences([c for c in codecs if c.mimeType in ("video/VP8", "video/rtx")])
        if remote_offer is not None:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(to_sdp(remote_offer), "offer"))
            except ValueError as exc:
                await pc.close()
                raise SignalError(f"offer from {display_id(peer)} does not apply: {exc}") from None
        if self._stopping:  # stop() closed the connections it knew: this one would outlive the link
            await pc.close()
            raise LinkError(f"link {self.config.name} is stopped")
        channel = pc.createDataChannel("mesh112", ordered=True, negotiated=True, id=CHANNEL_ID)
        channel.bufferedAmountLowThreshold = QUEUE_LIMIT_BYTES // 2
        session = _Session(peer, session_id, pc, channel, offerer=remote_offer is None)
        self._sessions[peer] = session
        channel.on("open", lambda: self._opened(session))
        channel.on("message", lambda message: self._message(session, message))
        channel.on("close", lambda: self._close(session, "data channel closed"))
        channel.on("bufferedamountlow", session.drained.set)

        @pc.on("connectionstatechange")
        def _state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self._close(session, f"connection {pc.connectionState}")

        return session

    def _opened(self, session: _Session) -> None:
        if self._sessions.get(session.peer) is not session or session.up:
            return
        session.up = True
        session.heard = time.monotonic()
        log.info("link %s: peer %s up", self.config.name, display_id(session.peer))
        if self._events is not None:
            self._events.link_up(self.config.name, session.peer)

    def _message(self, session: _Session, message: bytes | str) -> None:
        if not isinstance(message, bytes) or not message or self._sessions.get(session.peer) is not session:
            return
        session.heard = time.monotonic()
        if message[:1] == _FRAME and len(message) > 1 and self._events is not None:
            self._events.frame_received(self.config.name, session.peer, message[1:])

    def _close(self, session: _Session, reason: str, *, reoffer: bool = True) -> None:
        """Close ``session``; report the peer down if it was up. Unless a new connection replaces it
        already, the side that dials makes a new offer (an ICE restart)."""
        if session.closed:
            return
        session.closed = True
        was_up, session.up = session.up, False
        session.drained.set()
        if self._sessions.get(session.peer) is session:
            del self._sessions[session.peer]
        closing = asyncio.create_task(session.pc.close())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        if was_up:
            log.info("link %s: peer %s down: %s", self.config.name, display_id(session.peer), reason)
            if self._events is not None:
                self._events.link_down(self.config.name, session.peer)
        if reoffer and session.peer in self._dial:
            self._restarts += 1
            self._keep_offering(session.peer, sos=session.sos)

    async def _watch(self) -> None:
        """Ping every open channel; close those silent for ``keepalive_misses`` intervals."""
        interval = self.config.keepalive_interval
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for session in list(self._sessions.values()):
                if not session.up:
                    continue
                if now - session.heard > interval * self.config.keepalive_misses:
                    self._close(session, f"silent for {now - session.heard:.1f} s (path lost)")
                elif session.channel.readyState == "open":
                    session.channel.send(_PING)

    def _up(self, peer: bytes) -> _Session:
        session = self._sessions.get(peer)
        if session is None or not session.up:
            raise LinkError(f"peer {display_id(peer)} has no open data channel on link {self.config.name}")
        return session

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
