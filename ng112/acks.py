"""Acknowledgements back to the building: a CAP ``Ack`` in a SIP MESSAGE to the panel.

RFC 8876 §6 defines no call-back, so this is our profile (research/ng112.md §1.9): the command
post's Ack records (automatic receipt, then the operator's acknowledgement) come back over the mesh;
the gateway looks up the alarm it stored, builds a CAP 1.2 ``Ack`` whose ``<references>`` names the
panel's own ``(sender, identifier, sent)`` and a ``<note>`` saying which acknowledgement it is, and
sends it as a MESSAGE to the panel's SIP contact.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from ng112.cap import CapAlert, CapReference, build_cap_xml, validate_cap12
from ng112.record import AckKind, AlarmRecord
from ng112.sip import Headers, SipRequest
from ng112.store import StoredAlarm

ACK_CONTENT_TYPE = "application/EmergencyCallData.cap+xml"


@dataclass(frozen=True, slots=True)
class SipTarget:
    transport: str  # "udp" or "tcp"
    host: str
    port: int
    uri: str


def parse_sip_target(uri: str) -> SipTarget:
    """``sip:user@host:port;transport=tcp`` -> where to send (UDP and port 5060 by default)."""
    bare, _, params = uri.partition(";")
    transport = "udp"
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "transport" and value.strip().lower() in ("udp", "tcp"):
            transport = value.strip().lower()
    hostport = bare.split(":", 1)[1] if ":" in bare else bare
    hostport = hostport.split("@", 1)[-1]
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") and rest[1:].isascii() and rest[1:].isdigit() else 5060
    else:
        host, _, port_text = hostport.partition(":")
        port = int(port_text) if port_text.isascii() and port_text.isdigit() else 5060
    return SipTarget(transport, host, port, bare)


def ack_cap(ack: AlarmRecord, alarm: StoredAlarm, gateway_uri: str) -> CapAlert:
    kind = AckKind(ack.alarm_type) if ack.alarm_type in (1, 2) else AckKind.RECEIPT
    note = f"{'received' if kind is AckKind.RECEIPT else 'acknowledged'}: {ack.text}".rstrip(": ")
    return CapAlert(
        identifier=f"{gateway_uri.split(':', 1)[-1]}-ack-{ack.key_id:08x}-{ack.seq}",
        sender=gateway_uri,
        sent=ack.sent_datetime,
        status=alarm.record.status,
        msg_type="Ack",
        scope="Private",
        note=note,
        references=(CapReference(alarm.cap_sender, alarm.cap_identifier, alarm.cap_sent),),
        incidents=(),
    )


def ack_message(ack: AlarmRecord, alarm: StoredAlarm, gateway_uri: str, via: str) -> SipRequest:
    """The SIP MESSAGE carrying the CAP Ack; ``via`` is ``host:port`` of our sending socket."""
    target = parse_sip_target(alarm.panel)
    body = build_cap_xml(ack_cap(ack, alarm, gateway_uri))
    validate_cap12(body)
    branch = "z9hG4bK" + secrets.token_hex(8)
    headers = (
        ("via", f"SIP/2.0/{target.transport.upper()} {via};branch={branch}"),
        ("max-forwards", "70"),
        ("from", f"<{gateway_uri}>;tag={secrets.token_hex(4)}"),
        ("to", f"<{alarm.cap_sender if alarm.cap_sender.startswith('sip') else target.uri}>"),
        ("call-id", f"ack-{ack.key_id:08x}-{ack.seq}-{secrets.token_hex(4)}"),
        ("cseq", "1 MESSAGE"),
        ("content-type", ACK_CONTENT_TYPE),
    )
    return SipRequest("MESSAGE", target.uri, Headers(headers), body)
