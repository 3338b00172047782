"""The LoRa link: Mesh112 frames as Meshtastic packets on a private port, through the unmodified
``meshtastic`` library (TCP, serial or BLE).

The library has known weak spots (see docs/lora.md) and this wrapper covers them:

* an RST or a device reboot ends the library's reader for good and publishes
  ``meshtastic.connection.lost``: the link closes that interface and builds a new one, with backoff;
* pubsub topics are global and hold listeners weakly: the link keeps its listeners as attributes
  and ignores events from any interface but its current one;
* library callbacks run on library threads: they only copy data and hand over to asyncio with
  ``loop.call_soon_threadsafe``; blocking library calls run on one worker thread of the link's own;
* a frame counts as sent only when the destination radio ACKs it. NAKs (TOO_LARGE,
  DUTY_CYCLE_LIMIT, MAX_RETRANSMIT, PKI failures...) and missing ACKs raise ``LoRaNakError`` or
  ``LinkError`` so the core retransmits, and they are counted in ``state()``. The radio keeps
  several packets in flight, each with its own id, retries and ACK: while a frame awaits its ACK
  (up to about 25 s of retries), the node hands this link FLASH frames only, a few at a time
  (``flash_alongside``), and the radio sends each after the transmission under way.

Meshtastic node numbers are mapped to Mesh112 node ids through the configured roster, and the
roster alone proves nothing: anyone can put any ``from`` on the air. So every Mesh112 frame is a
direct message carrying a hop tag (:mod:`crypto.hop`, 12 bytes) keyed from the X25519 agreement of
the two enrolled identities, and a frame is handed to the core only if it was addressed to this radio,
arrived PKI-encrypted, comes from a rostered node whose certificate is still trusted, and its tag
verifies with a fresh stamp. Everything else is dropped here and counted in ``state().refused``, with
one warning line per minute that gives the counts. There are no broadcast frames: the core addresses
every frame, beacons and summaries included, to one neighbour (see docs/crypto.md for the bytes).
A device enrolled after its neighbours started is in neither their roster nor their trust store; it
introduces itself with a tagged hello (:mod:`relay.links.lora_hello`) that maps its radio to its
node id once its certificate and tag verify.

Plain text on TEXT_MESSAGE_APP and positions on POSITION_APP from stock Meshtastic users are surfaced,
unauthenticated and never as frames, through ``on_text`` and ``on_position`` (the command post
records them, see :mod:`relay.heard`); ``send_text`` answers them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from meshtastic.protobuf import mesh_pb2
from pubsub import pub

from crypto.errors import CryptoError
from crypto.hop import HOP_OVERHEAD, MAX_TAGS, HopAuth, HopAuthError
from crypto.identity import PublicIdentity
from relay.bundle import to_epoch
from relay.links.base import BROADCAST, Link, LinkError, LinkEvents, LinkProfile
from relay.links.lora_config import (
    BROADCAST_NUM,
    LoRaLinkConfig,
    LoRaLinkState,
    LoRaNakError,
    RadioMismatchError,
    check_radio,
    open_interface,
)
from relay.links.lora_hello import HelloRefusedError, LoRaHello
from relay.links.lora_phy import (
    FLASH_ALONGSIDE,
    MAX_CHANNEL_PAYLOAD,
    MAX_DM_PAYLOAD,
    duty_cycle,
    frame_airtime_s,
    modem,
)
from relay.trust import UnknownOriginError

__all__ = ["LoRaLink", "LoRaLinkConfig", "LoRaLinkState", "LoRaNakError"]

log = logging.getLogger(__name__)

TEXT_MESSAGE_APP = 1
POSITION_APP = 3
ROUTING_APP = 5
_EARLY_RESULTS = 64  # routing answers that overtook their sendData() return, kept briefly
_TOPICS = ("meshtastic.receive", "meshtastic.connection.lost")
REFUSED_LOG_EVERY_S = 60.0  # at most one warning line per link per minute about dropped frames

PeerKeys = Callable[[bytes, float], PublicIdentity]  # node id, now -> its key, or CryptoError if untrusted


@dataclass(slots=True)
class _Pending:
    dest: int
    future: asyncio.Future[None]


class LoRaLink(Link):
    """A Mesh112 link over one Meshtastic radio."""

    flash_alongside = FLASH_ALONGSIDE

    def __init__(
        self,
        config: LoRaLinkConfig,
        hop: HopAuth,
        peer_keys: PeerKeys,
        on_text: Callable[[int, str], None] | None = None,
        *,
        hello: LoRaHello | None = None,
    ) -> None:
        """``hop`` tags and checks frames; ``peer_keys`` is the trust store's check (revocations apply);
        ``hello`` introduces this node to neighbours that do not know it, and checks strangers' hellos."""
        self.config = config
        self.hop = hop
        self.peer_keys = peer_keys
        self.hello = hello
        lora = modem(config.preset)
        self.profile = LinkProfile(
            name=config.name,
            kind="lora",
            mtu=MAX_DM_PAYLOAD - HOP_OVERHEAD,
            bitrate=lora.bitrate_bps / 8.0,
            cost=10.0,
            duty_cycle=duty_cycle(config.region),
            compact=True,
            # What a frame costs beyond its bytes at the bitrate: preamble, Meshtastic header, PKI and
            # hop tag; exact for a full frame, a little over for smaller ones, so the scheduler's budget
            # never promises airtime the radio's own duty-cycle count would refuse.
            per_frame_overhead_s=frame_airtime_s(config.preset, MAX_DM_PAYLOAD, True)
            - (MAX_DM_PAYLOAD - HOP_OVERHEAD) / (lora.bitrate_bps / 8.0),
            implicit_ack=config.implicit_ack,
        )
        self.on_text = on_text
        self.on_position: Callable[[int, float, float], None] | None = None  # radio, lat, lon
        self._peer_by_num = {num: bytes.fromhex(hex_id) for num, hex_id in config.roster.items()}
        self._num_by_peer = {peer: num for num, peer in self._peer_by_num.items()}
        self._events: LinkEvents | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{config.name}-lib")
        self._iface: Any = None
        self._up: set[bytes] = set()
        self._pending: dict[int, _Pending] = {}
        self._early: OrderedDict[int, str] = OrderedDict()
        self._reconnect_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._counts: Counter[str] = Counter()
        self._naks: Counter[str] = Counter()
        self._last_error = ""
        self._refused: Counter[str] = Counter()
        self._refused_logged: Counter[str] = Counter()
        self._refused_log_at = 0.0
        self._airtime_log: deque[tuple[float, float]] = deque()  # (monotonic time, seconds on air)
        # Strong references: pypubsub holds listeners weakly.
        self._listeners: tuple[Callable[..., None], ...] = (self._library_receive, self._library_lost)

    # ---- Link interface ----
    async def start(self, events: LinkEvents) -> None:
        """Subscribe, connect; if the radio is not there yet, keep trying in the background."""
        self._events = events
        self._loop = asyncio.get_running_loop()
        for topic, listener in zip(_TOPICS, self._listeners, strict=True):
            pub.subscribe(listener, topic)
        try:
            await self._connect()
        except Exception as exc:  # the library raises many types; any of them means "not yet"
            self._note_error(f"cannot connect to the LoRa radio at {self._where()}: {exc}")
            self._schedule_reconnect()

    async def send(self, peer: bytes, frame: bytes) -> None:
        """Send one frame with its hop tag; returns when the peer's radio ACKed it."""
        if peer == BROADCAST:
            raise LinkError(
                f"LoRa link {self.config.name} sends every frame to one neighbour with its hop tag; "
                "a broadcast could not be authenticated"
            )
        if len(frame) > self.profile.mtu:
            raise LinkError(f"frame of {len(frame)} bytes exceeds the LoRa limit of {self.profile.mtu}")
        dest = self._num_by_peer.get(peer)
        if dest is None:
            raise LinkError(f"peer {peer.hex()} is not in the roster of LoRa link {self.config.name}")
        greeting = self.hello.due(peer) if self.hello is not None else None
        if greeting is not None and self.hello is not None:
            await self._send_tagged(peer, dest, greeting)
            self.hello.said(peer)
        await self._send_tagged(peer, dest, frame)
        self._counts["frames_sent"] += 1

    async def send_acknowledging(self, peer: bytes, frame: bytes, acks: tuple[bytes, ...]) -> None:
        """Send ``frame`` to ``peer`` as a channel broadcast that the neighbours ``acks`` (the ones it
        is the custody ACK of) can check too: ``frame | (stamp | tag) per node, the addressee's
        first | count`` (docs/crypto.md, "Hop tags"). No radio ACK comes for a broadcast: the
        addressee's custody ACK is the answer. Too long for a channel packet, it goes as a direct
        message to ``peer`` alone (those neighbours resend, and are acknowledged explicitly)."""
        known = tuple(ack for ack in acks if ack in self._num_by_peer)[: MAX_TAGS - 1]
        dest = self._num_by_peer.get(peer)
        length = len(frame) + HOP_OVERHEAD * (1 + len(known)) + 1
        greeting = self.hello is not None and self.hello.due(peer) is not None
        if not known or dest is None or length > MAX_CHANNEL_PAYLOAD or greeting:
            await self.send(peer, frame)  # which refuses what cannot be sent at all
            return
        now = to_epoch(time.time())
        try:
            keys = [self.peer_keys(node, now) for node in known]
            payload = self.hop.tag_many(self.peer_keys(peer, now), keys, frame, now)
        except CryptoError as exc:
            raise LinkError(f"no hop key for a neighbour on {self.config.name}: {exc}") from None
        self._spend(dest, frame_airtime_s(self.config.preset, len(payload), False))
        await self._send_and_wait(BROADCAST_NUM, payload, self.config.app_port, want_ack=False)
        self._counts["frames_sent"] += 1
        self._counts["implicit_acks_sent"] += len(known)

    async def _send_tagged(self, peer: bytes, dest: int, frame: bytes) -> None:
        now = to_epoch(time.time())
        try:
            frame = self.hop.tag(self.peer_keys(peer, now), frame, now)
        except CryptoError as exc:
            raise LinkError(f"no hop key for {peer.hex()[:8]} on {self.config.name}: {exc}") from None
        self._spend(dest, frame_airtime_s(self.config.preset, len(frame), True))
        await self._send_and_wait(dest, frame, self.config.app_port, want_ack=True)

    def _spend(self, dest: int, airtime_s: float) -> None:
        """Count a frame's airtime, or refuse it as the radio would past the duty cycle."""
        if self.profile.duty_cycle < 1.0 and self._airtime_last_hour() > self.profile.duty_cycle * 3600.0:
            self._naks["DUTY_CYCLE_LIMIT"] += 1  # the radio would refuse it too; spare the round trip
            raise LoRaNakError("DUTY_CYCLE_LIMIT", dest)
        self._airtime_log.append((time.monotonic(), airtime_s))

    async def send_text(self, dest_num: int, text: str) -> None:
        """Send plain text a stock Meshtastic app shows; returns when the destination ACKed it."""
        data = text.encode("utf-8")
        if len(data) > MAX_DM_PAYLOAD + 1:
            raise LinkError(f"text of {len(data)} bytes exceeds Meshtastic's {MAX_DM_PAYLOAD + 1}")
        await self._send_and_wait(dest_num, data, TEXT_MESSAGE_APP, want_ack=dest_num != BROADCAST_NUM)

    async def stop(self) -> None:
        self._stopping = True
        for topic, listener in zip(_TOPICS, self._listeners, strict=True):
            with contextlib.suppress(Exception):
                pub.unsubscribe(listener, topic)
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect_task
        self._fail_pending("LoRa link stopped")
        iface, self._iface = self._iface, None
        if iface is not None:
            await asyncio.to_thread(_close_quietly, iface)
        self._report_all_down()
        self._worker.shutdown(wait=True)

    def state(self) -> LoRaLinkState:
        iface = self._iface
        queue = getattr(iface, "queueStatus", None) if iface is not None else None
        my_info = getattr(iface, "myInfo", None) if iface is not None else None
        return LoRaLinkState(
            connected=iface is not None,
            my_num=int(my_info.my_node_num) if my_info is not None else None,
            connects=self._counts["connects"],
            queue_free=int(queue.free) if queue is not None else None,
            frames_sent=self._counts["frames_sent"],
            frames_received=self._counts["frames_received"],
            naks=dict(self._naks),
            airtime_last_hour_s=round(self._airtime_last_hour(), 3),
            ack_timeouts=self._counts["ack_timeouts"],
            unknown_senders=self._refused["unknown_sender"],
            refused=dict(self._refused),
            implicit_acks_sent=self._counts["implicit_acks_sent"],
            frames_overheard=self._counts["frames_overheard"],
            broadcasts_for_others=self._counts["broadcasts_for_others"],
            last_error=self._last_error,
        )

    # ---- sending ----
    async def _send_and_wait(self, dest: int, data: bytes, port: int, want_ack: bool) -> None:
        iface = self._iface
        if iface is None:
            raise LinkError(f"LoRa radio at {self._where()} is not connected")
        loop = asyncio.get_running_loop()

        def send_data() -> int:
            if not iface.isConnected.is_set():  # else the library blocks up to 30 s waiting for it
                raise LinkError("the radio connection is down")
            packet = iface.sendData(data, destinationId=dest, portNum=port, wantAck=want_ack)
            return int(packet.id)

        try:
            packet_id = await loop.run_in_executor(self._worker, send_data)
        except Exception as exc:
            raise LinkError(f"LoRa radio at {self._where()} did not take the frame: {exc}") from exc
        if self._iface is not iface:  # the connection dropped while the library wrote the frame
            raise LinkError(f"connection to the LoRa radio at {self._where()} lost during the send")
        if not want_ack:
            return
        early = self._early.pop(packet_id, None)
        if early is not None:
            self._settle_reason(dest, early)
            return
        pending = _Pending(dest, loop.create_future())
        self._pending[packet_id] = pending
        try:
            await asyncio.wait_for(pending.future, self.config.ack_timeout_s)
        except TimeoutError:
            self._counts["ack_timeouts"] += 1
            raise LinkError(f"no ACK from !{dest:08x} within {self.config.ack_timeout_s:g} s") from None
        finally:
            self._pending.pop(packet_id, None)

    def _airtime_last_hour(self) -> float:
        horizon = time.monotonic() - 3600.0
        while self._airtime_log and self._airtime_log[0][0] < horizon:
            self._airtime_log.popleft()
        return sum(airtime for _, airtime in self._airtime_log)

    def _settle_reason(self, dest: int, reason: str) -> None:
        if reason != "NONE":
            self._naks[reason] += 1
            raise LoRaNakError(reason, dest)

    def _routing_answer(self, request_id: int, sender: int, reason: str) -> None:
        pending = self._pending.get(request_id)
        if pending is None:
            self._early[request_id] = reason
            while len(self._early) > _EARLY_RESULTS:
                self._early.popitem(last=False)
            return
        if pending.future.done():
            return
        if reason != "NONE":
            self._naks[reason] += 1
            self._note_error(f"frame to !{pending.dest:08x} refused: {reason}")
            pending.future.set_exception(LoRaNakError(reason, pending.dest))
        elif sender == pending.dest:  # the real ACK; an implicit ACK (a relay heard) is not enough
            pending.future.set_result(None)

    def _fail_pending(self, why: str) -> None:
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(LinkError(why))
        self._pending.clear()
        self._early.clear()

    # ---- library callbacks (library threads: copy and hand over, never block) ----
    def _library_receive(self, packet: dict[str, Any], interface: Any) -> None:
        if interface is not self._iface or self._loop is None:
            return
        raw = packet.get("raw")
        if raw is None or raw.WhichOneof("payload_variant") != "decoded":
            return
        decoded = raw.decoded
        routing = packet.get("decoded", {}).get("routing", {})
        item = (
            int(decoded.portnum),
            int(packet.get("from", 0)),
            bytes(decoded.payload),
            int(decoded.request_id),
            str(routing.get("errorReason", "NONE")),
            int(raw.to),
            bool(raw.pki_encrypted),
        )
        self._loop.call_soon_threadsafe(self._on_packet, interface, *item)

    def _library_lost(self, interface: Any) -> None:
        if interface is self._iface and self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_connection_lost, interface)

    # ---- on the event loop ----
    def _on_packet(
        self,
        interface: Any,
        portnum: int,
        sender: int,
        payload: bytes,
        request_id: int,
        reason: str,
        to: int,
        pki: bool,
    ) -> None:
        if interface is not self._iface or self._events is None:
            return
        if portnum == ROUTING_APP and request_id:
            self._routing_answer(request_id, sender, reason)
        elif portnum == self.config.app_port:
            if to == BROADCAST_NUM and not pki:
                heard = self._acknowledging(sender, payload)
            else:
                frame = self._authenticated(interface, sender, payload, to, pki)
                heard = None if frame is None else (frame, True)
            if heard is None:
                return
            frame, addressed = heard
            peer = self._peer_by_num[sender]
            if peer not in self._up:
                self._up.add(peer)
                self._events.link_up(self.config.name, peer)
            self._counts["frames_received"] += 1
            if addressed:
                self._events.frame_received(self.config.name, peer, frame)
            else:
                self._counts["frames_overheard"] += 1
                self._events.frame_overheard(self.config.name, peer, frame)
        elif portnum == TEXT_MESSAGE_APP and self.on_text is not None:
            self.on_text(sender, payload.decode("utf-8", errors="replace"))
        elif portnum == POSITION_APP and self.on_position is not None:
            position = _stock_position(payload)
            if position is not None:
                self.on_position(sender, *position)

    def _authenticated(self, interface: Any, sender: int, payload: bytes, to: int, pki: bool) -> bytes | None:
        """The frame inside ``payload`` if it passes every check, else None (counted and logged)."""
        my_info = getattr(interface, "myInfo", None)
        peer = self._peer_by_num.get(sender)
        reason = ""
        if my_info is None or to != int(my_info.my_node_num):
            reason = "not_addressed"  # channel broadcasts and direct messages for other radios
        elif not pki:
            reason = "not_pki"
        elif peer is None:
            reason = self._introduced(sender, payload, "unknown_sender")
        else:
            now = to_epoch(time.time())
            try:
                frame = self.hop.check(self.peer_keys(peer, now), payload, now)
                if self.hello is not None:
                    self.hello.heard(peer)
                return frame
            except HopAuthError as exc:
                reason = exc.reason
            except UnknownOriginError:
                reason = self._introduced(sender, payload, "untrusted")  # rostered, certificate not held
            except CryptoError:
                reason = "untrusted"  # revoked or expired since the roster was written
        if reason:
            self._refuse(reason, sender)
        return None

    def _acknowledging(self, sender: int, payload: bytes) -> tuple[bytes, bool] | None:
        """The frame of a broadcast from :meth:`send_acknowledging` and whether it is addressed to
        this node, if one of its tags is this node's and holds with a fresh stamp, as any frame's
        must; else None. A broadcast whose tags are all for other nodes is not counted as refused
        (their direct messages never reach this node either)."""
        peer = self._peer_by_num.get(sender)
        if peer is None:
            self._refuse("unknown_sender", sender)
            return None
        now = to_epoch(time.time())
        try:
            frame, addressed = self.hop.check_many(self.peer_keys(peer, now), payload, now)
        except HopAuthError as exc:
            if exc.reason == "tag":
                self._counts["broadcasts_for_others"] += 1
            else:  # a channel broadcast of another format on our port is not addressed to us
                self._refuse("not_addressed" if exc.reason == "short" else exc.reason, sender)
            return None
        except CryptoError:
            self._refuse("untrusted", sender)  # revoked or expired since the roster was written
            return None
        if self.hello is not None:
            self.hello.heard(peer)
        return frame, addressed

    def _introduced(self, sender: int, payload: bytes, otherwise: str) -> str:
        """Take a stranger's hello: "" when it introduced an enrolled node (its radio is mapped and
        the neighbour up), else the refusal reason (``otherwise`` if it is no hello at all)."""
        if self.hello is None or not LoRaHello.is_hello(payload):
            return otherwise
        try:
            certificate = self.hello.check(payload, to_epoch(time.time()))
        except HelloRefusedError as exc:
            log.info("%s: hello from !%08x refused: %s", self.config.name, sender, exc)
            return exc.reason
        node_id = certificate.node_id
        if (
            self._peer_by_num.get(sender, node_id) != node_id
            or self._num_by_peer.get(node_id, sender) != sender
        ):
            return "hello_mismatch"  # the roster names this radio or this node otherwise: it wins
        self._peer_by_num[sender] = node_id
        self._num_by_peer[node_id] = sender
        self.hello.heard(node_id)
        log.info("%s: %s introduced itself from radio !%08x", self.config.name, certificate.name, sender)
        if node_id not in self._up and self._events is not None:
            self._up.add(node_id)
            self._events.link_up(self.config.name, node_id)
        return ""

    def _refuse(self, reason: str, sender: int) -> None:
        self._refused[reason] += 1
        now = time.monotonic()
        if now - self._refused_log_at >= REFUSED_LOG_EVERY_S:
            fresh = self._refused - self._refused_logged
            counts = ", ".join(f"{name} {count}" for name, count in sorted(fresh.items()))
            log.warning(
                "%s: dropped %d frame(s) before the core since the last report (%s); latest from !%08x",
                self.config.name,
                fresh.total(),
                counts,
                sender,
            )
            self._refused_logged = self._refused.copy()
            self._refused_log_at = now

    def _on_connection_lost(self, interface: Any) -> None:
        if interface is not self._iface or self._stopping:
            return
        self._note_error(f"connection to the LoRa radio at {self._where()} lost")
        self._iface = None
        self._fail_pending("LoRa radio connection lost; the frame may not have been sent")
        self._report_all_down()
        assert self._loop is not None
        self._loop.run_in_executor(None, _close_quietly, interface)
        self._schedule_reconnect()

    # ---- connecting ----
    async def _connect(self) -> None:
        iface = await asyncio.to_thread(open_interface, self.config)
        if self._stopping:
            await asyncio.to_thread(_close_quietly, iface)
            return
        try:
            check_radio(self.config, iface.localNode.localConfig.lora)
        except RadioMismatchError:
            await asyncio.to_thread(_close_quietly, iface)
            raise
        self._iface = iface
        self._counts["connects"] += 1
        heard = set(getattr(iface, "nodesByNum", {}) or {})
        for num, peer in self._peer_by_num.items():
            if num in heard and peer not in self._up and self._events is not None:
                self._up.add(peer)
                self._events.link_up(self.config.name, peer)

    def _schedule_reconnect(self) -> None:
        if self._stopping or (self._reconnect_task is not None and not self._reconnect_task.done()):
            return
        self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = self.config.reconnect_min_s
        for _attempt in range(self.config.max_reconnect_attempts):
            await asyncio.sleep(delay)
            if self._stopping or self._iface is not None:
                return
            try:
                await self._connect()
                return
            except Exception as exc:  # any library failure: try again later
                self._note_error(f"reconnecting to the LoRa radio at {self._where()} failed: {exc}")
                delay = min(delay * 2, self.config.reconnect_max_s)
        self._note_error(f"gave up reconnecting to the LoRa radio at {self._where()}")

    def _report_all_down(self) -> None:
        up, self._up = self._up, set()
        if self._events is not None:
            for peer in sorted(up):
                self._events.link_down(self.config.name, peer)

    def _note_error(self, message: str) -> None:
        self._last_error = message
        log.warning("%s: %s", self.config.name, message)

    def _where(self) -> str:
        if self.config.transport == "tcp":
            return f"{self.config.address}:{self.config.port}"
        return f"{self.config.transport}:{self.config.address}"


def _stock_position(payload: bytes) -> tuple[float, float] | None:
    """(lat, lon) of a stock POSITION_APP payload; None if it is damaged, empty or off the globe."""
    position = mesh_pb2.Position()
    try:
        position.ParseFromString(payload)
    except DecodeError:
        return None
    lat, lon = position.latitude_i * 1e-7, position.longitude_i * 1e-7
    if (lat, lon) == (0.0, 0.0) or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return lat, lon


def _close_quietly(iface: Any) -> None:
    """Close a library interface; a broken connection may raise here, which changes nothing."""
    with contextlib.suppress(Exception):
        iface.close()
