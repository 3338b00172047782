"""Between full CAP and the compact record: extract at the gateway, rebuild at the command post.

The gateway turns an accepted :class:`EmergencyRequest` into the first frame's :class:`AlarmRecord`
(:func:`record_from_request`). Until the follow-up with the whole CAP arrives
(:mod:`ng112.followup`), the command post shows a provisional canonical CAP 1.2 alert rebuilt from
the record and the building enrolment (:func:`record_to_cap`): identifier ``<keyid>-<seq>`` (the seq
is the digest of the CAP's sender, identifier and sent, so the follow-up ties back to it), ``sent``
in ``+00:00`` form, the event and language as the panel wrote them, sender, address, contacts and
hazards from the enrolment. The CAP's own XML signature cannot survive re-encoding; end-to-end
integrity covers the record and the follow-up instead.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from ng112.buildings import Building
from ng112.cap import CATEGORIES, CapAlert, CapArea, CapInfo, CapReference
from ng112.followup import follows
from ng112.hazards import HAZARDS, SUBSTANCES, Hazard, Substance, classify
from ng112.record import (
    AckCode,
    AlarmRecord,
    alarm_seq,
    decode_uncertainty,
    encode_uncertainty,
    fitted,
    incident_code,
)
from ng112.request import EmergencyRequest

_ZONE_PARAMETERS = ("zone", "detector", "room", "area")
_FLOOR = re.compile(r"^\s*(-?\d{1,3})")


def _floor(value: str | None) -> int | None:
    match = _FLOOR.match(value or "")
    if match is None:
        return None
    floor = int(match.group(1))
    return floor if -128 <= floor <= 127 else None


def _circle_point(info: CapInfo | None) -> tuple[float, float, float] | None:
    """The first CAP ``<circle>`` ("lat,lon radius-km") of the alert, for an alert without PIDF-LO."""
    for area in info.areas if info else ():
        for circle in area.circles:
            try:
                centre, radius = circle.split()
                lat, lon = (float(v) for v in centre.split(","))
                radius_m = float(radius) * 1000
            except ValueError:
                continue
            if -90 <= lat <= 90 and -180 <= lon <= 180 and math.isfinite(radius_m):
                return lat, lon, radius_m
    return None


def record_from_request(request: EmergencyRequest, key_id: int, now: float) -> AlarmRecord:
    """The first frame of an accepted request (CAP, location, text), from sender ``key_id``."""
    cap = request.cap
    info = cap.infos[0] if cap and cap.infos else None
    params = {k.lower(): v for k, v in info.parameters} if info else {}
    civic = request.location.civic[0] if request.location and request.location.civic else None
    zone = (
        next((params[k] for k in _ZONE_PARAMETERS if params.get(k)), "")
        or (civic.room if civic else "")
        or ""
    )
    floor = _floor(civic.floor if civic else None)
    if floor is None:
        floor = _floor(params.get("floor"))
    point = request.location.best_point() if request.location else None
    point = point or _circle_point(info)
    lat_e7 = round(point[0] * 1e7) if point else None
    lon_e7 = round(point[1] * 1e7) if point else None
    uncertainty = encode_uncertainty(point[2]) if point else 0
    if cap is None:
        sent = datetime.fromtimestamp(int(now), UTC)
        seq = alarm_seq(request.sender_uri, request.call_id, sent)
        text = request.text or ""
        hazard, substance = classify(text, ())
        return fitted(
            AlarmRecord(
                "Alert", "Actual", key_id, seq, int(now), zone=zone, floor=floor, text=text,
                code=hazard, substance=substance, followup=follows(request), lat_e7=lat_e7,
                lon_e7=lon_e7, uncertainty=uncertainty,
            )
        )  # fmt: skip
    reference = None
    if cap.references:
        ref = cap.references[0]
        try:
            ref_sent = datetime.fromisoformat(ref.sent.replace("Z", "+00:00"))
            ref_key = key_id if ref.sender.lower() == cap.sender.lower() else None
            if ref_key is not None and ref_sent.tzinfo is not None:
                reference = (ref_key, alarm_seq(ref.sender, ref.identifier, ref_sent))
        except ValueError:
            reference = None
    categories = tuple(c for c in CATEGORIES if c in info.categories) if info else ("Other",)  # wire order
    event = info.event if info else ""
    hazard, substance = (
        classify(event, categories, info.event_codes, info.parameters, info.headline or "")
        if info
        else (Hazard.OTHER, Substance.NONE)
    )
    language = info.language if info and info.language.isascii() and len(info.language) <= 12 else ""
    return fitted(
        AlarmRecord(
            msg_type=cap.msg_type,
            status=cap.status,
            key_id=key_id,
            seq=alarm_seq(cap.sender, cap.identifier, cap.sent),
            sent=max(0, int(cap.sent.timestamp())),
            incident=incident_code(cap.incidents),
            categories=categories,
            code=hazard,
            urgency=info.urgency if info else "Unknown",
            severity=info.severity if info else "Unknown",
            certainty=info.certainty if info else "Unknown",
            floor=floor,
            reference=reference,
            zone=zone,
            text=(info.headline or "") if info else (cap.note or ""),
            substance=substance,
            language="" if language == "en-US" else language,
            event="" if event == HAZARDS[hazard].event else event,
            followup=follows(request),
            lat_e7=lat_e7,
            lon_e7=lon_e7,
            uncertainty=uncertainty,
        )
    )


def ack_record(alarm: AlarmRecord, code: AckCode, text: str, now: float) -> AlarmRecord:
    """A CAP ``Ack`` for ``alarm`` as a record: its code, and the operator's name or free text."""
    sent = int(now)
    seq = alarm_seq(f"ack:{code.name}", alarm.identifier, datetime.fromtimestamp(sent, UTC))
    return fitted(
        AlarmRecord(
            "Ack", alarm.status, alarm.key_id, seq, sent, alarm.incident, alarm.categories, int(code),
            reference=(alarm.key_id, alarm.seq), text=text,
        )
    )  # fmt: skip


