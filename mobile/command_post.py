"""The command post side of the responder app: SOS bundles become ``sos`` records, acks go back.

Loaded by the relay daemon through the ``mesh112.command_post`` entry point. An SOS (kind 48) from a
responder becomes the journal record ``sos-<origin>-<number>``; the same SOS sent twice (the app
re-sends one it confirmed but crashed before storing) is the same record, and a cancel updates it.
An operator's acknowledgement through the API (``POST /api/v1/records/<id>/ack``) travels back to
the responder as a FLASH kind-49 bundle, which the app shows as "acknowledged".
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from mobile.kinds import SOS, SOS_ACK, register_kinds
from mobile.sos import SosAck, SosDecodeError, decode_sos, encode_sos_ack
from relay.apps import RecordUpdate
from relay.bundle import BundleId, Destination, Priority, from_epoch
from relay.engine import Delivery
from relay.node import Node

log = logging.getLogger(__name__)

RECORD_TYPE = "sos"
ACK_LIFETIME_S = 24 * 3600


def record_id(origin: bytes, number: int) -> str:
    return f"sos-{origin.hex()}-{number}"


def parse_record_id(text: str) -> tuple[bytes, int]:
    prefix, origin, number = [*text.split("-"), "", ""][:3]
    if prefix != "sos" or len(origin) != 32 or not number.isdigit():
        raise ValueError(f"not an SOS record id: {text!r} (expected sos-<32 hex digits>-<number>)")
    return bytes.fromhex(origin), int(number)


class SosRecords:
    """The ``CommandPostApp`` for SOSes (see :class:`relay.apps.CommandPostApp`)."""

    record_type: ClassVar[str] = RECORD_TYPE
    kinds: ClassVar[dict[int, str]] = {SOS: "sos"}

    def __init__(self, node: Node) -> None:
        self._node = node
        self._raised: dict[str, dict[str, Any]] = {}  # record id -> body, so a cancel keeps the raise

    async def handle(self, delivery: Delivery) -> list[RecordUpdate]:
        try:
            sos = decode_sos(delivery.payload)
        except SosDecodeError as exc:
            log.warning("SOS from %s refused: %s", delivery.origin.hex()[:8], exc)
            return []
        certificate = self._node.engine.trust.certificate(delivery.origin)
        name = certificate.name if certificate is not None else delivery.origin.hex()[:8]
        rid = record_id(delivery.origin, sos.number)
        body = self._raised.get(rid, {})
        if sos.cancel:
            body = {
                **body,
                "responder": name,
                "number": sos.number,
                "state": "cancelled",
                "cancelled": sos.raised,
                "summary": f"SOS from {name} CANCELLED by the responder",
            }
        else:
            body = {
                "summary": f"SOS from {name}" + (f": {sos.text}" if sos.text else ""),
                "state": "raised",
                "responder": name,
                "number": sos.number,
                "raised": sos.raised,
                "sent": from_epoch(delivery.created),
                "text": sos.text,
                **body,  # a raise re-sent after a cancel keeps the cancel
            }
            if sos.position is not None:
                body["location"] = {"lat": sos.position.lat, "lon": sos.position.lon, "source": "responder"}
        self._raised[rid] = body
        return [RecordUpdate(rid, body)]

    async def acknowledge(self, record_id: str, ack: dict[str, Any]) -> BundleId | None:
        origin, number = parse_record_id(record_id)
        text = f"{ack.get('operator', 'command post')}: {ack.get('action', 'acknowledged')}"
        return await self._node.send(
            Destination.to_node(origin),
            encode_sos_ack(SosAck(number, text)),
            kind=SOS_ACK,
            priority=Priority.FLASH,
            lifetime=ACK_LIFETIME_S,
        )


def command_post_app(node: Node) -> SosRecords:
    register_kinds(node.kinds)
    return SosRecords(node)
