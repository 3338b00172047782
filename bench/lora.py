"""LoRa benchmark: airtime and bytes on air per message on LongFast, goodput of a 10 KB transfer,
and overhead per message of plain Meshtastic text, a Mesh112 bundle and an LXMF message.

Formula figures use the Semtech time-on-air of the exact frame sizes. Measured figures run the real
``meshtastic`` library (through ``LoRaLink``) against the project's emulated radios, with the medium
in scaled time (``SPEEDUP``); simulated seconds are reported, so they compare with the formula.
LXMF sizes come from packing real ``LXMF.LXMessage`` objects in a subprocess whose Reticulum has no
interfaces at all (no AutoInterface, no shared instance).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from meshtastic.protobuf import mesh_pb2, portnums_pb2

from crypto.hop import HOP_OVERHEAD, HopAuth
from crypto.identity import Identity, PublicIdentity
from field.lora_emulator.device import DeviceServer
from field.lora_emulator.medium import LoRaMedium
from ng112.hazards import Hazard
from ng112.record import AlarmRecord, encode_record
from relay.bundle import COMPACT_HEADER_LEN
from relay.links.lora import LoRaLink, LoRaLinkConfig
from relay.links.lora_phy import MESHTASTIC_HEADER_LEN, PKI_OVERHEAD, modem

PRESET = "LONG_FAST"
SPEEDUP = 20.0
SEAL_BUDGET = 32  # end-to-end crypto per bundle on LoRa (architecture budget)
FRAGMENT_HEADER = 4
NUM_A, NUM_B = 0xA0000001, 0xA0000002
KEY_A, KEY_B = Identity.generate(), Identity.generate()
ID_A, ID_B = KEY_A.node_id, KEY_B.node_id
LINK_MTU = 219 - HOP_OVERHEAD  # a direct message less the hop tag


def _peer_keys(node_id: bytes, now: float) -> PublicIdentity:
    return {ID_A: KEY_A.public, ID_B: KEY_B.public}[node_id]


def _alarm() -> bytes:
    record = AlarmRecord(
        msg_type="Alert",
        status="Actual",
        key_id=0x12345678,
        seq=0x0BADF00D,
        sent=1_760_000_000,
        categories=("Fire",),
        code=Hazard.FIRE,
        urgency="Immediate",
        severity="Severe",
        certainty="Observed",
        lat_e7=481_371_000,
        lon_e7=115_754_000,
        uncertainty=40,
        floor=2,
        zone="B2-Z14",
    )
    return encode_record(record)


# Representative application payloads (the NG112 alarm is the real compact record).
MESSAGES: dict[str, bytes] = {
    "ng112_alarm": _alarm(),
    "sos": bytes(14),  # type, lat/lon int32, accuracy, battery, status, 3-byte ref
    "text_message": b"Need 2 stretchers at gate 4, north side",
    "detection_event": bytes(24),  # class, confidence, bbox, track id, time, camera ref
}


def _ack_phy_len() -> int:
    """A ROUTING_APP ACK as the firmware (and the emulator) sends it."""
    routing = mesh_pb2.Routing(error_reason=mesh_pb2.Routing.NONE).SerializeToString()
    data = mesh_pb2.Data(portnum=portnums_pb2.ROUTING_APP, payload=routing, request_id=0xFFFFFFFF)
    return MESHTASTIC_HEADER_LEN + len(data.SerializeToString())


ACK_PHY_LEN = _ack_phy_len()


def _data_len(payload_len: int, port: int) -> int:
    """Size of the Meshtastic Data protobuf: port field, bitfield, payload tag and length."""
    port_field = 2 if port < 128 else 3
    return port_field + 2 + 1 + (1 if payload_len < 128 else 2) + payload_len


def _phy_len(payload_len: int, port: int, pki: bool = True) -> int:
    return MESHTASTIC_HEADER_LEN + _data_len(payload_len, port) + (PKI_OVERHEAD if pki else 0)


def formula_per_frame() -> dict[str, Any]:
    lora = modem(PRESET)
    rows = {}
    for size in (16, 32, 64, 128, 219):
        phy = _phy_len(size, 300)
        rows[str(size)] = {"phy_bytes": phy, "airtime_ms": round(lora.airtime_s(phy) * 1000, 1)}
    return rows


def lxmf_sizes(contents: dict[str, int]) -> dict[str, Any]:
    """Pack LXMF messages in a Reticulum without interfaces; sizes of the message and its RNS packet."""
    script = """
