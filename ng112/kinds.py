"""Bundle payload kinds of the NG112 application (the relay reserves 0-31 for its own)."""

from __future__ import annotations

from ng112.errors import RecordError
from ng112.fetch import decode_fetch
from ng112.followup import decode_followup
from ng112.record import decode_record
from relay.bundle import Kind
from relay.kinds import KindRegistry

NG112_ALARM = 32  # compact alarm record (Alert, Update, Cancel), building -> command post
NG112_ACK = 33  # compact Ack record (receipt, operator acknowledgement), command post -> building
NG112_FOLLOWUP = 34  # the whole CAP and PIDF-LO of an alarm, after its first frame (ng112.followup)
NG112_FETCH = 35  # command post -> gateway node: send this alarm's follow-up again (ng112.fetch)

assert NG112_ALARM >= Kind.FIRST_APPLICATION_KIND


def _alarm(payload: bytes) -> None:
    try:
        record = decode_record(payload)
    except RecordError as exc:
        raise ValueError(str(exc)) from None
    if record.msg_type in ("Ack", "Error"):
        raise ValueError(f"an NG112 alarm bundle cannot carry a {record.msg_type} record")


def _ack(payload: bytes) -> None:
    try:
        record = decode_record(payload)
    except RecordError as exc:
        raise ValueError(str(exc)) from None
    if record.msg_type != "Ack" or record.reference is None:
        raise ValueError("an NG112 ack bundle must carry an Ack record with a reference")


def _followup(payload: bytes) -> None:
    try:
        decode_followup(payload)
    except RecordError as exc:
        raise ValueError(str(exc)) from None


def _fetch(payload: bytes) -> None:
    try:
        decode_fetch(payload)
    except RecordError as exc:
        raise ValueError(str(exc)) from None


def register_kinds(registry: KindRegistry) -> None:
    """Register kinds 32-35 with validators, so a malformed record is refused when sent."""
    registry.register(NG112_ALARM, "ng112_alarm", _alarm)
    registry.register(NG112_ACK, "ng112_ack", _ack)
    registry.register(NG112_FOLLOWUP, "ng112_followup", _followup)
    registry.register(NG112_FETCH, "ng112_fetch", _fetch)
