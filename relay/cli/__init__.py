"""The ``mesh112`` command.

Subcommands come from modules that expose ``register(subparsers)``. The relay's own are listed in
``_BUILTIN``; packages above ``relay`` (ng112, analytics_edge, mobile, the demo package ``field``)
add theirs through the ``mesh112.commands`` entry-point group, so ``relay`` never imports upward.

A subcommand's handler is stored as ``func`` on its parser and returns an exit code. Errors meant
for a person (``Mesh112Error``, ``crypto.CryptoError``, ``OSError``) are printed in one line.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any

from crypto.errors import CryptoError
from relay.errors import Mesh112Error

_BUILTIN: list[str] = [
    "relay.cli.keys",
    "relay.cli.relay",
    "relay.cli.sim",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mesh112",
        description="Mesh112: delay-tolerant emergency messaging over LoRa, cellular/IP and WebRTC.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules: list[Any] = [importlib.import_module(name) for name in _BUILTIN]
    modules += [ep.load() for ep in entry_points(group="mesh112.commands")]
    for module in modules:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code: int = args.func(args)
    except (Mesh112Error, CryptoError) as exc:
        print(f"mesh112: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"mesh112: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
