"""The demo field's LoRa segment: emulated Meshtastic radios and the building gateway's node.

Three radios on a line, all within LongFast range of each other::

    command-post (0 m) ~~ building-gateway (450 m) ~~ relay-1 (900 m)

The emulator (``mesh112 lora-emulator``) runs as a process of its own; each node's LoRa link talks
to its radio through the real ``meshtastic`` library. The building gateway has no IP link: its
alarms reach the command post over LoRa only. (It hears the command post directly: with the relay
in between only, the gateway would learn the route from relay-1's LoRa beacon, which the core sends
every 900 s on duty-cycled links, so the first alarm could wait that long.) The gateway itself is started as
``mesh112 ng112 gateway --config`` (the NG112 application riding on a relay node), which the relay
only knows as a command line.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from field.deployment import DemoDeployment
from relay.daemon import ROSTER_DIR

LORA_PORT = 4411
SIP_PORT = 5062
PANEL_PORT = 5099  # where the demo building's panel would take its acknowledgements (SIP over UDP)
PANEL_SENDER = "sip:fire-panel-17@building.example.org"


@dataclass(frozen=True, slots=True)
class Radio:
    slug: str  # the node it belongs to
    num: int  # Meshtastic node number
    x_m: float
    port: int


def demo_radios(port: int = LORA_PORT) -> tuple[Radio, ...]:
    return (
        Radio("command-post", 0xA0000001, 0.0, port),
        Radio("relay-1", 0xA0000002, 900.0, port + 1),
        Radio("building-gateway", 0xA0000003, 450.0, port + 2),
    )


def observer_radio(port: int = LORA_PORT) -> Radio:
    """A radio with no node behind it, for a stock Meshtastic client (``meshtastic --host``): each
    emulated radio takes one client at a time, so a stock client on a node's radio knocks the node off."""
    return Radio("observer", 0xA0000009, 200.0, port + 3)


def emulator_toml(
    radios: tuple[Radio, ...], speedup: float = 1.0, seed: int = 1, region: str = "EU_868"
) -> str:
    lines = ["# Written by mesh112 demo: the demo field's emulated LoRa radios.", 'preset = "LONG_FAST"']
    lines += [f'region = "{region}"', f"seed = {seed}", f"speedup = {speedup}", ""]
    for radio in radios:
        lines += ["[[radio]]", f"num = 0x{radio.num:08X}", f'name = "{radio.slug}"']
        lines += [f"position = [{radio.x_m}, 0.0]", f"port = {radio.port}", ""]
    return "\n".join(lines)


def lora_link_toml(radio: Radio, roster: dict[int, bytes], region: str = "EU_868") -> str:
    """A ``[[links]]`` table for ``radio``; ``roster``: the other radios' numbers -> node ids."""
    entries = "\n".join(f'{num} = "{node_id.hex()}"' for num, node_id in sorted(roster.items()))
    return f"""
[[links]]
type = "lora"
name = "lora0"
transport = "tcp"
address = "127.0.0.1"
port = {radio.port}
region = "{region}"

[links.roster]
{entries}
"""


def gateway_node_toml(name: str, radio: Radio, roster: dict[int, bytes], region: str = "EU_868") -> str:
    """The building gateway's node: no API, no IP, one LoRa link."""
    header = "# Written by mesh112 demo: the building gateway node."
    return f'{header}\n[node]\nname = "{name}"\nroles = ["building"]\n' + lora_link_toml(
        radio, roster, region
    )


PANEL_SECRET = "demo-panel-secret"  # the demo building's SIP digest password (sipsak -a)


def buildings_toml(panel_port: int, *, digest_secret: str | None = PANEL_SECRET) -> str:
    """The enrolment table of the demo building; acknowledgements go to a panel on ``panel_port``.
    With ``digest_secret`` the panel must authenticate (SIP digest, user fire-panel-17); without,
    the building is enrolled but its panel is not asked to (for clients that cannot do digest)."""
    secret = (
        f'digest_secret = "{digest_secret}"  # the panel authenticates with SIP digest\n'
        if digest_secret
        else ""
    )
    return f"""# Written by mesh112 demo: the building enrolment table (gateway and command post).
[[building]]
key_id = "0a1b2c3d"
sender = "{PANEL_SENDER}"
name = "Example Office Tower"
address = {{ country = "AT", A1 = "Wien", RD = "Stephansplatz", HNO = "1", PC = "1010" }}
floors = "-2..12"
contacts = ["Facility desk +43 1 555 0100"]
hazards = ["Diesel tank in basement"]
lat = 48.20849
lon = 16.37208
panel = "sip:fire-panel-17@127.0.0.1:{panel_port};transport=udp"
{secret}"""


