"""``mesh112 relay run``: one node with its links, store and (when configured) the relay API.

The daemon reads a node's TOML config, loads and checks its keys, opens the store, builds the links
the config names, and runs until SIGTERM/SIGINT, then shuts down in order: API, links, store. With the
API enabled it also keeps the command post's journal: every delivery is written there (messages,
positions, application records) before it is acknowledged to the store, so a crash between the two
re-delivers rather than loses (the journal ignores the duplicate).

Applications plug in without ``relay`` importing them: a field application (the NG112 gateway, a
camera) calls :func:`run` with ``apps`` — coroutines that get the running :class:`Node`; a command
post picks up :class:`CommandPostApp` factories from the ``mesh112.command_post`` entry-point group
(their payload kinds, how each delivery becomes a journal record, and how an operator's
acknowledgement travels back).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

import uvicorn

from crypto.certificate import Certificate
from crypto.errors import CryptoError
from crypto.keystore import NodeKeys, load_node_keys
from relay.api.app import ApiContext, create_app
from relay.bundle import Kind, from_epoch, to_epoch
from relay.config import LinkSection, NodeConfig
from relay.engine import Delivery, NodeEngine
from relay.errors import ConfigError
from relay.journal import Journal, MessageEntry, RecordEntry
from relay.links.base import Link
from relay.node import Node
from relay.position import (
    InvalidPositionError,
    Position,
    PositionDecodeError,
    check_not_ahead,
    decode_position,
)
from relay.trust import TrustStore

log = logging.getLogger("mesh112.daemon")

STORE_FILE = "store.sqlite3"
JOURNAL_FILE = "journal.sqlite3"
ROSTER_DIR = "roster"  # certificates of the other enrolled nodes, one <node id>.cert file each
MAX_PENDING_ACKS = 256  # deliveries recorded in the journal whose store acknowledgement is in flight

App = Callable[[Node], Coroutine[Any, Any, None]]  # a field application riding on the node (gateway, camera)


@dataclass(frozen=True, slots=True)
class RecordUpdate:
    """A record an application wants in the command post's journal (new, or its new state)."""

    record_id: str
    body: dict[str, Any]


class CommandPostApp(Protocol):
    """What an application adds to a command post: its payload kinds, records and acknowledgements.

    Installed applications provide a factory ``(node) -> CommandPostApp`` in the entry-point group
    ``mesh112.command_post``; the relay never imports them. An application may also have a ``router``
    attribute (a FastAPI ``APIRouter`` of read-only routes, e.g. a feed for other systems); the API
    serves it under ``/api/v1/apps/<record_type>/`` to operators who may read records.
    """

    record_type: str
    kinds: Mapping[int, str]

    async def handle(self, delivery: Delivery) -> list[RecordUpdate]: ...

    async def acknowledge(self, record_id: str, ack: dict[str, Any]) -> None: ...


def command_post_apps(node: Node) -> list[CommandPostApp]:
    return [entry.load()(node) for entry in entry_points(group="mesh112.command_post")]


def load_roster(directory: Path) -> list[Certificate]:
    """Every certificate in ``directory`` (missing directory: none); a damaged file is named."""
    certificates = []
    for path in sorted(directory.glob("*.cert")) if directory.is_dir() else []:
        try:
            certificates.append(Certificate.decode(path.read_bytes()))
        except CryptoError as exc:
            raise ConfigError(f"{path}: not a certificate ({exc})") from None
    return certificates


def _options(section: LinkSection, allowed: set[str]) -> dict[str, Any]:
    options = {k: v for k, v in section.options.items() if k not in ("type", "name")}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(
            f"link {section.name}: unknown key(s) {', '.join(unknown)}; allowed: {sorted(allowed)}"
        )
    return options