def sender_uri(key_id: int, building: Building | None) -> str:
    return building.sender if building else f"urn:mesh112:building:{key_id:08x}"


def record_to_cap(
    record: AlarmRecord, building: Building | None, reference_sent: datetime | None = None
) -> CapAlert:
    """Canonical CAP 1.2 for ``record``; ``reference_sent`` is the ``sent`` of the referenced alert."""
    sender = sender_uri(record.key_id, building)
    references: tuple[CapReference, ...] = ()
    if record.reference is not None and reference_sent is not None:
        ref_key, ref_seq = record.reference
        ref_sent = reference_sent.astimezone(UTC).replace(microsecond=0).isoformat()
        references = (CapReference(sender, f"{ref_key:08x}-{ref_seq}", ref_sent),)
    incidents = (f"{record.key_id:08x}-{record.incident:04x}",)
    if record.msg_type == "Ack":
        code = AckCode(record.code) if record.code in AckCode._value2member_map_ else AckCode.RECEIVED
        note = code.name.lower().replace("_", " ") + (f": {record.text}" if record.text else "")
        return CapAlert(
            record.identifier, sender, record.sent_datetime, record.status, "Ack", "Private",
            note=note, references=references, incidents=incidents,
        )  # fmt: skip
    hazard = record.hazard
    parameters = [("hazard", hazard.name.lower())]
    if record.substance in Substance._value2member_map_ and record.substance:
        parameters.append(("substance", SUBSTANCES[Substance(record.substance)][0]))
    if record.zone:
        parameters.append(("zone", record.zone))
    if record.floor is not None:
        parameters.append(("floor", str(record.floor)))
    area_desc = building.address_line() if building and building.address else sender
    if record.floor is not None:
        area_desc += f", floor {record.floor}"
    if record.zone:
        area_desc += f", zone {record.zone}"
    circles: tuple[str, ...] = ()
    if record.lat_e7 is not None and record.lon_e7 is not None:
        radius_km = decode_uncertainty(record.uncertainty) / 1000
        circles = (
            f"{record.lat_e7 / 1e7:.7f},{record.lon_e7 / 1e7:.7f} {math.ceil(radius_km * 1000) / 1000:g}",
        )
    elif building and building.lat is not None and building.lon is not None:
        circles = (f"{building.lat:.7f},{building.lon:.7f} 0.05",)
    info = CapInfo(
        categories=record.categories or ("Other",),
        event=record.event_text,
        urgency=record.urgency,
        severity=record.severity,
        certainty=record.certainty,
        sender_name=building.name if building else None,
        language=record.language or "en-US",
        headline=record.text or record.event_text,
        instruction="; ".join(building.hazards) if building and building.hazards else None,
        contact="; ".join(building.contacts) if building and building.contacts else None,
        parameters=tuple(parameters),
        areas=(CapArea(area_desc, circles=circles),),
    )
    return CapAlert(
        record.identifier, sender, record.sent_datetime, record.status, record.msg_type, "Private",
        references=references, incidents=incidents, infos=(info,),
    )  # fmt: skip
