"""The command post application: every delivery into the journal and the live stream, then acked.

The journal entry is committed before the store's acknowledgement, so a crash between the two
re-delivers into the idempotent journal rather than losing the delivery. Because the journal keeps a
message once per bundle id (its primary key) and a record once per record id, the feed takes
deliveries before the node's own commit (``inbox_batches(idempotent=True)``): a bundle seen again
after a failed commit or a crash changes nothing. Installed applications
(NG112 alarms, camera detections) turn their payload kinds into records through
:class:`relay.apps.CommandPostApp` factories found in the ``mesh112.command_post`` entry-point group.
What stock Meshtastic radios say on a LoRa channel becomes ``meshtastic`` records, marked
unauthenticated and within a budget (:mod:`relay.heard`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict
from importlib.metadata import entry_points

from relay.api.app import ApiContext
from relay.apps import CommandPostApp
from relay.bundle import Kind, Priority, from_epoch
from relay.engine import Delivery
from relay.heard import RECORD_TYPE as HEARD_RECORD
from relay.heard import Heard, HeardGate, listen
from relay.journal import Change, JournalBackend, MessageEntry, RecordEntry, UnitHeard
from relay.node import Node
from relay.position import (
    InvalidPositionError,
    Position,
    PositionDecodeError,
    check_not_ahead,
    decode_position,
)

log = logging.getLogger("mesh112.command_post")

MAX_PENDING_ACKS = 256  # deliveries recorded in the journal whose store acknowledgement is in flight
MAX_HEARD_QUEUE = 64  # stock Meshtastic packets waiting for the journal
# read per delivery: an enum member or its name is a slow lookup on Python 3.11
_TEXT, _POSITION = Kind.TEXT, Kind.POSITION
_PRIORITY_NAMES = tuple(priority.name for priority in Priority)  # by value


def command_post_apps(node: Node) -> list[CommandPostApp]:
    return [entry.load()(node) for entry in entry_points(group="mesh112.command_post")]


class CommandPostFeed:
    """Moves deliveries from the node into the journal and the live stream, then acknowledges them."""

    def __init__(
        self, node: Node, journal: JournalBackend, ctx: ApiContext, apps: list[CommandPostApp]
    ) -> None:
        self._node, self._journal, self._ctx = node, journal, ctx
        self._apps = {number: app for app in apps for number in app.kinds}
        self._heard: asyncio.Queue[Heard] = asyncio.Queue(MAX_HEARD_QUEUE)
        self.heard_gate = HeardGate()
        listen(node.links.values(), lambda link: str(link.profile.name), self._on_heard)

    def _on_heard(self, heard: Heard) -> None:
        if self.heard_gate.allow(heard):
            try:
                self._heard.put_nowait(heard)
                return
            except asyncio.QueueFull:
                self.heard_gate.dropped += 1
        log.warning(
            "stock Meshtastic packet from %s dropped (%d so far)", heard.radio_id, self.heard_gate.dropped
        )

    async def _record_heard(self) -> None:
        while True:
            heard = await self._heard.get()
            entry = RecordEntry(
                heard.record_id(), HEARD_RECORD, heard.radio_id, "ROUTINE", heard.at, heard.at, heard.body()
            )
            stored = await self._journal.put_record(entry)
            self._ctx.hub.publish(Change(stored.seq, "record", stored).event())

    async def run(self) -> None:
        """Record each burst of deliveries, then acknowledge it to the store in one write. The
        acknowledgements run in the background (bounded), so the next burst is recorded while the
        store commits; the journal entries are committed first, so a crash in between only
        re-delivers into the idempotent journal."""
        acks: set[asyncio.Task[None]] = set()
        heard = asyncio.create_task(self._record_heard(), name="heard-on-the-air")
        try:
            async for deliveries in self._node.inbox_batches(idempotent=True):
                await self.record(deliveries)
                if len(acks) >= MAX_PENDING_ACKS:
                    await asyncio.wait(acks, return_when=asyncio.FIRST_COMPLETED)
                task = asyncio.create_task(self._node.ack_many(deliveries))
                acks.add(task)
                task.add_done_callback(acks.discard)
        finally:
            for task in [*acks, heard]:
                task.cancel()
            await asyncio.gather(*acks, heard, return_exceptions=True)

    async def record(self, deliveries: list[Delivery]) -> None:
        """Record a burst: each unit heard once (with the newest position among its deliveries) and
        the text messages in one journal commit, application records one by one."""
        received = time.time()
        # per origin: its hex id (the unit's and each message's), name, roles and newest position
        units: dict[bytes, tuple[str, str, list[str], Position | None]] = {}
        positions: list[tuple[Delivery, str, Position]] = []
        texts: list[MessageEntry] = []
        destination, destination_text = None, ""  # a burst's deliveries mostly share one: str() once
        trust = self._node.engine.trust
        for delivery in deliveries:
            origin = delivery.origin
            known = units.get(origin)
            if known is None:  # a burst's deliveries mostly share a few origins: looked up once each
                certificate = trust.certificate(origin)
                origin_hex = origin.hex()
                name = certificate.name if certificate else origin_hex[:8]
                roles = sorted(certificate.roles) if certificate else []
                known = units[origin] = (origin_hex, name, roles, None)
            kind = delivery.kind
            if kind == _TEXT:
                if delivery.destination is not destination:
                    destination = delivery.destination
                    destination_text = str(destination)
                texts.append(
                    MessageEntry(
                        delivery.key.hex(),
                        known[0],
                        destination_text,
                        kind,
                        _PRIORITY_NAMES[delivery.priority],
                        from_epoch(delivery.created),
                        received,
                        delivery.payload.decode("utf-8", "replace"),
                    )
                )
            elif kind == _POSITION:  # the unit's entry changes only for a newer fix
                origin_hex, name, roles, newest = known
                position = self._position(delivery, name, received)
                if position is not None:
                    positions.append((delivery, name, position))
                    if newest is None or position.fixed > newest.fixed:
                        units[origin] = (origin_hex, name, roles, position)
        heard = [
            UnitHeard(origin_hex, name, roles, received, position)
            for origin_hex, name, roles, position in units.values()
        ]
        stored_units, stored_texts = await self._journal.record_burst(heard, texts)
        for unit in stored_units:
            self._ctx.hub.publish(Change(unit.seq, "unit", unit).event())
        for delivery, name, position in positions:
            event = {
                "bundle_id": delivery.key.hex(),
                "origin": delivery.origin.hex(),
                "name": name,
            }
            self._ctx.hub.publish({"type": "position", **event, **asdict(position)})
        if self._ctx.hub.subscribers:  # no event is built for nobody (a backlog's burst)
            for stored in stored_texts:
                self._ctx.hub.publish(Change(stored.seq, "message", stored).event())
        for delivery in deliveries:
            if delivery.kind not in (_TEXT, _POSITION):
                await self._record_app(delivery, units[delivery.origin][1], received)

    async def _record_app(self, delivery: Delivery, name: str, received: float) -> None:
        app = self._apps.get(delivery.kind)
        if app is None:
            log.info("delivery of kind %d from %s has no command post application", delivery.kind, name)
            return
        for update in await app.handle(delivery):
            record = RecordEntry(
                update.record_id,
                app.record_type,
                delivery.origin.hex(),
                delivery.priority.name,
                from_epoch(delivery.created),
                received,
                update.body,
            )
            stored_record = await self._journal.put_record(record)
            self._ctx.hub.publish(Change(stored_record.seq, "record", stored_record).event())

    @staticmethod
    def _position(delivery: Delivery, name: str, received: float) -> Position | None:
        """The position a delivery reports, or None (logged) if it is damaged, hostile or from a
        clock far ahead."""
        try:
            position = decode_position(delivery.payload)
            check_not_ahead(position, received)
        except (PositionDecodeError, InvalidPositionError) as exc:
            log.warning("position from %s refused: %s", name, exc)
            return None
        return position
