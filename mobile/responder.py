"""The responder application riding on the embedded node: SOS, messages, incident, links.

The asyncio adapter between :class:`relay.node.Node` and :class:`mobile.state.AppState`: it sends
what the screens ask for, turns the node's pushes (``inbox`` deliveries, ``on_status`` callbacks)
into state events, and keeps the SOS and my messages in :class:`mobile.appstore.AppStore`. Nothing
here polls: the inbox and the status callback wake it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from mobile.appstore import AppStore
from mobile.kinds import SOS, SOS_ACK, register_kinds
from mobile.sos import SosDecodeError, SosRecord, decode_sos_ack, encode_sos
from mobile.state import (
    AppState,
    Delivery,
    IncidentAlarm,
    LinkRow,
    Message,
    Sos,
    SosEvent,
    SosPhase,
    Unit,
)
from ng112.errors import RecordError
from ng112.hazards import HAZARDS, Hazard
from ng112.kinds import NG112_ALARM
from ng112.record import decode_record
from relay.bundle import BundleId, Destination, Kind, Priority
from relay.core.status import BundleStatus, State
from relay.engine import Delivery as NodeDelivery
from relay.node import Node
from relay.position import Position, PositionDecodeError, decode_position, encode_position

log = logging.getLogger("mesh112.mobile")

SOS_LIFETIME_S = 24 * 3600
MESSAGE_LIFETIME_S = 6 * 3600
CANNED = ("en route", "on scene", "need backup", "all clear")  # one-tap statuses, sent as text


class WrongPinError(ValueError):
    """The PIN typed to cancel an SOS is not this device's."""


@dataclass(frozen=True, slots=True)
class ResponderConfig:
    command_post: Destination
    team: Destination
    pin: str


