"""Payload kinds of the responder app (the relay reserves 0-31, NG112 has 32-34, cameras 40-41)."""

from __future__ import annotations

from mobile.sos import decode_sos, decode_sos_ack
from relay.kinds import KindRegistry

SOS = 48  # a responder's SOS or its cancellation (mobile.sos.SosRecord), FLASH to the command post
SOS_ACK = 49  # the command post's acknowledgement of an SOS (mobile.sos.SosAck), back to the responder


def _sos(payload: bytes) -> None:
    decode_sos(payload)


def _sos_ack(payload: bytes) -> None:
    decode_sos_ack(payload)


def register_kinds(registry: KindRegistry) -> None:
    """Register 48-49 with validators, so a malformed SOS is refused on the device that made it."""
    registry.register(SOS, "sos", _sos)
    registry.register(SOS_ACK, "sos_ack", _sos_ack)
