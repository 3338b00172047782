"""``mesh112 demo``: create (or reuse) the demo deployment and say what is there."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from crypto.identity import display_id
from relay.demo import create_demo_deployment


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser("demo", help="create the demo field: an authority and four enrolled nodes")
    demo.add_argument("--dir", type=Path, default=Path("demo-field"), help="where (default ./demo-field)")
    demo.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    deployment = create_demo_deployment(args.dir)
    print(f"demo deployment in {deployment.root}")
    print(f"  authority     {display_id(deployment.authority.identity.node_id)}  {deployment.authority_dir}")
    for node in deployment.nodes:
        roles = ",".join(node.roles)
        print(f"  {node.name:<13} {display_id(node.node_id)}  {roles:<16} {node.directory}")
    return 0
