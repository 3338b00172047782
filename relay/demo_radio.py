"""The demo field's LoRa segment: emulated Meshtastic radios and the building gateway's node.

Three radios in a line, 900 m apart, so the ends cannot hear each other::

    command-post (0 m) ~~ relay-1 (900 m) ~~ building-gateway (1800 m)

The emulator (``mesh112 lora-emulator``) runs as a process of its own; each node's LoRa link talks
to its radio through the real ``meshtastic`` library. The building gateway has no IP link: its
alarms reach the command post over LoRa only. The gateway itself is started as
``mesh112 ng112 gateway --config`` (the NG112 application riding on a relay node), which the relay
only knows as a command line.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

LORA_PORT = 4411
SIP_PORT = 5062
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
        Radio("building-gateway", 0xA0000003, 1800.0, port + 2),
    )


def emulator_toml(radios: tuple[Radio, ...], speedup: float = 1.0, seed: int = 1) -> str:
    lines = ["# Written by mesh112 demo: the demo field's emulated LoRa radios.", 'preset = "LONG_FAST"']
    lines += ['region = "EU_868"', f"seed = {seed}", f"speedup = {speedup}", ""]
    for radio in radios:
        lines += ["[[radio]]", f"num = 0x{radio.num:08X}", f'name = "{radio.slug}"']
        lines += [f"position = [{radio.x_m}, 0.0]", f"port = {radio.port}", ""]
    return "\n".join(lines)


def lora_link_toml(radio: Radio, roster: dict[int, bytes]) -> str:
    """A ``[[links]]`` table for ``radio``; ``roster``: the other radios' numbers -> node ids."""
    entries = "\n".join(f'{num} = "{node_id.hex()}"' for num, node_id in sorted(roster.items()))
    return f"""
[[links]]
type = "lora"
name = "lora0"
transport = "tcp"
address = "127.0.0.1"
port = {radio.port}

[links.roster]
{entries}
"""


def gateway_node_toml(name: str, radio: Radio, roster: dict[int, bytes]) -> str:
    """The building gateway's node: no API, no IP, one LoRa link."""
    header = "# Written by mesh112 demo: the building gateway node."
    return f'{header}\n[node]\nname = "{name}"\nroles = ["building"]\n' + lora_link_toml(radio, roster)


def buildings_toml(panel_port: int) -> str:
    """The enrolment table of the demo building; acknowledgements go to a panel on ``panel_port``."""
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
"""


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
    return subprocess.Popen(
        [sys.executable, "-m", "relay", *args],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