class Responder:
    def __init__(
        self,
        node: Node,
        store: AppStore,
        state: AppState,
        config: ResponderConfig,
        position: Callable[[], Position | None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node, self.store, self.state, self.config = node, store, state, config
        self._position, self._clock = position, clock
        self._writes: set[asyncio.Task[None]] = set()
        self._post = config.command_post.node
        self._to_post: set[str] = set()
        self._next_number = 1  # bundles to the command post: their receipts are contact

    async def start(self) -> None:
        """Register the kinds, restore the SOS and messages, and send an SOS the node never stored."""
        register_kinds(self.node.kinds)
        self.node.on_status(self._on_status)
        for message in await self.store.messages():
            self.state.message(message)
        sos = await self.store.latest_sos()
        self._next_number = await self.store.next_sos_number()  # read now: confirm -> durable is short
        self.state.sos_restored(sos)
        if sos is not None and sos.phase is SosPhase.CONFIRMED:
            log.info("SOS %d was confirmed but never stored by the node: sending it now", sos.number)
            await self._send_sos(sos)
        self.refresh_links()

    async def run(self) -> None:
        """Deliveries for me, until cancelled; each is acknowledged to the node once handled."""
        try:
            async for delivery in self.node.inbox():
                try:
                    await self._handle(delivery)
                except Exception:
                    log.exception("delivery of kind %d from %s failed", delivery.kind, delivery.origin.hex())
                await self.node.ack(delivery.bundle_id)
        finally:
            if self._writes:
                await asyncio.gather(*self._writes, return_exceptions=True)

    # -- SOS -------------------------------------------------------------------------------------

    async def raise_sos(self, text: str = "") -> Sos:
        """Confirm, store, send; returns once the SOS bundle is durable in the node's store."""
        started = time.perf_counter()
        fix = self._position()
        sos = Sos(
            self._next_number,
            SosPhase.CONFIRMED,
            self._clock(),
            fix.lat if fix else None,
            fix.lon if fix else None,
        )
        if self.state.sos is not None and self.state.sos.live:
            return self.state.sos  # one live SOS at a time; a second confirm changes nothing
        self._next_number = sos.number % 0xFFFF + 1
        await self.store.put_sos(sos)  # from here on a crash re-sends it (start())
        self.state.sos_confirmed(sos)
        return await self._send_sos(sos, text, started)

    async def _send_sos(self, sos: Sos, text: str = "", started: float | None = None) -> Sos:
        position = None
        if sos.lat is not None and sos.lon is not None:
            position = Position.from_fix(sos.lat, sos.lon, sos.raised)
        record = SosRecord(sos.number, int(sos.raised), position=position, text=text)
        bundle = await self.node.send(
            self.config.command_post,
            encode_sos(record),
            kind=SOS,
            priority=Priority.FLASH,
            lifetime=SOS_LIFETIME_S,
        )
        self._to_post.add(bundle.key().hex())
        durable_ms = None if started is None else (time.perf_counter() - started) * 1000
        current = self.state.sos_event(SosEvent.DURABLE, bundle=bundle.key().hex(), durable_ms=durable_ms)
        await self.store.put_sos(current)
        self._apply_status(bundle, self.node.status(bundle))  # it may have moved on already
        log.info("SOS %d durable in %.1f ms", sos.number, durable_ms or 0.0)
        return current

    async def cancel_sos(self, pin: str) -> Sos:
        sos = self.state.sos
        if sos is None or not sos.live:
            raise WrongPinError("no SOS to cancel")
        if not hmac.compare_digest(pin.encode(), self.config.pin.encode()):
            raise WrongPinError("wrong PIN: the SOS stays raised")
        record = SosRecord(sos.number, int(self._clock()), cancel=True)
        await self.node.send(
            self.config.command_post,
            encode_sos(record),
            kind=SOS,
            priority=Priority.FLASH,
            lifetime=SOS_LIFETIME_S,
        )
        cancelled = self.state.sos_event(SosEvent.CANCEL)
        await self.store.put_sos(cancelled)
        return cancelled

    # -- messages --------------------------------------------------------------------------------

    async def send_text(self, to: str, text: str, priority: Priority = Priority.PRIORITY) -> Message:
        """``to`` is ``"post"`` or ``"team"``; the message shows queued once durable."""
        destination = self.config.command_post if to == "post" else self.config.team
        bundle = await self.node.send(
            destination, text.encode(), kind=Kind.TEXT, priority=priority, lifetime=MESSAGE_LIFETIME_S
        )
        if to == "post":
            self._to_post.add(bundle.key().hex())
        message = Message(bundle.key().hex(), True, to, text, self._clock(), Delivery.QUEUED, priority)
        self.state.message(message)
        await self.store.put_message(message)
        self._apply_status(bundle, self.node.status(bundle))
        return message

    async def send_position(self) -> BundleId | None:
        fix = self._position()
        if fix is None:
            return None
        self.state.own_position(fix.lat, fix.lon)
        return await self.node.send(
            self.config.command_post, encode_position(fix), kind=Kind.POSITION, priority=Priority.PRIORITY
        )

    # -- pushes from the node --------------------------------------------------------------------

    def _on_status(self, bundle: BundleId, status: BundleStatus) -> None:
        self._apply_status(bundle, status)
        self.refresh_links()

    def _apply_status(self, bundle: BundleId, status: BundleStatus) -> None:
        key = bundle.key().hex()
        sos = self.state.sos
        if status.state is State.DELIVERED and key in self._to_post:
            self.state.post_heard(self._clock())  # the command post's receipt
        if sos is not None and sos.bundle == key:
            event = {
                State.FORWARDED: SosEvent.CUSTODY,
                State.DELIVERED: SosEvent.RECEIPT,
                State.EXPIRED: SosEvent.LOST,
                State.EVICTED: SosEvent.LOST,
            }.get(status.state)
            if event is not None and self.state.sos is not None:
                before = self.state.sos.phase
                after = self.state.sos_event(event)
                if after.phase is not before:
                    self._write(self._save_sos())
            return
        state = {
            State.FORWARDED: Delivery.FORWARDED,
            State.DELIVERED: Delivery.DELIVERED,
            State.EXPIRED: Delivery.FAILED,
            State.EVICTED: Delivery.FAILED,
        }.get(status.state)
        if state is not None and self.state.message_state(key, state):
            message = next(m for m in self.state.messages if m.bundle == key)
            self._write(self.store.put_message(message))

    async def _save_sos(self) -> None:
        """The SOS as it is when the write runs: an acknowledgement stored meanwhile is not
        overwritten by the older phase this write was scheduled for."""
        if self.state.sos is not None:
            await self.store.put_sos(self.state.sos)

    def _write(self, write: Coroutine[Any, Any, None]) -> None:
        """A store write from a status callback (which may not await), kept until it is done."""
        task = asyncio.create_task(write)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    def _name(self, origin: bytes) -> str:
        certificate = self.node.engine.trust.certificate(origin)
        return certificate.name if certificate is not None else origin.hex()[:8]

    async def _handle(self, delivery: NodeDelivery) -> None:
        now = self._clock()
        if delivery.origin == self._post:
            self.state.post_heard(now)
        if delivery.kind == SOS_ACK:
            try:
                ack = decode_sos_ack(delivery.payload)
            except SosDecodeError as exc:
                log.warning("SOS acknowledgement refused: %s", exc)
                return
            sos = self.state.sos
            if sos is not None and sos.number == ack.number and sos.phase is not SosPhase.CANCELLED:
                await self.store.put_sos(self.state.sos_event(SosEvent.ACK, ack=ack.text))
        elif delivery.kind == Kind.TEXT:
            text = delivery.payload.decode("utf-8", errors="replace")
            message = Message(
                delivery.bundle_id.key().hex(),
                False,
                self._name(delivery.origin),
                text,
                now,
                Delivery.RECEIVED,
                delivery.priority,
            )
            self.state.message(message)
            await self.store.put_message(message)
        elif delivery.kind == Kind.POSITION:
            with contextlib.suppress(PositionDecodeError, ValueError):
                fix = decode_position(delivery.payload)
                self.state.unit(Unit(self._name(delivery.origin), fix.lat, fix.lon, fix.fixed))
        elif delivery.kind == NG112_ALARM:
            self._alarm(delivery)
        elif not self._detection(delivery):
            log.info("bundle of kind %d from %s not shown by the app", delivery.kind, delivery.origin.hex())

    def _alarm(self, delivery: NodeDelivery) -> None:
        try:
            record = decode_record(delivery.payload)
        except RecordError as exc:
            log.warning("alarm from %s refused: %s", delivery.origin.hex()[:8], exc)
            return
        hazard = Hazard(record.code) if record.code in Hazard._value2member_map_ else Hazard.OTHER
        title = record.event or HAZARDS.get(hazard, HAZARDS[Hazard.OTHER]).event
        lat = record.lat_e7 / 1e7 if record.lat_e7 is not None else None
        lon = record.lon_e7 / 1e7 if record.lon_e7 is not None else None
        self.state.alarm(
            IncidentAlarm(
                f"alarm-{record.identifier}",
                delivery.priority,
                title,
                record.text,
                float(record.sent),
                lat,
                lon,
                self._name(delivery.origin),
                hazard=hazard.name.lower(),
                zone=record.zone,
                floor=record.floor,
            )
        )

    def _detection(self, delivery: NodeDelivery) -> bool:
        """A camera detection (False: not one). analytics_edge is imported here, on first use: it
        brings numpy, half a second the SOS screen should not wait for at start."""
        from analytics_edge.events import EventDecodeError, decode_event
        from analytics_edge.kinds import DETECTION_EVENT

        if delivery.kind != DETECTION_EVENT:
            return False
        try:
            event = decode_event(delivery.payload)
        except EventDecodeError as exc:
            log.warning("detection from %s refused: %s", delivery.origin.hex()[:8], exc)
            return True
        name = self._name(delivery.origin)
        title = f"{event.type.name.lower().replace('_', ' ')} ({event.phase.name.lower()})"
        alarm = IncidentAlarm(
            f"detection-{delivery.origin.hex()[:8]}-{event.subject}",
            event.priority if isinstance(event.priority, Priority) else Priority(int(event.priority)),
            title,
            f"camera {name}, score {event.score:.2f}",
            event.time,
            source=name,
        )
        self.state.alarm(alarm)
        return True

    def refresh_links(self) -> None:
        """Rows for the link screen from the node's core (called on every status push and on show)."""
        core = self.node.engine.core
        rows = []
        for name, link in self.node.links.items():
            depths = core.queue_depths(name) if core.has_link(name) else {}
            airtime_left = None
            state = getattr(link, "state", None)
            if link.profile.duty_cycle < 1.0 and callable(state):
                airtime_left = max(0.0, link.profile.duty_cycle * 3600.0 - state().airtime_last_hour_s)
            rows.append(
                LinkRow(
                    name,
                    link.profile.kind,
                    len(core.neighbours(name)),
                    {p.name: depths.get(p, 0) for p in Priority},
                    airtime_left,
                )
            )
        self.state.link_rows(rows)
