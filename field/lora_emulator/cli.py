"""``mesh112 lora-emulator CONFIG.toml``: run emulated Meshtastic radios on 127.0.0.1.

A newcomer can point the official CLI at them (``meshtastic --host 127.0.0.1:PORT``, or with ``--pty``
``meshtastic --port /dev/pts/N``) or a Mesh112 node's LoRa link (``transport``, ``address``, ``port``).
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path
from typing import Any

from field.lora_emulator.runner import EmulatedField, load_config
from field.lora_emulator.serial_pty import PtyBridge


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "lora-emulator",
        help="run emulated Meshtastic radios (TCP stream API) over a simulated LoRa medium",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "config", type=Path, help="TOML file: preset, region, seed, speedup and [[radio]] tables"
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="stop after this many seconds (default: until Ctrl-C)"
    )
    parser.add_argument(
        "--pty",
        action="store_true",
        help="also give each radio a pseudo-terminal for serial clients (meshtastic --port PATH); "
        "it holds the radio's one client slot, so use either the pty or TCP",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    field = EmulatedField(config)
    ports = field.start()
    bridges: dict[int, PtyBridge] = {}
    try:
        if args.pty:
            for num, port in ports.items():
                bridges[num] = PtyBridge("127.0.0.1", port)
                bridges[num].start()
        print(f"LoRa medium: {config.preset}, {config.region}, seed {config.seed}, speedup {config.speedup}x")
        for radio_config in config.radios:
            num = radio_config.num
            client = f"--port {bridges[num].path}" if num in bridges else f"--host 127.0.0.1:{ports[num]}"
            print(f"  !{num:08x}  {radio_config.name:<24}  meshtastic {client}", flush=True)
        print("Ctrl-C stops the emulator.", flush=True)
        threading.Event().wait(args.duration)
    finally:
        for bridge in bridges.values():
            bridge.stop()
        field.stop()
    return 0
