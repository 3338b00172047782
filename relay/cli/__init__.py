"""The ``mesh112`` command.

Subcommands come from modules that expose ``register(subparsers)``. The relay's own are listed in
``_BUILTIN``; packages above ``relay`` (ng112, analytics_edge, mobile, the demo package ``field``)
add theirs through the ``mesh112.commands`` entry-point group, so ``relay`` never imports upward.

A subcommand's handler is stored as ``func`` on its parser and returns an exit code. Errors meant
for a person are printed in one line, without a traceback, and the exit code says whose move it is:
2 for a usage error (argparse's own, a :class:`UsageError`, a destination that does not parse: fix
the command line), 1 for a failure at run time (``Mesh112Error``, ``crypto.CryptoError``,
``OSError``: a file missing, a key that does not open, a node unreachable).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, entry_points, version

from crypto.errors import CryptoError
from relay.bundle import DestinationError
from relay.errors import Mesh112Error, UsageError

EXIT_FAILURE = 1  # something went wrong at run time
EXIT_USAGE = 2  # the command line is wrong (argparse uses 2 as well)

_BUILTIN: list[str] = [
    "relay.cli.config",
    "relay.cli.keys",
    "relay.cli.relay",
    "relay.cli.sim",
]


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The subcommands ``command`` needs: an installed package's alone when it names one of their entry
    points (``mesh112 app`` then skips every other command's dependencies: a second of the app's
    start), the relay's own alone when it is one of theirs (``mesh112 relay run`` starts each node of a
    field without the camera tools' numpy, scipy and onnxruntime, nor the demo's emulator), every
    subcommand otherwise (help, or a command nobody has: argparse lists them all)."""
    parser = argparse.ArgumentParser(
        prog="mesh112",
        description="Mesh112: delay-tolerant emergency messaging over LoRa, cellular/IP and WebRTC.",
    )
    parser.add_argument("--version", action="version", version=f"mesh112 {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    plugins = entry_points(group="mesh112.commands")
    chosen = [ep for ep in plugins if ep.name == command]
    if chosen:
        chosen[0].load().register(subparsers)
        return parser
    for name in _BUILTIN:
        importlib.import_module(name).register(subparsers)
    if command not in subparsers.choices:
        for ep in plugins:
            ep.load().register(subparsers)
    return parser


def _version() -> str:
    try:
        return version("mesh112")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(arguments[0] if arguments else None)
    args = parser.parse_args(arguments)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        code: int = args.func(args)
    except (UsageError, DestinationError) as exc:
        print(f"mesh112: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (Mesh112Error, CryptoError) as exc:
        print(f"mesh112: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        print(f"mesh112: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    return code
