"""nats-server configurations for the backbone: a hub for the regional centre, a leaf node per post.

Each command post runs its own nats-server as a leaf node of the centre's hub, with its own
JetStream domain: the post's streams live on its own machine, so a post cut off from the hub keeps
publishing and reading locally, and the streams sourced or mirrored across the leaf connection
catch up when it returns. These functions only write the text (sans I/O); deploy/regional/ holds the
same files for systemd, and the tests and bench write them to run real servers on loopback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ServerConfig:
    name: str
    domain: str  # JetStream domain: the post's, or the centre's
    port: int  # client port (the post's relay connects here)
    store_dir: Path
    leaf_listen_port: int | None = None  # hub: where leaf nodes connect
    hub_url: str | None = None  # leaf: the hub's leafnode address (nats-leaf://host:port)
    max_file_store: str = "10G"

    def render(self) -> str:
        """The nats-server configuration file's text."""
        lines = [
            f"server_name: {json.dumps(self.name)}",
            f"listen: {json.dumps(f'127.0.0.1:{self.port}')}",
            "jetstream {",
            f"  domain: {json.dumps(self.domain)}",
            f"  store_dir: {json.dumps(str(self.store_dir))}",
            f"  max_file_store: {json.dumps(self.max_file_store)}",
            "}",
        ]
        if self.leaf_listen_port is not None:
            listen = json.dumps(f"127.0.0.1:{self.leaf_listen_port}")
            # no_advertise: leaf nodes keep the address they were given (a VPN, a proxy) instead of
            # learning the hub's own and bypassing it
            lines += ["leafnodes {", f"  listen: {listen}", "  no_advertise: true", "}"]
        if self.hub_url is not None:
            lines += [
                "leafnodes {",
                '  reconnect: "1s"',
                f"  remotes: [{{ urls: [{json.dumps(self.hub_url)}] }}]",
                "}",
            ]
        return "\n".join(lines) + "\n"


def hub(name: str, domain: str, port: int, leaf_port: int, store_dir: Path) -> ServerConfig:
    return ServerConfig(name, domain, port, store_dir, leaf_listen_port=leaf_port)


def leaf(name: str, domain: str, port: int, hub_url: str, store_dir: Path) -> ServerConfig:
    return ServerConfig(name, domain, port, store_dir, hub_url=hub_url)
