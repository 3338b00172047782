"""Unit tests of the NG112 sans-I/O parsers: SIP, multipart, hardened XML, CAP, PIDF-LO, decisions."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from ng112.cap import build_cap_xml, parse_cap, validate_cap12
from ng112.errors import CapError, CapSchemaError, MultipartError, SipParseError, XmlError, XmlHostileError
from ng112.multipart import parse_multipart
from ng112.pidfl import parse_pidf
from ng112.request import IngressPolicy, Outcome, evaluate
from ng112.sip import MAX_MESSAGE, StreamFramer, build_response, parse_message, parse_uri_and_params
from ng112.xml import parse_xml

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "ng112"
POLICY = IngressPolicy()

CAP = b"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>P1-7</identifier><sender>sip:panel@b.example</sender>
  <sent>2026-11-21T15:30:00Z</sent><status>Actual</status><msgType>Alert</msgType>
  <scope>Private</scope><incidents>INC-1</incidents>
  <info><category>Fire</category><event>Fire alarm</event><urgency>Immediate</urgency>
  <certainty>Likely</certainty><severity>Severe</severity></info>
</alert>"""


def _message(body: bytes, content_type: str, extra: str = "", line_end: str = "\r\n") -> bytes:
    head = [
        "MESSAGE urn:service:sos SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-1",
        "f: <sip:panel@b.example>;tag=1",
        "t: <urn:service:sos>",
        "i: call-1@b.example",
        "CSeq: 1 MESSAGE",
        *[x for x in extra.split("\n") if x],
        f"c: {content_type}",
        f"l:  {len(body)}",
    ]
    return (line_end.join(head) + line_end + line_end).encode() + body


def test_sip_compact_forms_bare_lf_and_padded_length() -> None:
    message = parse_message(_message(CAP, "application/cap+xml", line_end="\n"))
    assert message.method == "MESSAGE"  # type: ignore[union-attr]
    assert message.headers.get("call-id") == "call-1@b.example"
    assert message.body == CAP
    assert "bare LF line ends" in message.warnings


def test_sip_folded_header_and_bracketless_call_info() -> None:
    raw = _message(b"x", "text/plain", "Call-Info: cid:abc@h;purpose=EmergencyCallData.cap\n   ;x=1")
    message = parse_message(raw)
    uri, params = parse_uri_and_params(message.headers.get("call-info") or "")
    assert uri == "cid:abc@h"
    assert params == {"purpose": "EmergencyCallData.cap", "x": "1"}


def test_sip_refuses_oversize_and_garbage() -> None:
    with pytest.raises(SipParseError, match="exceeds"):
        parse_message(b"MESSAGE x SIP/2.0\r\n\r\n" + b"a" * MAX_MESSAGE)
    with pytest.raises(SipParseError):
        parse_message(b"\x00\x01garbage\r\nnot a header\r\n\r\n")
    odd_digits = parse_message(_message(b"x", "text/plain").replace(b"l:  1", "l: ²".encode()))
    assert "unreadable Content-Length; body taken to end of datagram" in odd_digits.warnings
    with pytest.raises(SipParseError, match="Content-Length"):
        parse_message(_message(b"short", "text/plain").replace(b"l:  5", b"l: 50"))


def test_stream_framer_cuts_by_content_length() -> None:
    one = _message(b"hello", "text/plain")
    framer = StreamFramer()
    assert framer.feed(one[:10]) == []
    assert framer.feed(one[10:] + b"\r\n\r\n" + one) == [one, one]
    with pytest.raises(SipParseError):
        StreamFramer().feed(b"MESSAGE x SIP/2.0\r\nVia: a\r\n\r\n")


def test_response_copies_transaction_headers() -> None:
    request = parse_message(_message(b"x", "text/plain"))
    assert request.__class__.__name__ == "SipRequest"
    response = build_response(request, 200, "OK", to_tag="gw1")  # type: ignore[arg-type]
    wire = response.to_bytes()
    assert wire.startswith(b"SIP/2.0 200 OK\r\n")
    assert b"To: <urn:service:sos>;tag=gw1\r\n" in wire
    assert b"CSeq: 1 MESSAGE\r\n" in wire and wire.endswith(b"Content-Length: 0\r\n\r\n")


def test_multipart_odd_boundaries_and_close() -> None:
    body = (CORPUS / "multipart" / "dec112-odd-boundaries.txt").read_bytes()
    parts, warnings = parse_multipart(body, "bounds")
    assert [p.body.strip() for p in parts] == [b"hello", b"there"]
    assert any("non-standard boundary" in w for w in warnings)
    with pytest.raises(MultipartError):
        parse_multipart(b"no boundary here", "b1")
    with pytest.raises(MultipartError, match="more than"):
        parse_multipart(b"".join(b"--b\r\n\r\nx\r\n" for _ in range(40)), "b")


