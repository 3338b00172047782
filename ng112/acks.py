"""Acknowledgements back to the building: a CAP ``Ack`` in a SIP MESSAGE to the panel.

RFC 8876 §6 defines no call-back, so this is our profile (research/ng112.md §1.9): the command
post's Ack records (automatic receipt, then the operator's acknowledgement) come back over the mesh;
the gateway looks up the alarm it stored, builds a CAP 1.2 ``Ack`` whose ``<references>`` names the
panel's own ``(sender, identifier, sent)`` and a ``<note>`` saying which acknowledgement it is, and
sends it as a MESSAGE to the panel's SIP contact.

Operator actions are codes (:class:`ng112.record.AckCode`: received, dispatched, en route, on scene,
false alarm, cancelled) or free text; the record carries the code and the operator's name (or the
text), and the gateway renders a whole phrase in the building's language (:data:`PHRASES`, Czech and
English; English for any other language). A free text longer than the frame holds is cut at a word
boundary and ends in "…".
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from ng112.cap import CapAlert, CapReference, build_cap_xml, validate_cap12
from ng112.record import AckCode, AlarmRecord
from ng112.sip import Headers, SipRequest
from ng112.store import StoredAlarm

ACK_CONTENT_TYPE = "application/EmergencyCallData.cap+xml"

# code -> phrase, per primary language subtag; MESSAGE gets the free text after it.
PHRASES: dict[str, dict[AckCode, str]] = {
    "en": {
        AckCode.RECEIVED: "The command post has received your alarm.",
        AckCode.DISPATCHED: "Emergency units have been dispatched to your building.",
        AckCode.EN_ROUTE: "Emergency units are on their way to your building.",
        AckCode.ON_SCENE: "Emergency units are on scene at your building.",
        AckCode.FALSE_ALARM: "The command post has closed your alarm as a false alarm.",
        AckCode.CANCELLED: "The command post has cancelled the response to your alarm.",
        AckCode.MESSAGE: "Message from the command post:",
    },
    "cs": {
        AckCode.RECEIVED: "Operační středisko přijalo váš poplach.",
        AckCode.DISPATCHED: "K vaší budově byly vyslány záchranné jednotky.",
        AckCode.EN_ROUTE: "Záchranné jednotky jsou na cestě k vaší budově.",
        AckCode.ON_SCENE: "Záchranné jednotky jsou na místě u vaší budovy.",
        AckCode.FALSE_ALARM: "Operační středisko uzavřelo váš poplach jako planý poplach.",
        AckCode.CANCELLED: "Operační středisko zrušilo zásah k vašemu poplachu.",
        AckCode.MESSAGE: "Zpráva z operačního střediska:",
    },
}
OPERATOR = {"en": "Operator: {}.", "cs": "Operátor: {}."}
ACTIONS = {code.name.lower().replace("_", " "): code for code in AckCode}


def parse_action(action: str) -> tuple[AckCode, str]:
    """An operator's action from the API: one of :data:`ACTIONS` (any case, ``_`` or ``-`` for spaces)
    gives its code; anything else is a free-text message. Returns (code, free text or "")."""
    key = " ".join(action.lower().replace("_", " ").replace("-", " ").split())
    code = ACTIONS.get("cancelled" if key == "canceled" else key)
    if code is None or code is AckCode.MESSAGE:
        text = " ".join(action.split())
        if not text:
            raise ValueError("an acknowledgement needs an action code or a text")
        return AckCode.MESSAGE, text
    return code, ""


def ack_note(ack: AlarmRecord, language: str) -> str:
    """The whole phrase an Ack record stands for, in ``language`` (a CAP language tag)."""
    lang = language.split("-")[0].lower() if language.split("-")[0].lower() in PHRASES else "en"
    code = AckCode(ack.code) if ack.code in AckCode._value2member_map_ else AckCode.RECEIVED
    phrase = PHRASES[lang][code]
    text = ack.text + (" …" if ack.text_cut else "")
    if code is AckCode.MESSAGE:
        return f"{phrase} {text}"
    return f"{phrase} {OPERATOR[lang].format(text)}" if ack.text else phrase


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
    language = alarm.record.language or "en-US"
    return CapAlert(
        identifier=f"{gateway_uri.split(':', 1)[-1]}-ack-{ack.key_id:08x}-{ack.seq}",
        sender=gateway_uri,
        sent=ack.sent_datetime,
        status=alarm.record.status,
        msg_type="Ack",
        scope="Private",
        note=ack_note(ack, language),
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