def start_emulator(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "relay", "lora-emulator", str(config)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def start_gateway(
    config: Path, buildings: Path, sip_port: int, log: Path, command_post: bytes
) -> subprocess.Popen[bytes]:
    """The NG112 gateway node sending to ``command_post`` (node id); SIP on UDP and TCP ``sip_port``."""
    to = f"node:{command_post.hex()}"
    args = ["ng112", "gateway", "--config", str(config), "--buildings", str(buildings), "--to", to]
    args += ["--udp-port", str(sip_port), "--tcp-port", str(sip_port), "--json-logs"]
    args += ["--digest-algorithms", "MD5,SHA-256"]  # sipsak answers only the first offer and knows MD5 only
    return subprocess.Popen(
        [sys.executable, "-m", "relay", *args],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


_DEMO_CAP = """<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>FP17-DEMO-{stamp}</identifier>
  <sender>{sender}</sender>
  <sent>{sent}</sent>
  <status>Exercise</status>
  <msgType>Alert</msgType>
  <scope>Private</scope>
  <incidents>FP17-DEMO-INC-{stamp}</incidents>
  <info>
    <language>de-AT</language>
    <category>Fire</category>
    <event>Fire alarm (automatic smoke detector)</event>
    <urgency>Immediate</urgency>
    <severity>Severe</severity>
    <certainty>Likely</certainty>
    <senderName>Fire panel 17, Example Office Tower</senderName>
    <headline>Smoke detector zone 3.12 (3rd floor, room 312)</headline>
    <description>Optical smoke detector OD-3-12-04 in room 312 went off.</description>
    <instruction>Enter from Stephansplatz; key box at the main door.</instruction>
    <contact>Facility desk +43 1 555 0100</contact>
    <parameter><valueName>zone</valueName><value>3.12</value></parameter>
    <parameter><valueName>detector</valueName><value>OD-3-12-04</value></parameter>
  </info>
</alert>
"""

_DEMO_PIDF = """<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10"
  xmlns:ca="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr" xmlns:gml="http://www.opengis.net/gml"
  xmlns:gs="http://www.opengis.net/pidflo/1.0" entity="{sender}">
  <tuple id="fp17"><status><gp:geopriv><gp:location-info>
    <gs:Circle srsName="urn:ogc:def:crs:EPSG::4326">
      <gml:pos>48.20849 16.37208</gml:pos>
      <gs:radius uom="urn:ogc:def:uom:EPSG::9001">15</gs:radius>
    </gs:Circle>
    <ca:civicAddress xml:lang="de-AT">
      <ca:country>AT</ca:country><ca:A1>Wien</ca:A1><ca:A3>Wien</ca:A3><ca:RD>Stephansplatz</ca:RD>
      <ca:HNO>1</ca:HNO><ca:FLR>3</ca:FLR><ca:ROOM>312</ca:ROOM><ca:PC>1010</ca:PC>
    </ca:civicAddress>
  </gp:location-info><gp:usage-rules/><gp:method>Manual</gp:method></gp:geopriv></status></tuple>
</presence>
"""


def demo_alarm_message(now: float) -> bytes:
    """An RFC 8876 MESSAGE from the demo building for sipsak (which adds its own Via): a CAP 1.2
    *Exercise* fire alarm and its PIDF-LO (circle and civic address) as multipart/mixed, named by
    Call-Info and Geolocation; a new identifier each time the demo starts."""
    sent = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now))
    cap = _DEMO_CAP.format(stamp=int(now), sender=PANEL_SENDER, sent=sent)
    pidf = _DEMO_PIDF.format(sender=PANEL_SENDER)
    body = "".join(
        f"--demo-boundary\r\nContent-Type: {kind}\r\nContent-ID: <{cid}@building.example.org>\r\n\r\n"
        + part.replace("\n", "\r\n")
        + "\r\n"
        for kind, cid, part in (
            ("application/EmergencyCallData.cap+xml", "cap-demo", cap),
            ("application/pidf+xml", "loc-demo", pidf),
        )
    )
    data = (body + "--demo-boundary--\r\n").encode()
    head = (
        f"MESSAGE urn:service:sos SIP/2.0\r\nMax-Forwards: 70\r\n"
        f"From: <{PANEL_SENDER}>;tag=demo{int(now)}\r\n"
        f"To: <urn:service:sos>\r\nCall-ID: demo-{int(now)}@building.example.org\r\nCSeq: 1 MESSAGE\r\n"
        "Call-Info: <cid:cap-demo@building.example.org>;purpose=EmergencyCallData.cap\r\n"
        "Geolocation: <cid:loc-demo@building.example.org>\r\nGeolocation-Routing: yes\r\n"
        f"Content-Type: multipart/mixed; boundary=demo-boundary\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


@dataclass(frozen=True, slots=True)
class RadioSegment:
    emulator_config: Path
    gateway_config: Path
    buildings: Path
    alarm_message: Path
    command_post: bytes  # node id the gateway sends its alarms to


def write_radio_segment(deployment: DemoDeployment, root: Path, panel_port: int = PANEL_PORT) -> RadioSegment:
    """Give command-post and relay-1 (configs already written) a LoRa link, write the building gateway's
    node config and roster, the emulator config, the enrolment table and a sample alarm for sipsak."""
    by_slug = {node.directory.name: node for node in deployment.nodes}
    radios = demo_radios()
    node_ids = {radio.num: by_slug[radio.slug].node_id for radio in radios}
    buildings = buildings_toml(panel_port)
    for radio in radios:
        node = by_slug[radio.slug]
        roster = {num: node_id for num, node_id in node_ids.items() if num != radio.num}
        if radio.slug == "building-gateway":
            node.config.write_text(gateway_node_toml(node.name, radio, roster))
            certificates = node.directory / ROSTER_DIR
            certificates.mkdir(exist_ok=True)
            for other in deployment.nodes:
                (certificates / f"{other.node_id.hex()}.cert").write_bytes(other.certificate.encode())
        else:
            with node.config.open("a") as config:
                config.write(lora_link_toml(radio, roster))
        (node.directory / "buildings.toml").write_text(buildings)
    emulator = root / "lora-emulator.toml"
    emulator.write_text(emulator_toml((*radios, observer_radio())))
    message = root / "demo-alarm.sip"
    message.write_bytes(demo_alarm_message(time.time()))
    gateway = by_slug["building-gateway"]
    return RadioSegment(
        emulator,
        gateway.config,
        gateway.directory / "buildings.toml",
        message,
        by_slug["command-post"].node_id,
    )