def build_link(section: LinkSection, node_keys: NodeKeys, data_dir: Path) -> Link:
    """The link a ``[[links]]`` table describes (keys documented in deploy/node.example.toml)."""
    if section.type == "ip":
        from relay.links import ip_tls
        from relay.links.ip import IpLink, IpLinkConfig
        from relay.links.ip_handshake import Credentials, Trust

        timing = {"bitrate", "keepalive_interval", "keepalive_misses"}
        options = _options(section, {"listen", "peers", "tls"} | timing)
        numbers = {key: options[key] for key in timing & set(options)}
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers.values()):
            raise ConfigError(f"link {section.name}: {', '.join(sorted(numbers))} must be numbers")
        peers = options.get("peers", [])
        if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
            raise ConfigError(f"link {section.name}: peers must be a list of addresses")
        tls = ip_tls.ensure_self_signed(data_dir) if options.get("tls", False) else None
        config = IpLinkConfig(
            name=section.name,
            listen=options.get("listen"),
            peers=tuple(peers),
            tls=tls,
            bitrate=float(numbers.get("bitrate", 10_000_000.0)),
            keepalive_interval=float(numbers.get("keepalive_interval", 1.0)),
            keepalive_misses=int(numbers.get("keepalive_misses", 3)),
        )
        credentials = Credentials(node_keys.identity, node_keys.certificate)
        return IpLink(config, credentials, Trust(node_keys.authority, node_keys.revocations))
    if section.type == "lora":
        from relay.links.lora import LoRaLink, LoRaLinkConfig

        fields = {"transport", "address", "port", "preset", "region", "app_port", "roster"}
        options = _options(section, fields)
        roster = options.pop("roster", {})
        if not isinstance(roster, dict):
            raise ConfigError(f"link {section.name}: roster must be a table of node number = node id")
        try:
            parsed = {int(num): str(node_id) for num, node_id in roster.items()}
        except ValueError:
            raise ConfigError(f"link {section.name}: roster keys must be Meshtastic node numbers") from None
        return LoRaLink(LoRaLinkConfig(roster=parsed, name=section.name, **options))
    raise ConfigError(f"link {section.name}: type {section.type!r} cannot run in a daemon")


class CommandPostFeed:
    """Moves deliveries from the node into the journal and the live stream, then acknowledges them."""

    def __init__(self, node: Node, journal: Journal, ctx: ApiContext, apps: list[CommandPostApp]) -> None:
        self._node, self._journal, self._ctx = node, journal, ctx
        self._apps = {number: app for app in apps for number in app.kinds}

    async def run(self) -> None:
        """Record each delivery, then acknowledge it to the store. The acknowledgements run
        concurrently (bounded), so a burst of deliveries shares store commits instead of waiting
        for one commit each; the journal entry is committed first, so a crash in between only
        re-delivers into the idempotent journal."""
        acks: set[asyncio.Task[None]] = set()
        try:
            async for delivery in self._node.inbox():
                await self.record(delivery)
                if len(acks) >= MAX_PENDING_ACKS:
                    await asyncio.wait(acks, return_when=asyncio.FIRST_COMPLETED)
                task = asyncio.create_task(self._node.ack(delivery.bundle_id))
                acks.add(task)
                task.add_done_callback(acks.discard)
        finally:
            for task in list(acks):
                task.cancel()
            await asyncio.gather(*acks, return_exceptions=True)

    async def record(self, delivery: Delivery) -> None:
        received = time.time()
        origin = delivery.origin.hex()
        certificate = self._node.engine.trust.certificate(delivery.origin)
        name = certificate.name if certificate else origin[:8]
        roles = sorted(certificate.roles) if certificate else []
        position = self._position(delivery, name, received) if delivery.kind == Kind.POSITION else None
        await self._journal.heard(origin, name=name, roles=roles, at=received, position=position)
        bundle_id = delivery.bundle_id.key().hex()
        event: dict[str, Any] = {"bundle_id": bundle_id, "origin": origin, "name": name}
        if delivery.kind == Kind.POSITION:
            if position is not None:
                self._ctx.hub.publish({"type": "position", **event, **asdict(position)})
            return
        if delivery.kind == Kind.TEXT:
            text = delivery.payload.decode("utf-8", errors="replace")
            entry = MessageEntry(
                bundle_id,
                origin,
                str(delivery.destination),
                delivery.kind,
                delivery.priority.name,
                from_epoch(delivery.created),
                received,
                text,
            )
            if await self._journal.add_message(entry):
                self._ctx.hub.publish({"type": "message", **event, "text": text})
            return
        app = self._apps.get(delivery.kind)
        if app is None:
            log.info("delivery of kind %d from %s has no command post application", delivery.kind, name)
            return
        for update in await app.handle(delivery):
            record = RecordEntry(
                update.record_id,
                app.record_type,
                origin,
                delivery.priority.name,
                from_epoch(delivery.created),
                received,
                update.body,
            )
            await self._journal.put_record(record)
            self._ctx.hub.publish(
                {"type": "record", "record_type": app.record_type, "record_id": update.record_id, **event}
            )

    @staticmethod
    def _position(delivery: Delivery, name: str, received: float) -> Position | None:
        """The position a delivery reports, or None (logged) if it is damaged, hostile or from a
        clock far ahead."""
        try:
            position = decode_position(delivery.payload)
            check_not_ahead(position, received)
        except (PositionDecodeError, InvalidPositionError) as exc:
            log.warning("position from %s refused: %s", name, exc)
            return None
        return position


