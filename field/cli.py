"""``mesh112 demo``: the demo field on this machine (what ``make run`` starts)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from crypto.identity import display_id
from field.deployment import create_demo_deployment


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="run the demo field: a command post and field nodes as processes on loopback, with traffic",
        description="Creates (or reuses) the demo deployment under --dir, starts one relay process per "
        "node linked over loopback IP, prints the dashboard address with a demo operator token, and "
        "sends field traffic until Ctrl-C.",
    )
    demo.add_argument("--dir", type=Path, default=Path("demo-field"), help="where (default ./demo-field)")
    demo.add_argument(
        "--create-only", action="store_true", help="make the deployment, print it, start nothing"
    )
    demo.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    demo.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    if not args.create_only:
        from field.processes import run_demo  # starts FastAPI and friends: only when running

        return run_demo(args.dir, duration=args.duration)
    deployment = create_demo_deployment(args.dir)
    print(f"demo deployment in {deployment.root}")
    print(f"  authority     {display_id(deployment.authority.identity.node_id)}  {deployment.authority_dir}")
    for node in deployment.nodes:
        roles = ",".join(node.roles)
        print(f"  {node.name:<13} {display_id(node.node_id)}  {roles:<16} {node.directory}")
    return 0