def test_xml_refuses_dtd_entities_and_size() -> None:
    laughs = b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><l>&b;</l>'
    with pytest.raises(XmlHostileError):
        parse_xml(laughs)
    utf16 = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x SYSTEM "http://127.0.0.1:1/x"><x/>'
    with pytest.raises(XmlHostileError):
        parse_xml(utf16.encode("utf-16"))
    with pytest.raises(XmlError, match="exceeds"):
        parse_xml(b"<a>" + b"x" * 70_000 + b"</a>")
    with pytest.raises(XmlError, match="deeper"):
        parse_xml(b"<a>" * 40 + b"</a>" * 40)


def test_cap_lenient_in_strict_out() -> None:
    alert, warnings = parse_cap(CAP.replace(b"1.2", b"1.1"))
    assert alert.sent == datetime(2026, 11, 21, 15, 30, tzinfo=UTC)
    assert any("'Z'" in w for w in warnings) and any("CAP 1.1" in w for w in warnings)
    xml = build_cap_xml(alert)
    assert b"<sent>2026-11-21T15:30:00+00:00</sent>" in xml
    validate_cap12(xml)  # certainty before severity in the input, XSD order in the output
    with pytest.raises(CapSchemaError):
        validate_cap12(xml.replace(b"<status>Actual", b"<status>Real").replace(b"Actual<", b"Real<"))


@pytest.mark.parametrize(
    ("cap", "code"),
    [
        (CAP.replace(b"<sender>sip:panel@b.example</sender>", b""), 102),
        (CAP.replace(b"2026-11-21T15:30:00Z", b"bigboi"), 100),
        (CAP[:-20], 103),
        (b"<alert xmlns='urn:x'/>", 100),
    ],
)
def test_cap_unusable_codes(cap: bytes, code: int) -> None:
    with pytest.raises(CapError) as info:
        parse_cap(cap)
    assert info.value.alert_msg_error == code


def test_pidf_point_in_legacy_gml_and_civic_floor() -> None:
    location, _ = parse_pidf((CORPUS / "pidf-lo" / "rfc5491-point.xml").read_bytes())
    lat, lon, _ = location.best_point() or (0, 0, 0)
    assert round(lat, 3) == 37.775 and round(lon, 3) == -122.419
    civic, _ = parse_pidf((CORPUS / "pidf-lo" / "dec112-civic-floor.xml").read_bytes())
    assert civic.civic[0].floor == "5"


def test_decision_425_only_when_cap_announced() -> None:
    announced = _message(b"fire", "text/plain", "Call-Info: <cid:cap@x>;purpose=EmergencyCallData.cap")
    decision = evaluate(parse_message(announced), POLICY)  # type: ignore[arg-type]
    assert decision.status == 425
    assert dict(decision.headers)["AlertMsg-Error"].startswith("101 ;message=")
    plain = evaluate(parse_message(_message(b"fire", "text/plain")), POLICY)  # type: ignore[arg-type]
    assert plain.outcome is Outcome.ACCEPTED_WITH_WARNINGS and plain.status == 200


def test_decision_415_and_424() -> None:
    unknown = evaluate(parse_message(_message(b"x", "image/png")), POLICY)  # type: ignore[arg-type]
    assert unknown.status == 415 and "application/pidf+xml" in dict(unknown.headers)["Accept"]
    body = b"--b\r\nContent-Type: application/pidf+xml\r\nContent-ID: <l@x>\r\n\r\n<presence/>\r\n--b--\r\n"
    raw = _message(body, "multipart/mixed; boundary=b", "Geolocation: <cid:l@x>")
    strict = evaluate(parse_message(raw), IngressPolicy(location_required=True))  # type: ignore[arg-type]
    assert strict.status == 424 and dict(strict.headers)["Geolocation-Error"].startswith("100")
    lenient = evaluate(parse_message(raw), POLICY)  # type: ignore[arg-type]
    assert lenient.status == 400 and any("location unusable" in w for w in lenient.warnings)
    with_text = body.replace(b"--b--", b"--b\r\nContent-Type: text/plain\r\n\r\nfire\r\n--b--")
    raw = _message(with_text, "multipart/mixed; boundary=b", "Geolocation: <cid:l@x>")
    accepted = evaluate(parse_message(raw), POLICY)  # type: ignore[arg-type]
    assert accepted.status == 200 and accepted.request and accepted.request.text == "fire"
