"""The command post side of NG112: alarm bundles become journal records, acknowledgements go back.

Loaded by the relay daemon through the ``mesh112.command_post`` entry point. Each alarm record
(kind 32, the first frame) is applied to an :class:`AlarmBook`; the follow-up (kind 34, the whole CAP
and PIDF-LO) is merged into the same alarm when it arrives, from the same origin. The alarm's current
state becomes a journal record ``alarm/<key id>-<seq>`` whose body the dashboard shows
(:func:`alarm_body`: hazard, the CAP's own identifier, sender, sent and language, which parts are
still on their way, a ``sent`` far from the gateway's clock flagged with its age). A new alarm sends
the automatic receipt back to the gateway node at once; the operator's acknowledgement through the
API (an action code or free text, :func:`ng112.acks.parse_action`) sends the second Ack. Both travel
as kind-33 bundles to the node the alarm came from.

What the book needs after a restart (every record and follow-up received, where it came from,
operator acks) is kept in a small SQLite file beside the node's store, and replayed into a fresh
book on start. The CAP feed of active alarms and the enrolled buildings (``buildings``, for the
console's map) are served under ``/api/v1/apps/alarm/`` (see :attr:`AlarmRecords.router`).

An Update or Cancel of an alert this command post never received is shown as an alarm of its own,
marked ``orphan`` ("update of an alert not received (references ...)"); if the alert arrives later,
that record's body becomes a pointer (``merged_into``) and the alarm is shown whole under the alert's
record. A follow-up pending for ``fetch_after_s`` is asked for again (:mod:`ng112.fetch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from fastapi import APIRouter, HTTPException
from fastapi import Path as PathParam
from fastapi.responses import Response

from ng112.alarmbook import AlarmBook, AlarmKey, AlarmMerged, AlarmRaised, AlarmView, Duplicate, SendAck
from ng112.buildings import BuildingRegistry
from ng112.cap import CapAlert, build_cap_xml, format_datetime
from ng112.errors import PidfError, RecordError
from ng112.feed import cap_feed_xml, current_alert
from ng112.fetch import FETCH_AFTER_S, FETCH_LIFETIME_S, FetchSchedule, encode_fetch
from ng112.followup import FollowUp, check_followup, decode_followup
from ng112.hazards import SUBSTANCES, Substance
from ng112.kinds import NG112_ACK, NG112_ALARM, NG112_FETCH, NG112_FOLLOWUP, register_kinds
from ng112.pidfl import parse_pidf
from ng112.record import AckCode, AlarmRecord, decode_record, decode_uncertainty
from relay import sqlite
from relay.apps import RecordUpdate
from relay.bundle import BundleId, Destination, Priority, from_epoch
from relay.engine import Delivery, SendError
from relay.node import Node
from relay.store import StoreError

log = logging.getLogger(__name__)

STATE_FILE = "ng112-command-post.sqlite"
BUILDINGS_FILE = "buildings.toml"  # the building enrolment table, in the node's data directory
ACK_LIFETIME_S = 24 * 3600
STALE_AFTER_S = 300  # a CAP sent this long before the gateway took it: stale, or the panel's clock is slow
AHEAD_AFTER_S = 60  # a CAP sent this far after the gateway took it: the panel's clock is ahead
PENDING_PARTS = [
    "CAP identifier, sender and sent",
    "description",
    "instruction",
    "contacts",
    "parameters",
    "PIDF-LO and civic address",
    "RFC 7852 blocks",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS record (
    id INTEGER PRIMARY KEY, key_id INTEGER NOT NULL, seq INTEGER NOT NULL, sent INTEGER NOT NULL,
    raw BLOB NOT NULL, origin BLOB NOT NULL, received_at REAL NOT NULL, accepted_at REAL NOT NULL,
    UNIQUE (key_id, seq, sent)
);
CREATE TABLE IF NOT EXISTS followup (
    key_id INTEGER NOT NULL, seq INTEGER NOT NULL, raw BLOB NOT NULL, origin BLOB NOT NULL,
    received_at REAL NOT NULL, PRIMARY KEY (key_id, seq, origin)
);
CREATE TABLE IF NOT EXISTS operator_ack (
    key_id INTEGER NOT NULL, seq INTEGER NOT NULL, operator TEXT NOT NULL, action TEXT NOT NULL,
    at REAL NOT NULL, PRIMARY KEY (key_id, seq)
);
"""


def record_id(key: AlarmKey) -> str:
    return f"{key[0]:08x}-{key[1]}"


