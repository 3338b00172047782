"""What the first frame keeps, and the follow-up restores, for every corpus CAP and our own alarms.

Each CAP of the shared corpus (read from ../shared at test time), the demo's alarm and the brewery
ammonia leak go as a SIP MESSAGE over UDP to a real gateway; what the gateway hands to the node (the
first frame, then the follow-up bundle) is decoded as the command post would. The fields the first
frame keeps must equal the panel's exactly (a headline or event cut at a word boundary must be a
prefix of the original ending at a word); the CAP inside the follow-up must equal the panel's
field by field, modulo canonical form. The table goes to the terminal even without ``-s``.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from ng112_samples import (
    BREWERY_PIDF,
    BREWERY_SENDER,
    brewery_cap,
    cap_differences,
    kept_fields,
    sip_message,
)

from field.radio import demo_alarm_message
from ng112.buildings import BuildingRegistry
from ng112.cap import parse_cap
from ng112.errors import CapError
from ng112.followup import check_followup, decode_followup
from ng112.gateway import Gateway, GatewayConfig, node_accept
from ng112.hazards import Hazard, Substance, classify
from ng112.kinds import NG112_ALARM, NG112_FOLLOWUP
from ng112.node_app import with_followup
from ng112.record import (
    COMPACT_HEADER,
    CRYPTO_BUDGET,
    FRAME_TYPE,
    HOP_TAG,
    LORA_FRAME,
    decode_record,
)
from ng112.sip import SipResponse, parse_message
from ng112.store import AlarmStore
from relay.bundle import BundleId, Destination, Priority
from relay.core.frames import FRAGMENT_HEADER_LEN
from relay.core.routing import MAX_FRAGMENTS_ON_COSTLY_LINK

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "ng112"
LORA_MTU = LORA_FRAME - HOP_TAG
FRAME_OVERHEAD = FRAME_TYPE + COMPACT_HEADER + CRYPTO_BUDGET
FOLLOWUP_ON_LORA = MAX_FRAGMENTS_ON_COSTLY_LINK * (LORA_MTU - FRAGMENT_HEADER_LEN) - FRAME_OVERHEAD


class Recorder:
    """The node's side of ``send``: keeps what the gateway hands over, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, Priority, bytes]] = []

    async def send(
        self, destination: Destination, payload: bytes, *, kind: int, priority: Priority, lifetime: int
    ) -> BundleId:
        self.sent.append((kind, priority, payload))
        return BundleId(bytes(16), 0, len(self.sent))


def _messages() -> list[tuple[str, bytes, bytes | None, bytes]]:
    """(name, the CAP and the PIDF-LO as the panel wrote them, the SIP MESSAGE carrying them)."""
    out = []
    for path in sorted((CORPUS / "cap").iterdir()):
        cap = path.read_bytes()
        found = re.search(rb"<sender>([^<]*)</sender>", cap)
        sender = found.group(1).decode() if found and b":" in found.group(1) else "sip:panel@corpus.example"
        out.append((path.name, cap, None, sip_message(sender, cap, None, f"c{len(out)}")))
    sent = datetime.now(UTC).replace(microsecond=0)
    brewery = brewery_cap(sent)
    message = sip_message(BREWERY_SENDER, brewery, BREWERY_PIDF, "b1")
    out.append(("brewery ammonia leak (ours)", brewery, BREWERY_PIDF, message))
    demo = demo_alarm_message(time.time())
    start = demo.index(b"<?xml")
    demo_cap = demo[start : demo.index(b"</alert>") + len(b"</alert>")].replace(b"\r\n", b"\n")
    start = demo.index(b"<?xml", start + 1)
    demo_pidf = demo[start : demo.index(b"</presence>") + len(b"</presence>")]
    via = b"MESSAGE urn:service:sos SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-demo\r\n"
    message = demo.replace(b"MESSAGE urn:service:sos SIP/2.0\r\n", via)
    out.append(("demo alarm (field/radio.py)", demo_cap, demo_pidf, message))
    return out


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Gateway, Recorder]]:
    store = await AlarmStore.open(tmp_path / "gateway.sqlite")
    node = Recorder()
    destination = Destination.to_role("dispatcher")
    accept = with_followup(node, destination, node_accept(node, destination, Priority.FLASH))
    config = GatewayConfig(udp_port=0, tcp_port=0, rate_burst=100, global_burst=100, flash_burst=100)
    gateway = Gateway(config, store, BuildingRegistry(), accept)
    await gateway.start()
    yield gateway, node
    await gateway.stop()
    await store.close()


async def _send_udp(message: bytes, address: tuple[str, int]) -> SipResponse:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_sendto(sock, message, address)
        data = await asyncio.wait_for(loop.sock_recv(sock, 65535), 5.0)
    response = parse_message(data, datagram=True)
    assert isinstance(response, SipResponse)
    return response


