"""``mesh112 relay run`` (the daemon) and the client commands ``send``, ``position``, ``inbox``, ``status``.

The client commands talk to a running node's API with an operator token (``--token`` or the
``MESH112_TOKEN`` environment variable), so they work the same against a local node or a command
post across the network. A destination is ``node:<id>``, ``role:<name>``, ``group:<name>``, ``all``
or a node's name (``responder-1`` for "Responder 1"); the node resolves names from the certificates
it holds, so the name a person reads on the dashboard is the name they type.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

from relay.bundle import Destination, DestinationError
from relay.config import load_config
from relay.errors import Mesh112Error, UsageError

DEFAULT_API = "http://127.0.0.1:8112"
DESTINATION_HELP = "node:<32 hex digits>, a node's name (e.g. responder-1), role:<name>, group:<name> or all"
_BUNDLE_ID = re.compile(r"[0-9a-fA-F]{44}")


class ApiError(Mesh112Error):
    """The API refused or could not be reached; the message carries its answer."""


def register(subparsers: Any) -> None:
    relay = subparsers.add_parser("relay", help="run a node")
    relay_sub = relay.add_subparsers(dest="relay_command", metavar="ACTION", required=True)
    run = relay_sub.add_parser("run", help="run one node with its links, store and API until SIGTERM")
    run.add_argument("--config", type=Path, required=True, help="the node's TOML file")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument("--json-logs", action="store_true", help="one JSON object per log line")
    run.set_defaults(func=_run)

    for name, help_text, func in (
        ("send", "send a text message through a node's API", _send),
        ("position", "report this unit's position (to the command post named in node.toml)", _position),
        ("inbox", "list messages received at a node (newest first)", _inbox),
        ("status", "where is a bundle: queued, forwarded, delivered, expired", _status),
    ):
        parser = subparsers.add_parser(name, help=help_text)
        parser.add_argument("--api", default=os.environ.get("MESH112_API", DEFAULT_API), help="API base URL")
        parser.add_argument("--token", default=os.environ.get("MESH112_TOKEN"), help="operator token")
        if func is _send:
            parser.add_argument("to", type=_destination, help=DESTINATION_HELP)
            parser.add_argument("text")
            parser.add_argument(
                "--priority",
                default="PRIORITY",
                choices=["FLASH", "IMMEDIATE", "PRIORITY", "ROUTINE", "BULK"],
            )
            parser.add_argument("--lifetime", type=int, default=3600, help="seconds")
        elif func is _position:
            parser.add_argument("lat", type=float, help="degrees north (WGS 84), negative for south")
            parser.add_argument("lon", type=float, help="degrees east (WGS 84), negative for west")
            parser.add_argument("--accuracy", type=float, metavar="M", help="horizontal accuracy in metres")
            parser.add_argument(
                "--to",
                type=_destination,
                help=f"{DESTINATION_HELP} (default: command_post in the node's node.toml)",
            )
        elif func is _inbox:
            parser.add_argument("--limit", type=int, default=20)
        else:
            parser.add_argument("bundle_id", help="the id printed by mesh112 send (44 hex digits)")
            parser.add_argument("--json", action="store_true", help="print the API's JSON answer")
        parser.set_defaults(func=func)


def _destination(text: str) -> str:
    """Checks the prefixed forms here (a bad one is a usage error before any request); a name is
    passed on as typed, for the node to resolve against the certificates it holds."""
    if ":" in text or text == "all":
        try:
            Destination.parse(text)
        except DestinationError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _run(args: argparse.Namespace) -> int:
    from relay import daemon
    from relay.logs import setup_logging

    config = load_config(args.config)
    setup_logging(args.log_level, args.json_logs)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await daemon.run(config, stop)

    import uvloop  # a turn of its loop costs less than asyncio's: every hop of a message waits for some

    uvloop.run(main())
    return 0


def _call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    import httpx  # only the client commands need it

    if not args.token:
        raise ApiError("no operator token: pass --token or set MESH112_TOKEN (mesh112 authority token)")
    try:
        response = httpx.request(
            method,
            args.api.rstrip("/") + path,
            json=body,
            timeout=10.0,
            headers={"Authorization": f"Bearer {args.token}"},
        )
    except httpx.HTTPError as exc:
        raise ApiError(f"cannot reach the node API at {args.api}: {exc}") from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        if response.status_code == 422:  # the node refused what the command line asked for
            raise UsageError(_readable(detail))
        raise ApiError(f"{response.status_code}: {detail}")
    return response.json()


def _readable(detail: Any) -> str:
    """The API's refusal as one line; FastAPI's validation detail (a list of {loc, msg}) reads
    ``the node refused it (422): lat: Input should be …``."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = [str(p) for p in item.get("loc", []) if p not in ("body", "query", "path")]
                message = str(item.get("msg", ""))
                parts.append(f"{'.'.join(where)}: {message}" if where else message)
        return f"the node refused it (422): {'; '.join(parts) or detail}"
    return str(detail)


def _send(args: argparse.Namespace) -> int:
    body = {"to": args.to, "text": args.text, "priority": args.priority, "lifetime_s": args.lifetime}
    result = _call(args, "POST", "/api/v1/messages", body)
    print(f"{result['bundle_id']}  {result['summary']}")
    return 0


def _position(args: argparse.Namespace) -> int:
    body = {"lat": args.lat, "lon": args.lon, "accuracy_m": args.accuracy, "to": args.to}
    result = _call(args, "POST", "/api/v1/positions", {k: v for k, v in body.items() if v is not None})
    print(f"{result['bundle_id']}  {result['summary']}")
    return 0


def _inbox(args: argparse.Namespace) -> int:
    for message in _call(args, "GET", f"/api/v1/messages?limit={args.limit}"):
        print(f"{message['priority']:<9} {message['origin'][:8]}  {message['text']}")
    return 0


def _status(args: argparse.Namespace) -> int:
    if not _BUNDLE_ID.fullmatch(args.bundle_id):
        raise UsageError(
            f"{args.bundle_id!r} is not a bundle id: give the 44 hex digits mesh112 send printed"
        )
    result = _call(args, "GET", f"/api/v1/bundles/{args.bundle_id}")
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        print(describe_status(result, time.time()))
    return 0


def describe_status(status: dict[str, Any], now: float) -> str:
    """One line for a person: "delivered via Field Relay 1 → Responder 1, 2 hops, 3 s ago"."""
    text = str(status["state"])
    path = list(status.get("path") or [])
    hops = status.get("hops")
    if text == "delivered" and hops is not None and hops > len(path):
        missing = hops - len(path)
        path.insert(0, f"[{missing} hop{'s' if missing != 1 else ''} not recorded]")
    if text == "delivered" and path:
        text += " via " + " → ".join(path)
    elif status.get("reason"):  # evicted: why
        text += f": {status['reason']}"
    elif status.get("peer") and status.get("link"):
        text += f" to {status['peer'][:8]} over {status['link']}"
    if hops is not None:
        text += f", {hops} hop{'s' if hops != 1 else ''}"
    if status.get("at") is not None:
        text += f", {_ago(now - float(status['at']))}"
    return text


def _ago(seconds: float) -> str:
    if seconds < 0:
        return "just now (the node's clock is ahead)"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"
