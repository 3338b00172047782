"""``mesh112 ng112 ...``: run the NG112 SIP gateway, or show what it makes of a file.

mesh112 ng112 gateway --config node.toml --to node:HEX [--udp-port 5060] [--buildings FILE]
mesh112 ng112 gateway --data DIR [--udp-port 5060] [--tcp-port 5060] [--buildings FILE]

With ``--config`` the gateway is a Mesh112 node (its links and keys from the node's TOML config): alarms
travel over the mesh to the command post and acknowledgements come back to the panel. With ``--data``
it runs alone and only stores what it accepts (commissioning a panel without a mesh).
mesh112 ng112 parse FILE [--as sip|cap|pidf]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import ssl
import time
from pathlib import Path
from typing import Any

from ng112.buildings import BuildingRegistry
from ng112.canonical import record_from_request, record_to_cap
from ng112.cap import build_cap_xml, parse_cap, validate_cap12
from ng112.digest import ALGORITHMS
from ng112.errors import Ng112Error
from ng112.gateway import Gateway, GatewayConfig
from ng112.pidfl import parse_pidf
from ng112.record import COMPACT_HEADER, CRYPTO_BUDGET
from ng112.request import IngressPolicy, evaluate
from ng112.sip import SipRequest, parse_message
from ng112.store import AlarmStore
from relay.bundle import Destination, DestinationError
from relay.errors import UsageError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("ng112", help="NG112 building alarms: SIP gateway and tools")
    commands = parser.add_subparsers(dest="ng112_command", metavar="SUBCOMMAND", required=True)

    gateway = commands.add_parser("gateway", help="run the SIP UAS that takes building alarms (RFC 8876)")
    where = gateway.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path, help="run as a Mesh112 node with this node.toml")
    where.add_argument("--data", type=Path, help="run alone (no mesh), storing alarms in this directory")
    gateway.add_argument(
        "--to",
        help="with --config: where alarms go: node:<command post node id> (or role:<name> with a group key)",
    )
    gateway.add_argument("--log-level", default="info")
    gateway.add_argument("--json-logs", action="store_true", help="log one JSON object per line")
    gateway.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    gateway.add_argument("--udp-port", type=int, default=5060)
    gateway.add_argument("--tcp-port", type=int, default=5060)
    gateway.add_argument("--tls-port", type=int, help="also listen for SIP over TLS (needs --cert/--key)")
    gateway.add_argument("--cert", type=Path, help="TLS certificate chain (PEM)")
    gateway.add_argument("--key", type=Path, help="TLS private key (PEM)")
    gateway.add_argument("--buildings", type=Path, help="building enrolment table (TOML)")
    gateway.add_argument("--uri", action="append", default=[], help="our own SIP URI besides urn:service:sos")
    gateway.add_argument("--location-required", action="store_true", help="answer 424 to unusable location")
    gateway.add_argument(
        "--digest-algorithms",
        default="SHA-256,MD5",
        help="SIP digest algorithms offered to enrolled buildings, most preferred first "
        "(default SHA-256,MD5; put MD5 first for panels, like sipsak, that only read the first offer)",
    )
    gateway.add_argument(
        "--duration", type=float, help="stop after this many seconds (default: run until ^C)"
    )
    gateway.set_defaults(func=_run_gateway)

    parse = commands.add_parser("parse", help="show what the gateway makes of a SIP, CAP or PIDF-LO file")
    parse.add_argument("file", type=Path)
    parse.add_argument("--as", dest="kind", choices=("auto", "sip", "cap", "pidf"), default="auto")
    parse.set_defaults(func=_parse)


def _digest_algorithms(text: str) -> tuple[str, ...]:
    algorithms = tuple(a.strip().upper() for a in text.split(",") if a.strip())
    unknown = [a for a in algorithms if a not in ALGORITHMS]
    if unknown or not algorithms:
        raise UsageError(f"--digest-algorithms: use {' and/or '.join(ALGORITHMS)}, comma-separated")
    return algorithms


def _run_gateway(args: argparse.Namespace) -> int:
    tls = None
    if args.tls_port is not None:
        if not (args.cert and args.key):
            raise UsageError("--tls-port needs --cert and --key")
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.cert, args.key)
    registry = BuildingRegistry.load(args.buildings) if args.buildings else BuildingRegistry()
    config = GatewayConfig(
        host=args.host,
        udp_port=args.udp_port,
        tcp_port=args.tcp_port,
        tls_port=args.tls_port,
        tls_context=tls,
        policy=IngressPolicy(own_uris=tuple(args.uri), location_required=args.location_required),
        digest_algorithms=_digest_algorithms(args.digest_algorithms),
    )
    if args.config is not None:
        return _run_gateway_node(args, config, registry)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config, registry, args.data, args.duration))
    return 0


def _print_listening(gateway: Gateway) -> None:
    addresses = f"udp {gateway.udp_address} tcp {gateway.tcp_address} tls {gateway.tls_address}"
    print(f"ng112 gateway listening: {addresses}", flush=True)


def _run_gateway_node(args: argparse.Namespace, config: GatewayConfig, registry: BuildingRegistry) -> int:
    from ng112.node_app import gateway_app
    from relay import daemon
    from relay.config import load_config
    from relay.logs import setup_logging

    node_config = load_config(args.config)
    try:
        destination = Destination.parse(args.to or "")
    except DestinationError as exc:
        raise UsageError(f"--to: {exc}") from None
    setup_logging(args.log_level, args.json_logs)
    app = gateway_app(config, registry, node_config.node.data_dir, destination, _print_listening)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if args.duration is not None:
            loop.call_later(args.duration, stop.set)
        await daemon.run(node_config, stop, apps=[app])

    asyncio.run(main())
    return 0


async def _serve(
    config: GatewayConfig, registry: BuildingRegistry, data: Path, duration: float | None
) -> None:
    data.mkdir(parents=True, exist_ok=True)
    store = await AlarmStore.open(data / "ng112-gateway.sqlite")
    gateway = Gateway(config, store, registry)
    await gateway.start()
    _print_listening(gateway)
    try:
        await asyncio.sleep(duration if duration is not None else float("inf"))
    finally:
        await gateway.stop()
        await store.close()


def _parse(args: argparse.Namespace) -> int:
    data = args.file.read_bytes()
    kind = args.kind
    if kind == "auto":
        head = data.lstrip()[:200]
        kind = "sip" if b"SIP/2.0" in head else "pidf" if b"presence" in data[:2000] else "cap"
    out: dict[str, Any] = {"file": str(args.file), "as": kind}
    if kind == "cap":
        alert, warnings = parse_cap(data)
        xml = build_cap_xml(alert)
        validate_cap12(xml)
        out |= {"identifier": alert.identifier, "sender": alert.sender, "msgType": alert.msg_type}
        out |= {"status": alert.status, "warnings": warnings, "canonical_cap12_bytes": len(xml)}
    elif kind == "pidf":
        location, warnings = parse_pidf(data)
        out |= {"shapes": [s.kind for s in location.shapes], "best_point": location.best_point()}
        out |= {"civic": [dict(c.fields) for c in location.civic], "warnings": warnings}
    else:
        message = parse_message(data)
        if not isinstance(message, SipRequest):
            raise Ng112Error("the file holds a SIP response, not a request")
        decision = evaluate(message, IngressPolicy(own_uris=(message.uri,)))
        out |= {"outcome": decision.outcome.value, "response": f"{decision.status} {decision.reason}"}
        out |= {"headers": dict(decision.headers), "warnings": list(decision.warnings)}
        if decision.request is not None:
            registry = BuildingRegistry()
            record = record_from_request(
                decision.request, registry.key_for(decision.request.sender_uri), time.time()
            )
            wire = record.encode()
            out |= {"record_hex": wire.hex(), "record_bytes": len(wire)}
            out["bytes_on_air"] = len(wire) + COMPACT_HEADER + CRYPTO_BUDGET
            out["canonical_cap"] = build_cap_xml(record_to_cap(record, None)).decode()
    print(json.dumps(out, indent=2, ensure_ascii=False, default=str))
    return 0