import json, os, sys, tempfile
import RNS, LXMF
d = tempfile.mkdtemp()
with open(os.path.join(d, "config"), "w") as f:
    f.write("[reticulum]\\n  enable_transport = No\\n  share_instance = No\\n"
            "  panic_on_interface_error = No\\n[logging]\\n  loglevel = 1\\n[interfaces]\\n")
RNS.Reticulum(configdir=d, loglevel=1)
src = RNS.Destination(RNS.Identity(), RNS.Destination.IN, RNS.Destination.SINGLE, "lxmf", "delivery")
dst = RNS.Destination(RNS.Identity(), RNS.Destination.OUT, RNS.Destination.SINGLE, "lxmf", "delivery")
out = {}
for name, n in json.loads(sys.argv[1]).items():
    m = LXMF.LXMessage(dst, src, "x" * n, title="", desired_method=LXMF.LXMessage.OPPORTUNISTIC)
    m.pack()
    p = RNS.Packet(dst, m.packed[LXMF.LXMessage.DESTINATION_LENGTH:])
    p.pack()
    out[name] = {"lxmf_packed": len(m.packed), "rns_packet": len(p.raw)}
print(json.dumps(out), flush=True)
os._exit(0)
"""
    with tempfile.TemporaryDirectory() as home:
        done = subprocess.run(
            [sys.executable, "-c", script, json.dumps(contents)],
            capture_output=True,
            text=True,
            timeout=120,
            env={"HOME": home, "PATH": "/usr/bin:/bin"},
            check=True,
        )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def overhead_per_message() -> dict[str, Any]:
    lora = modem(PRESET)
    lxmf = lxmf_sizes({name: len(p) for name, p in MESSAGES.items()} | {"empty": 0})
    rows: dict[str, Any] = {"lxmf_empty_message": lxmf["empty"]}
    for name, payload in MESSAGES.items():
        bundle_len = COMPACT_HEADER_LEN + SEAL_BUDGET + len(payload)
        mesh112_phy = _phy_len(1 + bundle_len + HOP_OVERHEAD, 300)  # frame type, bundle, hop tag
        text_phy = _phy_len(len(payload), 1)
        lxmf_packet = lxmf[name]["rns_packet"]
        rows[name] = {
            "payload_bytes": len(payload),
            "mesh112": {
                "bundle_bytes": bundle_len,
                "hop_tag_bytes": HOP_OVERHEAD,
                "bytes_on_air": mesh112_phy + ACK_PHY_LEN,
                "airtime_ms": round((lora.airtime_s(mesh112_phy) + lora.airtime_s(ACK_PHY_LEN)) * 1000, 1),
                "overhead_bytes": mesh112_phy - len(payload),
                "frames": 1,
            },
            "meshtastic_text": {
                "bytes_on_air": text_phy + ACK_PHY_LEN,
                "airtime_ms": round((lora.airtime_s(text_phy) + lora.airtime_s(ACK_PHY_LEN)) * 1000, 1),
                "overhead_bytes": text_phy - len(payload),
            },
            "lxmf": {
                "lxmf_packed_bytes": lxmf[name]["lxmf_packed"],
                "rns_packet_bytes": lxmf_packet,
                "overhead_bytes": lxmf_packet - len(payload),
                "fits_one_meshtastic_frame": lxmf_packet <= 231,
            },
        }
    return rows


class _Sink:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def link_up(self, link: str, peer: bytes) -> None:
        pass

    def link_down(self, link: str, peer: bytes) -> None:
        pass

    def frame_received(self, link: str, peer: bytes, frame: bytes) -> None:
        self.frames.append(frame)


async def _measure(window: int, frames: list[bytes]) -> dict[str, Any]:
    """Send ``frames`` A→B through LoRaLink with ``window`` frames in flight; simulated time and air use."""
    from field.lora_emulator.radio import EmulatedRadio

    medium = LoRaMedium(PRESET, seed=1, speedup=SPEEDUP)
    servers = []
    for num, x in ((NUM_A, 0.0), (NUM_B, 500.0)):
        server = DeviceServer(EmulatedRadio(medium, num, position=(x, 0.0), seed=1))
        server.start()
        servers.append(server)
    roster = {NUM_A: ID_A.hex(), NUM_B: ID_B.hex()}
    sink = _Sink()
    links = [
        LoRaLink(
            LoRaLinkConfig(roster=roster, port=s.port, name=f"lora{i}", ack_timeout_s=30.0),
            HopAuth(key),
            _peer_keys,
        )
        for i, (s, key) in enumerate(zip(servers, (KEY_A, KEY_B), strict=True))
    ]
    try:
        await links[0].start(_Sink())
        await links[1].start(sink)
        semaphore = asyncio.Semaphore(window)

        async def one(frame: bytes) -> None:
            async with semaphore:
                await links[0].send(ID_B, frame)

        start_sim, start_wall = medium.now(), time.perf_counter()
        await asyncio.gather(*(one(f) for f in frames))
        sim_s, wall_s = medium.now() - start_sim, time.perf_counter() - start_wall
        delivered = sum(len(f) for f in sink.frames)
        return {
            "frames": len(frames),
            "delivered_bytes": delivered,
            "simulated_s": round(sim_s, 2),
            "wall_s": round(wall_s, 3),
            "frames_per_simulated_s": round(len(frames) / sim_s, 3),
            "transmissions": medium.stats.transmissions,
            "bytes_on_air": medium.stats.bytes_on_air,
            "airtime_s": round(medium.stats.airtime_s, 2),
        }
    finally:
        for link in links:
            await link.stop()
        for server in servers:
            server.stop()
        medium.close()


def goodput_10k() -> dict[str, Any]:
    lora = modem(PRESET)
    data = bytes(range(256)) * 40  # 10 KB
    chunk = LINK_MTU - COMPACT_HEADER_LEN - FRAGMENT_HEADER  # bundle header per fragment, 4 B fragment header
    frames = [
        b"\0" * (COMPACT_HEADER_LEN + FRAGMENT_HEADER) + data[i : i + chunk]
        for i in range(0, len(data), chunk)
    ]
    out: dict[str, Any] = {"bytes": len(data), "phy_bitrate_bps": round(lora.bitrate_bps, 1)}
    for window in (1, 4):
        figures = asyncio.run(_measure(window, frames))
        figures["goodput_bps"] = round(len(data) * 8 / figures["simulated_s"], 1)
        figures["goodput_fraction_of_phy"] = round(
            len(data) * 8 / figures["simulated_s"] / lora.bitrate_bps, 3
        )
        out[f"window_{window}"] = figures
    return out


def frame_rate() -> dict[str, Any]:
    runs = [asyncio.run(_measure(1, [bytes(LINK_MTU)] * 10)) for _ in range(3)]
    return {
        "frame_bytes": LINK_MTU + HOP_OVERHEAD,
        "median_frames_per_simulated_s": statistics.median(r["frames_per_simulated_s"] for r in runs),
        "median_wall_s_per_10_frames": statistics.median(r["wall_s"] for r in runs),
        "speedup": SPEEDUP,
    }


def measured_alarm() -> dict[str, Any]:
    """One NG112 alarm bundle through the library and emulator: what the air really carried."""
    frame = bytes(COMPACT_HEADER_LEN + SEAL_BUDGET) + MESSAGES["ng112_alarm"]
    figures = asyncio.run(_measure(1, [frame]))
    return {k: figures[k] for k in ("transmissions", "bytes_on_air", "airtime_s", "simulated_s")}


def run() -> dict[str, Any]:
    return {
        "ng112_alarm_measured_in_emulator": measured_alarm(),
        "preset": PRESET,
        "airtime_per_frame_formula": formula_per_frame(),
        "per_message": overhead_per_message(),
        "goodput_10k": goodput_10k(),
        "frame_rate_through_library": frame_rate(),
        "notes": (
            "Mesh112 frames are Meshtastic PKI direct messages (+12 B) on private port 300 with a real ACK; "
            "bundle = 16 B compact header + 32 B seal budget + payload. Measured figures are simulated "
            "seconds of the emulator in scaled time, not radio measurements."
        ),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
