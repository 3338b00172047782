"""``mesh112 config check FILE`` and ``mesh112 config schema``: a node.toml checked before it runs.

``check`` prints every problem at once, one line each (the same lines ``mesh112 relay run`` refuses
the file with), and exits 1 if there is any; ``schema`` prints the JSON Schema the models generate,
the one shipped as deploy/node.schema.json for editors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from relay.config import check_config, json_schema


def register(subparsers: Any) -> None:
    config = subparsers.add_parser("config", help="check a node.toml, or print its JSON Schema")
    actions = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="list every problem in a node.toml (exit 1 if any)")
    check.add_argument("file", type=Path, help="the node's TOML file")
    check.set_defaults(func=_check)
    schema = actions.add_parser("schema", help="print the JSON Schema of node.toml")
    schema.set_defaults(func=_schema)


def _check(args: argparse.Namespace) -> int:
    problems = check_config(args.file)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return 1
    print(f"{args.file}: ok")
    return 0


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return 0
