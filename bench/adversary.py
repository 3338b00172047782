"""FLASH alarm latency under attack, against the same run without it (field/adversary.py).

LoRa: three real nodes on emulated Meshtastic radios through the real ``meshtastic`` library
(field unit -> relay -> command post), an outsider radio and, for one scenario, an enrolled rogue.
IP: field unit -> relay -> command post over real IP links on 127.0.0.1, with an enrolled insider.
Each figure is the median of three alarms; LoRa times are simulated seconds on the emulated air.

The rogue scenario runs at a lower speedup: the nodes pace an over-cap origin on the wall clock, so at
a high speedup the pacing looks stricter in simulated seconds than it is on a real radio.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from crypto.hop import HOP_OVERHEAD
from crypto.seal import COMPACT_OVERHEAD
from field.adversary import ATTACK_REGION, LORA_ATTACKS, Run, ip_run, lora_run
from ng112.record import MAX_RECORD
from relay.bundle import COMPACT_HEADER_LEN
from relay.links.lora_phy import MAX_DM_PAYLOAD

SPEEDUP = 50.0
ROGUE_SPEEDUP = 5.0


def _ports() -> tuple[int, int]:
    sockets = [socket.socket() for _ in range(2)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        relay, post = (int(probe.getsockname()[1]) for probe in sockets)
        return relay, post
    finally:
        for probe in sockets:
            probe.close()


def _row(quiet: Run, attacked: Run, **extra: Any) -> dict[str, Any]:
    ratio = attacked.latency_s / quiet.latency_s if quiet.latency_s else float("inf")
    return {
        "latency_without_s": quiet.latency_s,
        "latency_with_s": attacked.latency_s,
        "ratio": round(ratio, 2),
        "alarms_without_s": quiet.latencies_s,
        "alarms_with_s": attacked.latencies_s,
        "delivered": quiet.delivered and attacked.delivered,
        "attacker": attacked.attack,
        "seen_by_operators": attacked.counters,
        **extra,
    }


async def _lora(attack: str, directory: Path) -> dict[str, Any]:
    speedup = ROGUE_SPEEDUP if attack == "rogue_flash" else SPEEDUP
    region = ATTACK_REGION.get(attack, "EU_868")
    quiet = await lora_run(directory / "quiet", None, region=region, speedup=speedup, timeout=120.0)
    attacked = await lora_run(directory / "attack", attack, region=region, speedup=speedup, timeout=120.0)
    return _row(quiet, attacked, link="lora", region=region, speedup=speedup, unit="simulated s")


async def _ip(directory: Path) -> dict[str, Any]:
    quiet = await ip_run(directory / "quiet", False, _ports())
    attacked = await ip_run(directory / "attack", True, _ports())
    return _row(quiet, attacked, link="ip", unit="s")


def run() -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for attack in LORA_ATTACKS:
            started = time.perf_counter()
            results[f"lora_{attack}"] = asyncio.run(_lora(attack, Path(tmp) / attack))
            results[f"lora_{attack}"]["wall_s"] = round(time.perf_counter() - started, 1)
            print(f"  {attack}: {results[f'lora_{attack}']['ratio']}x", flush=True)
        results["ip_insider_preempt"] = asyncio.run(_ip(Path(tmp) / "ip"))
    alarm_frame = 1 + COMPACT_HEADER_LEN + COMPACT_OVERHEAD + MAX_RECORD
    results["lora_budget"] = {
        "hop_tag_bytes": HOP_OVERHEAD,
        "largest_ng112_alarm_frame_bytes": alarm_frame + HOP_OVERHEAD,
        "direct_message_limit_bytes": MAX_DM_PAYLOAD,
        "link_mtu_bytes": MAX_DM_PAYLOAD - HOP_OVERHEAD,
    }
    return results