class NodeControlAdapter:
    """The node as the API sees it: sending with the node's clock, link state for operators."""

    def __init__(self, node: Node) -> None:
        self._node = node

    @property
    def node_id(self) -> bytes:
        return self._node.node_id

    async def send(self, destination: Any, payload: bytes, *, kind: int, priority: Any, lifetime: int) -> Any:
        return await self._node.send(destination, payload, kind=kind, priority=priority, lifetime=lifetime)

    def status(self, bundle_id: Any) -> Any:
        return self._node.status(bundle_id)

    def link_info(self) -> list[dict[str, Any]]:
        core = self._node.engine.core
        return [
            {
                "link": name,
                "kind": link.profile.kind,
                "peer": peer.hex(),
                "up": True,
                "queued": core.queued(name),
                "detail": f"mtu {link.profile.mtu} B, {link.profile.bitrate:.0f} B/s",
            }
            for name, link in self._node.links.items()
            for peer in core.neighbours(name)
        ]


def bind_api_socket(host: str, port: int) -> socket.socket:
    """Bind before the store opens, so a port in use is a one-line error, not a half-started node.

    The protocol is named: asyncio turns Nagle off only on sockets whose ``proto`` is TCP, and with
    Nagle on, every response's second write waits ~40 ms for the client's delayed ACK.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} for the API: {exc.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def run(
    config: NodeConfig,
    stop: asyncio.Event,
    apps: Sequence[App] = (),
    ready: Callable[[Node], None] | None = None,
) -> None:
    """Run the node described by ``config`` with ``apps`` riding on it until ``stop`` is set."""
    data_dir = config.node.data_dir
    node_keys = load_node_keys(data_dir, int(time.time()))
    roster = [c for c in load_roster(data_dir / ROSTER_DIR) if c.node_id != node_keys.certificate.node_id]
    trust = TrustStore(node_keys.authority, [node_keys.certificate], node_keys.revocations)
    for certificate in roster:
        try:
            trust.add(certificate, to_epoch(time.time()))
        except CryptoError as exc:
            log.warning("roster certificate of %s not trusted: %s", certificate.name, exc)
    links = [build_link(section, node_keys, data_dir) for section in config.links]
    # Bound before the store opens: a port in use is reported without leaving the store's thread behind.
    api_sock = bind_api_socket(config.api.host, config.api.port) if config.api.enabled else None
    engine = await NodeEngine.open(
        node_keys.identity,
        node_keys.certificate,
        trust,
        data_dir / STORE_FILE,
        quota_bytes=config.store.quota_mb << 20,
        now=to_epoch(time.time()),
    )
    node = Node(engine, links)
    post_apps = command_post_apps(node) if config.api.enabled else []
    tasks: list[asyncio.Task[None]] = []
    journal: Journal | None = None
    server: uvicorn.Server | None = None
    try:
        await node.start()
        if api_sock is not None:
            journal = await Journal.open(data_dir / JOURNAL_FILE)
            ctx = ApiContext(
                NodeControlAdapter(node),
                journal,
                node_keys.authority,
                lambda: engine.trust.revocations,
                rate_per_s=config.api.rate_per_s,
                rate_burst=config.api.rate_burst,
                command_post=config.node.command_post,
            )
            ctx.ack_hooks.update({app.record_type: app.acknowledge for app in post_apps})
            for app in post_apps:
                router = getattr(app, "router", None)
                if router is not None:
                    ctx.app_routers[app.record_type] = router
            feed = CommandPostFeed(node, journal, ctx, post_apps)
            tasks.append(asyncio.create_task(feed.run(), name="journal-feed"))
            server = uvicorn.Server(
                uvicorn.Config(create_app(ctx), log_level="warning", lifespan="off", access_log=False)
            )
            tasks.append(asyncio.create_task(server.serve(sockets=[api_sock]), name="api"))
        tasks += [asyncio.create_task(app(node), name=f"app-{index}") for index, app in enumerate(apps)]
        log.info("node %s running with links %s", config.node.name, ", ".join(node.links) or "none")
        if ready is not None:
            ready(node)
        await stop.wait()
    finally:
        log.info("node %s stopping", config.node.name)
        if server is not None:
            server.should_exit = True
        for task in tasks:
            if task.get_name() != "api":
                task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await node.stop()
        if journal is not None:
            await journal.close()
        if api_sock is not None:
            api_sock.close()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str, as_json: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if as_json else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