async def test_first_frame_keeps_what_a_responder_acts_on_and_the_follow_up_the_rest(
    gateway: tuple[Gateway, Recorder], capsys: pytest.CaptureFixture[str]
) -> None:
    server, node = gateway
    assert server.udp_address is not None
    rows = [
        f"{'alarm':<44} {'SIP':<4} {'frame':>5} {'follow':>6} {'path':<5} {'hazard':<22} "
        f"{'first frame kept':<17} {'follow-up CAP'}"
    ]
    problems = []
    accepted = 0
    for name, cap_bytes, pidf, message in _messages():
        before = len(node.sent)
        response = await _send_udp(message, server.udp_address)
        if response.status != 200:
            rows.append(f"{name:<44} {response.status:<4} refused: {response.reason[:60]}")
            continue
        sent = node.sent[before:]
        if not sent:  # the same (sender, identifier, sent) as an alarm already taken: stored once
            rows.append(f"{name:<44} {200:<4} the same alert as one above: merged, nothing new sent")
            continue
        accepted += 1
        assert [(kind, priority) for kind, priority, _ in sent] == [
            (NG112_ALARM, Priority.FLASH),
            (NG112_FOLLOWUP, Priority.IMMEDIATE),
        ], name
        first, followup_bytes = sent[0][2], sent[1][2]
        record = decode_record(first)
        assert FRAME_OVERHEAD + len(first) <= LORA_MTU, f"{name}: first frame of {len(first)} bytes"
        try:
            original, _ = parse_cap(cap_bytes)
        except CapError as exc:
            raise AssertionError(f"{name} was accepted but does not parse: {exc}") from None
        kept = kept_fields(record, original, pidf)
        followup = decode_followup(followup_bytes)
        assert followup.key == (record.key_id, record.seq)
        received = check_followup(followup)
        assert received is not None
        if pidf is not None:
            assert followup.location_xml is not None and followup.location_xml.strip() == pidf.strip(), name
        differences = cap_differences(original, received)
        problems += [f"{name}: first frame {d}" for d in kept] + [
            f"{name}: follow-up {d}" for d in differences
        ]
        path = "LoRa" if len(followup_bytes) <= FOLLOWUP_ON_LORA else "IP"
        substance = Substance(record.substance).name.lower() if record.substance else ""
        hazard = record.hazard.name.lower() + (f"/{substance}" if substance else "")
        cut = " (cut)" if record.text_cut or record.event_cut else ""
        rows.append(
            f"{name:<44} {200:<4} {len(first):>5} {len(followup_bytes):>6} {path:<5} {hazard:<22} "
            f"{('equal' + cut) if not kept else 'DIFFERS':<17} {'equal' if not differences else 'DIFFERS'}"
        )
    with capsys.disabled():
        print("\n\nFirst frame (bytes of record) and follow-up (bytes, path it can take) per alarm")
        print("\n".join(rows))
        print(f"(a follow-up crosses LoRa up to {FOLLOWUP_ON_LORA} bytes; a bigger one waits for an IP path)")
    assert accepted >= 20
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("event", "categories", "codes", "headline", "expected"),
    [
        ("Ammonia leak", ("Safety",), (), "", (Hazard.GAS, Substance.AMMONIA)),
        ("Únik čpavku", ("CBRNE",), (), "", (Hazard.GAS, Substance.AMMONIA)),
        ("Gas detector", ("Safety",), (("substance", "chlorine"),), "", (Hazard.GAS, Substance.CHLORINE)),
        ("Carbon monoxide alarm", ("Health",), (), "", (Hazard.GAS, Substance.CARBON_MONOXIDE)),
        ("Gas alarm", ("Safety",), (), "LPG tank pressure drop", (Hazard.GAS, Substance.LPG)),
        ("Gas alarm", ("Safety",), (), "", (Hazard.GAS, Substance.OTHER)),
        ("Požár ve skladu", ("Fire",), (), "", (Hazard.FIRE, Substance.NONE)),
        ("Smoke detected", ("Fire",), (), "", (Hazard.SMOKE, Substance.NONE)),
        ("Přepadení pokladny", ("Security",), (), "", (Hazard.HOLD_UP, Substance.NONE)),
        ("Persons trapped in lift 3", ("Rescue",), (), "", (Hazard.LIFT_ENTRAPMENT, Substance.NONE)),
        ("Panel event 4711", ("Fire",), (), "", (Hazard.FIRE, Substance.NONE)),  # category decides
        (
            "Panel event 4711",
            ("Other",),
            (("hazard", "structural"),),
            "",
            (Hazard.STRUCTURAL, Substance.NONE),
        ),
        ("Hazardous materials", ("CBRNE",), (("SAME", "HMW"),), "", (Hazard.CBRNE, Substance.NONE)),
        ("Company fire drill", ("Other",), (), "", (Hazard.FIRE, Substance.NONE)),  # "co" is no gas
    ],
)
def test_hazard_table(
    event: str,
    categories: tuple[str, ...],
    codes: tuple[tuple[str, str], ...],
    headline: str,
    expected: tuple[Hazard, Substance],
) -> None:
    assert classify(event, categories, codes, (), headline) == expected