def parse_record_id(text: str) -> AlarmKey:
    key_hex, _, seq = text.partition("-")
    if len(key_hex) != 8 or not seq.isascii() or not seq.isdigit():
        raise ValueError(f"not an alarm record id: {text!r} (expected <8 hex digits>-<seq>)")
    return int(key_hex, 16), int(seq)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(abs(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def sent_check(sent: int, accepted_at: float) -> dict[str, Any]:
    """Compares the CAP's ``sent`` with the gateway's clock when it took the alarm (bundle creation),
    so the time the alarm spent crossing the mesh does not count."""
    skew = accepted_at - sent
    if skew > STALE_AFTER_S:
        state = "stale"
        note = f"sent {_duration(skew)} before the gateway took it: stale, or the panel clock is slow"
    elif skew < -AHEAD_AFTER_S:
        state, note = "ahead", f"sent {_duration(skew)} after the gateway took it: the panel clock is ahead"
    else:
        state, note = "ok", "sent when the gateway took it"
    return {"state": state, "age_s": round(skew, 1), "note": note}


def alarm_body(
    view: AlarmView,
    registry: BuildingRegistry,
    followup: FollowUp | None,
    accepted_at: float,
) -> dict[str, Any]:
    """What the dashboard and API clients see of an alarm's current state.

    ``followup`` is the current record's follow-up if it arrived; until then the CAP fields are the
    first frame's and ``followup`` says ``pending``."""
    current = view.current
    building = registry.by_key(view.first.key_id)
    original = check_followup(followup) if followup is not None else None
    alert = current_alert(view, registry, original)
    info = alert.infos[0] if alert.infos else None
    event = info.event if info else current.event_text
    place = building.name if building else f"unenrolled building {view.first.key_id:08x}"
    address = building.address_line() if building else ""
    detail = ", ".join(
        part
        for part in (
            address,
            f"floor {current.floor}" if current.floor is not None else "",
            f"zone {current.zone}" if current.zone else "",
        )
        if part
    )
    label = "" if view.actual else f"[{view.first.status.upper()}] "
    label = ("[UNAUTHENTICATED] " if view.first.unauthenticated else "") + label
    orphan = _orphan_note(view, original)
    label += f"[{orphan}] " if orphan else ""
    location: dict[str, Any] | None = None
    if current.lat_e7 is not None and current.lon_e7 is not None:
        location = {
            "lat": current.lat_e7 / 1e7,
            "lon": current.lon_e7 / 1e7,
            "uncertainty_m": round(decode_uncertainty(current.uncertainty), 1),
            "source": "alarm",
        }
    elif building is not None and building.lat is not None and building.lon is not None:
        location = {"lat": building.lat, "lon": building.lon, "source": "enrolment"}
    substance = (
        SUBSTANCES[Substance(current.substance)][0]
        if current.substance and current.substance in Substance._value2member_map_
        else None
    )
    hazard = current.hazard.name.lower().replace("_", " ")
    state = "complete" if followup is not None else ("pending" if current.followup else "none")
    return {
        "summary": f"{label}{current.msg_type}: {event} at {place}" + (f" ({detail})" if detail else ""),
        "status": view.first.status,
        "actual": view.actual,
        "authenticated": not view.first.unauthenticated,
        "msgType": current.msg_type,
        "cancelled": view.cancelled,
        "orphan": orphan,
        "hazard": hazard + (f" ({substance})" if substance else ""),
        "substance": substance,
        "event": event,
        "headline": info.headline if info else None,
        "headline_cut": current.text_cut and original is None,
        "severity": current.severity,
        "urgency": current.urgency,
        "certainty": current.certainty,
        "cap": {
            "identifier": original.identifier if original else None,
            "sender": original.sender if original else None,
            "sent": format_datetime(original.sent if original else current.sent_datetime),
            "language": info.language if info else (current.language or "en-US"),
            "digest": record_id(view.key),
        },
        "sent_check": sent_check(current.sent, accepted_at),
        "followup": state,
        "pending_parts": PENDING_PARTS if state == "pending" else [],
        "description": info.description if original and info else None,
        "instruction": info.instruction if original and info else None,
        "contact": info.contact if original and info else None,
        "parameters": [list(p) for p in info.parameters] if original and info else [],
        "civic_address": _civic(followup),
        "additional_data": [content_type for content_type, _ in followup.blocks] if followup else [],
        "building": {
            "key_id": f"{view.first.key_id:08x}",
            "name": building.name if building else None,
            "address": address or None,
            "floors": building.floors if building else None,
            "hazards": list(building.hazards) if building else [],
            "contacts": list(building.contacts) if building else [],
        },
        "floor": current.floor,
        "zone": current.zone,
        "location": location,
        "sent": current.sent,
        "received_at": round(view.received_at, 3),
        "age_on_arrival_s": round(view.age_on_arrival, 1),
        "updates": len(view.history),
        "receipt_sent": view.receipt is not None,
        "operator_ack": view.operator_ack.text if view.operator_ack else None,
        "operator_ack_code": _ack_code(view.operator_ack),
        "cap_url": f"/api/v1/apps/alarm/{record_id(view.key)}/cap.xml",
        "cap_xml": build_cap_xml(alert).decode("utf-8"),
    }


def _orphan_note(view: AlarmView, original: CapAlert | None) -> str | None:
    """For an alarm raised by an Update/Cancel whose alert never arrived: what it refers to, as the
    panel's CAP ``references`` once the follow-up is in, else the referenced alarm's record id."""
    if view.orphan_of is None:
        return None
    first = view.first
    refs = ""
    if original is not None and view.current.reference == view.orphan_of:
        refs = " ".join(f"{r.sender},{r.identifier},{r.sent}" for r in original.references)
    kind = first.msg_type.lower() if first.msg_type in ("Update", "Cancel") else "update/cancel"
    return f"{kind} of an alert not received (references {refs or record_id(view.orphan_of)})"


def merged_body(key: AlarmKey, into: AlarmView) -> dict[str, Any]:
    """What the journal keeps under an orphan alarm once it joined its original: a pointer there."""
    target = record_id(into.key)
    return {
        "summary": f"Merged into alarm {target}: the alert it refers to arrived",
        "merged_into": target,
        "status": into.first.status,
        "actual": into.actual,
        "msgType": into.current.msg_type,
        "cancelled": into.cancelled,
        "cap_url": f"/api/v1/apps/alarm/{target}/cap.xml",
        "digest": record_id(key),
    }


def _ack_code(ack: AlarmRecord | None) -> str | None:
    if ack is None or ack.code not in AckCode._value2member_map_:
        return None
    return str(AckCode(ack.code).name.lower().replace("_", " "))


def _civic(followup: FollowUp | None) -> dict[str, str]:
    if followup is None or followup.location_xml is None:
        return {}
    try:
        location, _ = parse_pidf(followup.location_xml)
    except PidfError:
        return {}
    return dict(location.civic[0].fields) if location.civic else {}


class AlarmRecords:
    """The ``CommandPostApp`` for NG112 alarms (record type ``alarm``)."""

    record_type = "alarm"
    kinds: ClassVar[Mapping[int, str]] = {
        NG112_ALARM: "ng112_alarm",
        NG112_ACK: "ng112_ack",
        NG112_FOLLOWUP: "ng112_followup",
    }

    def __init__(
        self,
        node: Node,
        state_path: Path,
        registry: BuildingRegistry,
        clock: Callable[[], float] = time.time,
        fetch_after_s: float = FETCH_AFTER_S,
    ) -> None:
        self._node, self._registry, self._clock = node, registry, clock
        self.book = AlarmBook()
        self._received: dict[AlarmKey, float] = {}  # record -> when it arrived here
        self._fetches = FetchSchedule(fetch_after_s)
        self._fetcher: asyncio.Task[None] | None = None
        self._origins: dict[AlarmKey, bytes] = {}  # alarm -> node that sent it (where Acks go)
        self._accepted: dict[AlarmKey, float] = {}  # record -> when the gateway took it (bundle created)
        self.followups: dict[tuple[AlarmKey, bytes], FollowUp] = {}  # (record, origin) -> follow-up
        self._db = sqlite.connect_sync(state_path, autocommit=True)
        self._db.executescript(_SCHEMA)
        self._replay()
        self.router = self._routes()

    def _replay(self) -> None:
        rows = self._db.execute("SELECT raw, origin, received_at, accepted_at FROM record ORDER BY id")
        for raw, origin, received_at, accepted_at in rows.fetchall():
            record = decode_record(raw)
            self._accepted[(record.key_id, record.seq)] = accepted_at
            self._received.setdefault((record.key_id, record.seq), received_at)
            for event in self.book.apply(record, received_at):
                if isinstance(event, AlarmRaised):
                    self._origins[event.view.key] = bytes(origin)
        for raw, origin in self._db.execute("SELECT raw, origin FROM followup").fetchall():
            followup = decode_followup(raw)
            self.followups[(followup.key, bytes(origin))] = followup
        acks = self._db.execute("SELECT key_id, seq, operator, action, at FROM operator_ack").fetchall()
        for key_id, seq, operator, action, at in acks:
            if self.book.resolve((key_id, seq)) in self.book.alarms:
                self.book.acknowledge((key_id, seq), operator, action, at)

    async def handle(self, delivery: Delivery) -> list[RecordUpdate]:
        if delivery.kind == NG112_FOLLOWUP:
            return self._handle_followup(delivery)
        if delivery.kind != NG112_ALARM:
            return []
        try:
            record = decode_record(delivery.payload)
            if record.msg_type in ("Ack", "Error"):
                raise RecordError(f"a {record.msg_type} record is not an alarm")
        except RecordError as exc:
            log.warning("alarm bundle from %s refused: %s", delivery.origin.hex()[:8], exc)
            return []
        events = self.book.apply(record, self._clock())
        if isinstance(events[0], Duplicate):  # journal it again: a crash may have lost the first write
            return [self._update(v) for v in self.book.alarms.values() if record in v.history]
        self._accepted.setdefault((record.key_id, record.seq), from_epoch(delivery.created))
        self._received.setdefault((record.key_id, record.seq), self._clock())
        touched: list[AlarmKey] = []
        merged: list[RecordUpdate] = []
        for event in events:
            if isinstance(event, AlarmRaised):
                self._origins[event.view.key] = delivery.origin
            if isinstance(event, SendAck):
                await self._send_ack(event.ack)
            if isinstance(event, AlarmMerged):
                merged.append(RecordUpdate(record_id(event.key), merged_body(event.key, event.view)))
            view = getattr(event, "view", None)
            if view is not None and view.key not in touched:
                touched.append(view.key)
        self._db.execute(
            "INSERT OR IGNORE INTO record (key_id, seq, sent, raw, origin, received_at, accepted_at) "
            "VALUES (?,?,?,?,?,?,?)",
            (
                record.key_id, record.seq, record.sent, delivery.payload, delivery.origin, self._clock(),
                from_epoch(delivery.created),
            ),
        )  # fmt: skip
        return merged + [self._update(self.book.alarms[key]) for key in touched if key in self.book.alarms]

    def _handle_followup(self, delivery: Delivery) -> list[RecordUpdate]:
        """Keep a follow-up (it may arrive before its first frame) and update its alarm if known."""
        try:
            followup = decode_followup(delivery.payload)
            check_followup(followup)
        except RecordError as exc:
            log.warning("follow-up bundle from %s refused: %s", delivery.origin.hex()[:8], exc)
            return []
        root = self.book.root_of(followup.key)
        if root is not None and self._origins.get(root) != delivery.origin:
            log.warning("follow-up for %s from %s refused: the alarm came from another node",
                        record_id(root), delivery.origin.hex()[:8])  # fmt: skip
            return []
        if (followup.key, delivery.origin) in self.followups:
            return []
        self.followups[(followup.key, delivery.origin)] = followup
        self._db.execute(
            "INSERT OR IGNORE INTO followup (key_id, seq, raw, origin, received_at) VALUES (?,?,?,?,?)",
            (followup.key_id, followup.seq, delivery.payload, delivery.origin, self._clock()),
        )
        return [self._update(self.book.alarms[root])] if root is not None else []

    def followup_of(self, view: AlarmView) -> FollowUp | None:
        """The follow-up of the alarm's current record, if it came from the node the alarm came from."""
        origin = self._origins.get(view.key)
        if origin is None:
            return None
        return self.followups.get(((view.current.key_id, view.current.seq), origin))

    def start_fetching(self, period_s: float = 1.0) -> None:
        """Check every ``period_s`` for follow-ups pending long enough to ask for (:meth:`fetch_pending`)."""
        self._fetcher = asyncio.get_running_loop().create_task(self._fetch_loop(period_s), name="ng112-fetch")

    async def close(self) -> None:
        if self._fetcher is not None:
            self._fetcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._fetcher

    async def _fetch_loop(self, period_s: float) -> None:
        while True:
            await asyncio.sleep(period_s)
            await self.fetch_pending()

    async def fetch_pending(self) -> list[BundleId]:
        """Send a fetch request to the gateway node of every alarm whose follow-up is due to be asked
        for; returns the request bundles (the relay core routes them, over IP when it can)."""
        pending: dict[tuple[int, int], AlarmKey] = {}
        since: list[tuple[tuple[int, int], float]] = []
        for view in self.book.alarms.values():
            digest = (view.current.key_id, view.current.seq)
            if view.current.followup and self.followup_of(view) is None and view.key in self._origins:
                pending[digest] = view.key
                since.append((digest, self._received.get(digest, view.received_at)))
        sent = []
        for digest in self._fetches.due(since, self._clock()):
            origin = self._origins[pending[digest]]
            try:
                bundle_id = await self._node.send(
                    Destination.to_node(origin),
                    encode_fetch(digest),
                    kind=NG112_FETCH,
                    priority=Priority.IMMEDIATE,
                    lifetime=FETCH_LIFETIME_S,
                )
            except (SendError, StoreError) as exc:  # asked again once the request would have expired
                log.warning("fetch request for %s not sent: %s", record_id(digest), exc)
                continue
            sent.append(bundle_id)
            log.info("follow-up of %s pending: asked %s for it", record_id(digest), origin.hex()[:8])
        return sent

    async def acknowledge(self, record_id: str, ack: dict[str, Any]) -> BundleId:
        """The operator's acknowledgement: the second CAP Ack, back to the building's gateway; returns
        the Ack bundle (the API keeps it with the acknowledgement, so its delivery can be followed)."""
        key = self.book.resolve(parse_record_id(record_id))
        if key not in self.book.alarms:
            raise ValueError(f"alarm {record_id} is not in the alarm book")
        operator, action, at = str(ack["operator"]), str(ack["action"]), float(ack["at"])
        record = self.book.acknowledge(key, operator, action, at)
        self._db.execute(
            "INSERT OR REPLACE INTO operator_ack (key_id, seq, operator, action, at) VALUES (?,?,?,?,?)",
            (*key, operator, action, at),
        )
        return await self._send_ack(record)

    async def _send_ack(self, ack: AlarmRecord) -> BundleId:
        assert ack.reference is not None
        origin = self._origins[ack.reference]
        return await self._node.send(
            Destination.to_node(origin),
            ack.encode(),
            kind=NG112_ACK,
            priority=Priority.IMMEDIATE,
            lifetime=ACK_LIFETIME_S,
        )

    def _update(self, view: AlarmView) -> RecordUpdate:
        current = (view.current.key_id, view.current.seq)
        accepted = self._accepted.get(current, view.received_at)
        body = alarm_body(view, self._registry, self.followup_of(view), accepted)
        return RecordUpdate(record_id(view.key), body)

    def _routes(self) -> APIRouter:
        router = APIRouter()
        feed_id = f"urn:mesh112:{self._node.node_id.hex()}:ng112-alarms"

        @router.get("/feed.xml", response_class=Response, summary="CAP 1.2 alerts of active alarms (Atom)")
        async def feed() -> Response:
            body = cap_feed_xml(self.book, self._registry, self._clock(), feed_id, self._original)
            return Response(body, media_type="application/atom+xml")

        @router.get(
            "/buildings", summary="enrolled buildings: name, address, position, floors, hazards, contacts"
        )
        async def buildings() -> list[dict[str, Any]]:
            return sorted((b.card() for b in self._registry), key=lambda card: str(card["name"]))

        @router.get("/{alarm_id}/cap.xml", response_class=Response, summary="canonical CAP 1.2 of one alarm")
        async def cap(alarm_id: str = PathParam(max_length=32)) -> Response:
            try:
                view = self.book.alarms[self.book.resolve(parse_record_id(alarm_id))]
            except (ValueError, KeyError):
                raise HTTPException(404, f"no alarm {alarm_id!r}") from None
            alert = current_alert(view, self._registry, self._original(view))
            return Response(build_cap_xml(alert), media_type="application/cap+xml")

        return router

    def _original(self, view: AlarmView) -> CapAlert | None:
        followup = self.followup_of(view)
        return check_followup(followup) if followup is not None else None


def command_post_app(node: Node) -> AlarmRecords:
    """Entry point ``mesh112.command_post``: the alarm book beside the node's store."""
    register_kinds(node.kinds)
    store_path = node.engine.store.path
    data_dir = store_path.parent
    buildings = data_dir / BUILDINGS_FILE
    registry = BuildingRegistry.load(buildings) if buildings.exists() else BuildingRegistry()
    app = AlarmRecords(node, data_dir / STATE_FILE, registry)
    app.start_fetching()
    return app
