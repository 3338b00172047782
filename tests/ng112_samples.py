"""Alarms written for the NG112 tests (not corpus copies), and SIP MESSAGEs that carry a CAP.

The brewery ammonia leak is the alarm from issue 13: a gas panel of a building that is not enrolled,
CAP 1.2 in Czech with an instruction to approach upwind from the north gate with breathing
apparatus, a PIDF-LO circle and civic address.
"""

from __future__ import annotations

import math
from dataclasses import fields
from datetime import datetime

from ng112.cap import CapAlert, CapArea, CapInfo
from ng112.pidfl import parse_pidf
from ng112.record import AlarmRecord, alarm_seq, decode_uncertainty

BREWERY_SENDER = "sip:nh3-panel@pivovar-horni.example.cz"
HEADLINE = (
    "Únik čpavku ve strojovně chlazení: detektor GD-2/4 hlásí 1250 ppm NH3, odvětrání v havarijním režimu"
)
DESCRIPTION = (
    "Plynový detektor GD-2/4 ve strojovně chlazení (budova B, přízemí) hlásí koncentraci čpavku 1250 ppm, "
    "stoupající. Havarijní odvětrání běží, kompresory jsou odstavené. V budově jsou dva pracovníci údržby."
)
INSTRUCTION = (
    "Přijíždějte po větru od severní brány (Sladovnická ulice). Vstup do budovy B jen v izolačních "
    "dýchacích přístrojích a protichemických oblecích. Hlavní uzávěr čpavku je u východní stěny strojovny."
)


def brewery_cap(sent: datetime, identifier: str = "PHD-NH3-2026-0042") -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>{identifier}</identifier>
  <sender>{BREWERY_SENDER}</sender>
  <sent>{sent.isoformat(timespec="seconds")}</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Private</scope>
  <incidents>PHD-INC-0042</incidents>
  <info>
    <language>cs-CZ</language>
    <category>Safety</category>
    <category>CBRNE</category>
    <event>Ammonia leak</event>
    <responseType>Evacuate</responseType>
    <urgency>Immediate</urgency>
    <severity>Extreme</severity>
    <certainty>Observed</certainty>
    <eventCode><valueName>substance</valueName><value>NH3</value></eventCode>
    <senderName>Pivovar Horní Dvůr, strojovna chlazení</senderName>
    <headline>{HEADLINE}</headline>
    <description>{DESCRIPTION}</description>
    <instruction>{INSTRUCTION}</instruction>
    <contact>Vedoucí směny Jana Nováková +420 601 555 042</contact>
    <parameter><valueName>zone</valueName><value>GD-2/4</value></parameter>
    <parameter><valueName>floor</valueName><value>0</value></parameter>
    <parameter><valueName>concentration_ppm</valueName><value>1250</value></parameter>
    <parameter><valueName>wind</valueName><value>from N, 4 m/s</value></parameter>
    <area>
      <areaDesc>Pivovar Horní Dvůr, budova B, strojovna chlazení</areaDesc>
      <circle>49.7384120,13.3736550 0.03</circle>
    </area>
  </info>
</alert>
""".encode()


BREWERY_PIDF = f"""<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10"
  xmlns:ca="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr" xmlns:gml="http://www.opengis.net/gml"
  xmlns:gs="http://www.opengis.net/pidflo/1.0" entity="{BREWERY_SENDER}">
  <tuple id="nh3"><status><gp:geopriv><gp:location-info>
    <gs:Circle srsName="urn:ogc:def:crs:EPSG::4326">
      <gml:pos>49.738412 13.373655</gml:pos>
      <gs:radius uom="urn:ogc:def:uom:EPSG::9001">25</gs:radius>
    </gs:Circle>
    <ca:civicAddress xml:lang="cs-CZ">
      <ca:country>CZ</ca:country><ca:A1>Plzeňský kraj</ca:A1><ca:A3>Plzeň</ca:A3>
      <ca:RD>Sladovnická</ca:RD><ca:HNO>12</ca:HNO><ca:PC>301 00</ca:PC>
      <ca:NAM>Pivovar Horní Dvůr, budova B</ca:NAM><ca:FLR>0</ca:FLR><ca:ROOM>strojovna chlazení</ca:ROOM>
    </ca:civicAddress>
  </gp:location-info><gp:usage-rules/><gp:method>Manual</gp:method></gp:geopriv></status></tuple>
