"""From a SIP MESSAGE to an :class:`EmergencyRequest` and the response RFC 8876/6442 prescribe.

The decision is pure: :func:`evaluate` takes the parsed request and an :class:`IngressPolicy` and
returns a :class:`Decision` (accepted, accepted with warnings, or rejected with a status code and
headers). Accepting is still conditional on the alarm becoming durable: the gateway only sends the
200 after its ``accept`` callable returned.

Where things are found:
- CAP: the part named by ``Call-Info: <cid:X>;purpose=EmergencyCallData.cap``; else (or when the cid
  is missing or duplicated) any part of type ``application/EmergencyCallData.cap+xml`` or
  ``application/cap+xml``; a whole body of either type.
- PIDF-LO: the part named by ``Geolocation: <cid:Y>``; else any ``application/pidf+xml`` part.
- RFC 7852 blocks (``application/EmergencyCallData.<Block>+xml``) are kept as they came.
- ``text/plain`` parts are kept as text.

Rejections, and only these: 404 (not our URI), 405 (method), 400 (nothing usable in the body), 415 +
Accept (a body type we do not understand), 425 + AlertMsg-Error (a CAP was announced or sent and is unusable;
never for a request without an alert), 424 + Geolocation-Error (location required by policy, a
Geolocation header present, and the location unusable).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ng112.cap import CapAlert, parse_cap
from ng112.errors import CapError, MultipartError, PidfError
from ng112.multipart import BodyPart, ContentType, parse_content_type, parse_multipart
from ng112.pidfl import PidfLocation, parse_pidf
from ng112.sip import SipRequest, parse_uri_and_params

CAP_TYPES = ("application/emergencycalldata.cap+xml", "application/cap+xml")
PIDF_TYPE = "application/pidf+xml"
ACCEPTED_TYPES = ("multipart/mixed", *CAP_TYPES, PIDF_TYPE, "text/plain")
ACCEPT_HEADER = "multipart/mixed, application/EmergencyCallData.cap+xml, application/cap+xml, "
ACCEPT_HEADER += "application/pidf+xml, text/plain"
ADDITIONAL_DATA_PREFIX = "application/emergencycalldata."
CAP_PURPOSE = "emergencycalldata.cap"
MAX_TEXT = 2000


class Outcome(Enum):
    ACCEPTED = "accepted"
    ACCEPTED_WITH_WARNINGS = "accepted with warnings"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class AdditionalData:
    """An RFC 7852 block kept verbatim (we carry it, we do not interpret it)."""

    content_type: str
    content_id: str | None
    body: bytes


@dataclass(frozen=True, slots=True)
class EmergencyRequest:
    sender_uri: str  # P-Asserted-Identity if present, else From
    request_uri: str
    call_id: str
    cap: CapAlert | None
    cap_xml: bytes | None  # as received
    location: PidfLocation | None
    additional_data: tuple[AdditionalData, ...]
    text: str | None
    warnings: tuple[str, ...]
    location_xml: bytes | None = None  # the PIDF-LO part as received (the follow-up carries it)


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()
    request: EmergencyRequest | None = None
    warnings: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.outcome is not Outcome.REJECTED


@dataclass(frozen=True, slots=True)
class IngressPolicy:
    own_uris: tuple[str, ...] = ()  # e.g. "sip:gateway@example.org"; urn:service:sos* always accepted
    location_required: bool = False


def _reject(status: int, reason: str, headers: tuple[tuple[str, str], ...] = (), *warnings: str) -> Decision:
    return Decision(Outcome.REJECTED, status, reason, headers, None, tuple(warnings))


def _quoted(message: str) -> str:
    safe = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "?" for ch in message)
    return f'"{safe[:120]}"'


def alert_msg_error(code: int, message: str) -> tuple[tuple[str, str], ...]:
    return (("AlertMsg-Error", f"{code} ;message={_quoted(message)}"),)


def _uri_is_ours(uri: str, policy: IngressPolicy) -> bool:
    bare = uri.split(";", 1)[0].strip().lower()
    if bare == "urn:service:sos" or bare.startswith("urn:service:sos."):
        return True
    return any(bare == own.split(";", 1)[0].strip().lower() for own in policy.own_uris)


def _sender(request: SipRequest) -> str:
    asserted = request.headers.get("p-asserted-identity")
    source = asserted if asserted else request.headers.get("from") or ""
    uri, _ = parse_uri_and_params(source)
    return uri


def _cid_refs(request: SipRequest, header: str, purpose: str | None) -> list[str]:
    """URIs from ``header`` (all values), optionally only those with ``purpose``."""
    out = []
    for value in request.headers.values(header):
        uri, params = parse_uri_and_params(value)
        if purpose is None or params.get("purpose", "").lower() == purpose:
            out.append(uri)
    return out


def _by_cid(parts: list[BodyPart], uri: str, wanted: tuple[str, ...]) -> BodyPart | None:
    if not uri.lower().startswith("cid:"):
        return None
    bare = uri[4:].strip("<>")
    matches = [p for p in parts if p.content_id == bare]
    typed = [p for p in matches if p.content_type.mime in wanted]
    found = typed or matches
    return found[0] if found else None


def evaluate(request: SipRequest, policy: IngressPolicy) -> Decision:
    """Decide what to answer to ``request``; see the module docstring for the rules."""
    if request.method != "MESSAGE":
        return _reject(405, "Method Not Allowed", (("Allow", "MESSAGE, OPTIONS"),))
    if not _uri_is_ours(request.uri, policy):
        return _reject(404, "Not Found")
    warnings = list(request.warnings)
    content_type = parse_content_type(request.headers.get("content-type") or "text/plain")
    if not request.body.strip():
        return _reject(400, "Bad Request - empty MESSAGE body")
    if content_type.mime not in ACCEPTED_TYPES:
        return _reject(415, "Unsupported Media Type", (("Accept", ACCEPT_HEADER),))
    return evaluate_body(
        content_type,
        request.body,
        warnings,
        cap_refs=_cid_refs(request, "call-info", CAP_PURPOSE),
        geolocation_refs=_cid_refs(request, "geolocation", None),
        policy=policy,
        sender_uri=_sender(request),
        request_uri=request.uri,
        call_id=request.headers.get("call-id") or "",
    )


def _split(content_type: ContentType, body: bytes, warnings: list[str]) -> list[BodyPart] | Decision:
    if content_type.mime != "multipart/mixed":
        return [BodyPart(content_type, None, (), body)]
    boundary = content_type.param("boundary")
    if not boundary:
        return _reject(400, "Bad Request - multipart body without boundary")
    try:
        parts, part_warnings = parse_multipart(body, boundary)
    except MultipartError as exc:
        return _reject(400, f"Bad Request - {exc}"[:100])
    warnings += part_warnings
    return parts


def evaluate_body(
    content_type: ContentType,
    body: bytes,
    warnings: list[str],
    *,
    cap_refs: list[str],
    geolocation_refs: list[str],
    policy: IngressPolicy,
    sender_uri: str,
    request_uri: str = "",
    call_id: str = "",
) -> Decision:
    """The body half of :func:`evaluate`, shared with the HTTP ingress."""
    split = _split(content_type, body, warnings)
    if isinstance(split, Decision):
        return split
    parts = split
    cap_part: BodyPart | None = None
    for ref in cap_refs:
        cap_part = cap_part or _by_cid(parts, ref, CAP_TYPES)
        if not ref.lower().startswith("cid:"):
            warnings.append(f"CAP by reference ({ref[:60]}) not dereferenced")
    cap_candidates = [p for p in parts if p.content_type.mime in CAP_TYPES]
    if cap_part is None and cap_candidates:
        if cap_refs:
            warnings.append("Call-Info CAP reference does not match a Content-ID; using the CAP part")
        cap_part = cap_candidates[0]
    if cap_part is None and any(r.lower().startswith("cid:") for r in cap_refs):
        message = "Alert payload was not present or could not be found"
        return _reject(425, "Bad Alert Message", alert_msg_error(101, message), *warnings)
    cap = None
    if cap_part is not None:
        try:
            cap, cap_warnings = parse_cap(cap_part.body)
        except CapError as exc:
            code = exc.alert_msg_error
            return _reject(425, "Bad Alert Message", alert_msg_error(code, str(exc)), *warnings, str(exc))
        warnings += cap_warnings
        is_sip_sender = cap.sender.lower().startswith(("sip:", "sips:"))
        if sender_uri and is_sip_sender and cap.sender.lower() != sender_uri.lower():
            warnings.append("CAP <sender> differs from the SIP sender identity")
    location_or_reject = _location(parts, geolocation_refs, policy, warnings)
    if isinstance(location_or_reject, Decision):
        return location_or_reject
    text_parts = [p for p in parts if p.content_type.mime == "text/plain" and p.body.strip()]
    text = "\n".join(p.body.decode("utf-8", "replace").strip() for p in text_parts)[:MAX_TEXT] or None
    additional = tuple(
        AdditionalData(p.content_type.mime, p.content_id, p.body)
        for p in parts
        if p.content_type.mime.startswith(ADDITIONAL_DATA_PREFIX) and p.content_type.mime not in CAP_TYPES
    )
    known = (*CAP_TYPES, PIDF_TYPE, "text/plain")
    for part in parts:
        mime = part.content_type.mime
        if mime not in known and not mime.startswith(ADDITIONAL_DATA_PREFIX):
            warnings.append(f"body part of type {part.content_type.mime[:60]} ignored")
    location, location_xml = location_or_reject if location_or_reject is not None else (None, None)
    if cap is None and location is None and text is None and not additional:
        return _reject(400, "Bad Request - nothing usable in the MESSAGE body", (), *warnings)
    if cap is None:
        warnings.append("no CAP alert in the request; carried as text/location only")
    request = EmergencyRequest(
        sender_uri=sender_uri,
        request_uri=request_uri,
        call_id=call_id,
        cap=cap,
        cap_xml=cap_part.body if cap_part is not None and cap is not None else None,
        location=location,
        additional_data=additional,
        text=text,
        warnings=tuple(dict.fromkeys(warnings)),
        location_xml=location_xml,
    )
    outcome = Outcome.ACCEPTED_WITH_WARNINGS if request.warnings else Outcome.ACCEPTED
    return Decision(outcome, 200, "OK", (), request, request.warnings)


def _location(
    parts: list[BodyPart], refs: list[str], policy: IngressPolicy, warnings: list[str]
) -> tuple[PidfLocation, bytes] | Decision | None:
    part: BodyPart | None = None
    for ref in refs:
        part = part or _by_cid(parts, ref, (PIDF_TYPE,))
        if not ref.lower().startswith("cid:"):
            warnings.append(f"location by reference ({ref[:60]}) not dereferenced")
    if part is not None and part.content_type.mime != PIDF_TYPE:
        warnings.append("Geolocation cid names a part that is not application/pidf+xml")
        part = None
    pidf_parts = [p for p in parts if p.content_type.mime == PIDF_TYPE]
    if part is None and pidf_parts:
        if refs:
            warnings.append("Geolocation reference does not match a PIDF-LO part; using the PIDF-LO part")
        part = pidf_parts[0]
    if part is None:
        if refs and policy.location_required:
            dereference = any(not r.lower().startswith("cid:") for r in refs)
            code = "300" if dereference else "100"
            reason = "Dereference Failure" if dereference else "Cannot Process Location"
            header = ("Geolocation-Error", f"{code} ;message={_quoted(reason)}")
            return _reject(424, "Bad Location Information", (header,))
        if refs:
            warnings.append("Geolocation header names no body part we can use")
        return None
    try:
        location, pidf_warnings = parse_pidf(part.body)
    except PidfError as exc:
        if refs and policy.location_required:
            header = ("Geolocation-Error", f"100 ;message={_quoted(f'Cannot Process Location: {exc}')}")
            return _reject(424, "Bad Location Information", (header,), *warnings, str(exc))
        warnings.append(f"location unusable: {exc}")
        return None
    warnings += pidf_warnings
    return location, part.body
