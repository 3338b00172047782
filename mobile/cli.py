"""``mesh112 app --node DIR`` (or ``python -m mobile --node DIR``): the responder app on this machine.

The node directory is a node's (``mesh112 init`` or the demo's ``responder-1``): ``node.toml`` with
its links and ``command_post``, keys, certificate, roster; ``app.toml`` beside it holds the app's
own settings (:mod:`mobile.settings`). Needs a display (``$DISPLAY``, or Xvfb for tests).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "app",
        help="the responder app (Kivy) with its own node: SOS, incident, messages, map, links",
        description="Runs a node in-process with the links of DIR/node.toml and opens the app window.",
    )
    _arguments(parser)
    parser.set_defaults(func=_run)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--node", type=Path, required=True, help="the node directory (node.toml, keys)")
    parser.add_argument("--language", choices=("en", "cs"), help="override app.toml's language")
    parser.add_argument("--night", action="store_true", help="start in night mode")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def _run(args: argparse.Namespace) -> int:
    os.environ.setdefault("KIVY_NO_ARGS", "1")  # Kivy must not read mesh112's command line
    os.environ.setdefault("KIVY_LOG_MODE", "MIXED")  # Kivy's records go through Python logging too
    from dataclasses import replace

    from mobile.runtime import run
    from mobile.settings import AppSettings
    from relay.logs import setup_logging

    setup_logging(args.log_level, False)
    settings = AppSettings.load(args.node)
    if args.language:
        settings = replace(settings, language=args.language)
    if args.night:
        settings = replace(settings, night=True)
    asyncio.run(run(args.node, settings))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from relay.cli import main as mesh112

    return mesh112(["app", *(sys.argv[1:] if argv is None else argv)])