</presence>
""".encode()


def multipart_body(cap: bytes, pidf: bytes | None, boundary: str = "ng112-boundary") -> bytes:
    parts = [
        b"Content-Type: application/EmergencyCallData.cap+xml\r\nContent-ID: <cap-1@panel>\r\n\r\n" + cap
    ]
    if pidf is not None:
        parts.append(b"Content-Type: application/pidf+xml\r\nContent-ID: <loc-1@panel>\r\n\r\n" + pidf)
    delimiter = f"--{boundary}\r\n".encode()
    return b"".join(delimiter + part + b"\r\n" for part in parts) + f"--{boundary}--\r\n".encode()


def sip_message(
    sender: str, cap: bytes, pidf: bytes | None, call_id: str, via: str = "127.0.0.1:5999"
) -> bytes:
    """A complete RFC 8876 MESSAGE (UDP) carrying ``cap`` and, if given, a PIDF-LO."""
    body = multipart_body(cap, pidf)
    headers = [
        "MESSAGE urn:service:sos SIP/2.0",
        f"Via: SIP/2.0/UDP {via};branch=z9hG4bK-{call_id}",
        "Max-Forwards: 70",
        f"From: <{sender}>;tag=panel-{call_id}",
        "To: <urn:service:sos>",
        f"Call-ID: {call_id}",
        "CSeq: 1 MESSAGE",
        "Call-Info: <cid:cap-1@panel>;purpose=EmergencyCallData.cap",
        *(["Geolocation: <cid:loc-1@panel>", "Geolocation-Routing: yes"] if pidf is not None else []),
        "Content-Type: multipart/mixed; boundary=ng112-boundary",
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


def sipp_alarm_scenario(sender: str, body: bytes, with_location: bool = True, encoding: str = "UTF-8") -> str:
    """A SIPp scenario for a building panel: send ``body`` (multipart CAP + PIDF-LO) as a MESSAGE and
    expect 200. Its acknowledgements come back to the same address (the gateway answers an unenrolled
    building there): run :data:`SIPP_ACK_SCENARIO` on that port next. Write the scenario file in
    ``encoding`` (a body in ISO-8859-1 goes in an ISO-8859-1 scenario)."""
    text = body.decode(encoding)
    if "[" in text or "]]>" in text:
        raise ValueError("SIPp would read [ as a keyword and ]]> ends its CDATA")
    location = "Geolocation: <cid:loc-1@panel>\nGeolocation-Routing: yes\n" if with_location else ""
    return f"""<?xml version="1.0" encoding="{encoding}" ?>
<scenario name="NG112 building panel sends one alarm">
  <send retrans="500">
    <![CDATA[
MESSAGE urn:service:sos SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
Max-Forwards: 70
From: <{sender}>;tag=[pid]SIPpTag00[call_number]
To: <urn:service:sos>
Call-ID: [call_id]
CSeq: 1 MESSAGE
Call-Info: <cid:cap-1@panel>;purpose=EmergencyCallData.cap
{location}Content-Type: multipart/mixed; boundary=ng112-boundary
Content-Length: [len]

{text}
]]>
  </send>
  <recv response="200"/>
</scenario>
"""


SIPP_ACK_SCENARIO = """<?xml version="1.0" encoding="UTF-8" ?>
<scenario name="NG112 building panel takes an acknowledgement">
  <recv request="MESSAGE"/>
  <send>
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]panel[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]>
  </send>
</scenario>
"""


def _canonical(value: object) -> object:
    """Canonical CAP writes no empty element: an empty value is the same as an absent one."""
    if value == "":
        return None
    if isinstance(value, tuple):
        return tuple(_canonical(v) for v in value if v != "")
    if isinstance(value, CapArea):
        polygons = tuple(v for v in value.polygons if v)
        return CapArea(value.description, polygons, tuple(v for v in value.circles if v), value.geocodes)
    return value


def cap_differences(original: CapAlert, received: CapAlert) -> list[str]:
    """Every field where ``received`` differs from ``original``, modulo canonical form: the CAP version
    (whatever came in, the canonical form is CAP 1.2) and empty elements (written as absent)."""
    out = []
    for name in (f.name for f in fields(CapAlert)):
        if name in ("version", "infos"):
            continue
        a, b = _canonical(getattr(original, name)), _canonical(getattr(received, name))
        if a != b:
            out.append(f"{name}: {a!r} != {b!r}")
    if len(original.infos) != len(received.infos):
        out.append(f"{len(original.infos)} info blocks != {len(received.infos)}")
    for index, (first, second) in enumerate(zip(original.infos, received.infos, strict=False)):
        for name in (f.name for f in fields(CapInfo)):
            a, b = _canonical(getattr(first, name)), _canonical(getattr(second, name))
            if a != b:
                out.append(f"info[{index}].{name}: {a!r} != {b!r}")
    return out


def kept_fields(record: AlarmRecord, cap: CapAlert, pidf: bytes | None) -> list[str]:
    """The first-frame fields that differ from the panel's CAP and PIDF-LO (empty: all kept exactly).
    The position is the PIDF-LO's most precise shape, else the CAP's first circle."""
    checks: dict[str, tuple[object, object]] = {
        "identity": (record.seq, alarm_seq(cap.sender, cap.identifier, cap.sent)),
        "msgType": (record.msg_type, cap.msg_type),
        "status": (record.status, cap.status),
        "sent": (record.sent, math.floor(cap.sent.timestamp())),
    }
    if cap.infos:
        info = cap.infos[0]
        checks |= {
            "category": (set(record.categories), set(info.categories)),
            "urgency": (record.urgency, info.urgency),
            "severity": (record.severity, info.severity),
            "certainty": (record.certainty, info.certainty),
            "language": (record.language or "en-US", info.language),
        }
        event = " ".join(info.event.split())
        if record.event_cut:
            checks["event"] = (True, event.startswith(record.event + " "))
        else:
            checks["event"] = (record.event_text, event)
        headline = " ".join((info.headline or "").split())
        if record.text_cut:
            checks["headline"] = (True, headline.startswith(record.text + " "))
        else:
            checks["headline"] = (record.text, headline)
        circles = [c for area in info.areas for c in area.circles]
        point: tuple[float, float, float] | None = None
        if pidf is not None:
            point = parse_pidf(pidf)[0].best_point()
        elif circles:
            centre, radius = circles[0].split()
            lat, lon = (float(v) for v in centre.split(","))
            point = (lat, lon, float(radius) * 1000)
        if point is not None:
            position = (round(point[0] * 1e7), round(point[1] * 1e7))
            checks["position"] = ((record.lat_e7, record.lon_e7), position)
            checks["uncertainty"] = (True, decode_uncertainty(record.uncertainty) >= point[2] - 0.01)
    return [f"{name}: {got!r} != {want!r}" for name, (got, want) in checks.items() if got != want]
