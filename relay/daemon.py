"""``mesh112 relay run``: one node with its links, store and (when configured) the relay API.

The daemon reads a node's TOML config, loads and checks its keys, opens the store, builds the links
the config names, and runs until SIGTERM/SIGINT, then shuts down in order: API, links, store. With the
API enabled it also keeps the command post's journal: every delivery is written there (messages,
positions, application records) before it is acknowledged to the store, so a crash between the two
re-delivers rather than loses (the journal ignores the duplicate).

Applications plug in without ``relay`` importing them: a field application (the NG112 gateway, a
camera) calls :func:`run` with ``apps`` — coroutines that get the running :class:`Node`; a command
post picks up ``CommandPostApp`` factories from the ``mesh112.command_post`` entry-point group
(see :mod:`relay.apps` for the contract and :mod:`relay.command_post` for the feed into the journal).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from crypto.certificate import Certificate
from crypto.errors import CryptoError, KeyFileError
from crypto.keyfile import write_atomic
from crypto.keystore import load_node_keys, save_revocations
from relay.apps import App, CommandPostApp
from relay.bundle import to_epoch
from relay.config import NodeConfig
from relay.engine import NodeEngine
from relay.enrolment import held_groups, joined_groups, load_keyring, save_group_key
from relay.errors import ConfigError
from relay.journal import Journal, JournalBackend
from relay.links.factory import build_link
from relay.links.webrtc_mesh import command_post_webrtc
from relay.node import Node
from relay.resources import raise_open_files_limit
from relay.systemd import Notifier
from relay.trust import TrustStore

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger("mesh112.daemon")

STORE_FILE = "store.sqlite3"
JOURNAL_FILE = "journal.sqlite3"
ROSTER_DIR = "roster"  # certificates of the other enrolled nodes, one <node id>.cert file each
VIDEO_DIR = "video"  # a command post's recordings of the units' live video (webrtc links)
PASSPHRASE_ENV = "MESH112_PASSPHRASE"
PASSPHRASE_FILE_ENV = "MESH112_PASSPHRASE_FILE"
GC_FIRST_GENERATION = 50_000  # objects allocated between young collections (CPython: 700)
SWITCH_INTERVAL_S = 0.001  # how long a thread waits for the GIL before asking its holder (CPython: 0.005)
PASSPHRASE_CREDENTIAL = "mesh112-passphrase"  # systemd: LoadCredential=mesh112-passphrase:/etc/...


def node_passphrase(environ: Mapping[str, str]) -> str | None:
    """The passphrase of an encrypted node key (``mesh112 init --encrypt``): ``$MESH112_PASSPHRASE``,
    else the file ``$MESH112_PASSPHRASE_FILE`` names, else the systemd credential
    ``mesh112-passphrase``; None when none is given (a plain key needs none)."""
    if environ.get(PASSPHRASE_ENV):
        return environ[PASSPHRASE_ENV]
    path = Path(environ[PASSPHRASE_FILE_ENV]) if environ.get(PASSPHRASE_FILE_ENV) else None
    if path is None and environ.get("CREDENTIALS_DIRECTORY"):
        path = Path(environ["CREDENTIALS_DIRECTORY"]) / PASSPHRASE_CREDENTIAL
        if not path.exists():
            return None
    if path is None:
        return None
    try:
        return path.read_text().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the node key's passphrase from {path}: {exc}") from None


def load_roster(directory: Path) -> list[Certificate]:
    """Every certificate in ``directory`` (missing directory: none); a damaged file is named."""
    certificates = []
    for path in sorted(directory.glob("*.cert")) if directory.is_dir() else []:
        try:
            certificates.append(Certificate.decode(path.read_bytes()))
        except CryptoError as exc:
            raise ConfigError(f"{path}: not a certificate ({exc})") from None
    return certificates


def remember_certificate(directory: Path, certificate: Certificate) -> None:
    """Add a certificate learned at run time to the roster, so the node still trusts it after a
    restart; a write that fails is logged (the node keeps trusting it until then)."""
    try:
        directory.mkdir(exist_ok=True)
        write_atomic(directory / f"{certificate.node_id.hex()}.cert", certificate.encode(), 0o644)
    except OSError as exc:
        log.warning(
            "certificate of %s not saved to %s (trusted until restart): %s", certificate.name, directory, exc
        )
        return
    log.info("certificate of %s learned and saved to %s", certificate.name, directory)


def settle_interpreter() -> None:
    """Freeze what start-up made (modules, roster, the bundles reloaded from the store) out of the
    cycle collector and let its young generation grow: a busy relay allocates per frame and spent
    about 15 % of its CPU in collections that found nothing to free. Shorten the GIL's switch
    interval: the event loop, the store's and the journal's threads and nng's callbacks take turns
    on every message, and a turn that waited out CPython's 5 ms for a thread running Python slowed
    a lone message's path (docs/benchmarks.md, "Fifteenth pass")."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_FIRST_GENERATION, middle, old)
    sys.setswitchinterval(SWITCH_INTERVAL_S)


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
    notifier = Notifier.from_environ()  # under systemd Type=notify
    log.info("open files limit: %d (raised to the hard limit)", raise_open_files_limit())
    try:
        node_keys = load_node_keys(data_dir, int(time.time()), node_passphrase(os.environ))
    except KeyFileError as exc:
        raise KeyFileError(
            f"{exc} (the daemon takes it from ${PASSPHRASE_ENV}, the file ${PASSPHRASE_FILE_ENV} names, "
            f"or the systemd credential {PASSPHRASE_CREDENTIAL})"
        ) from None
    roster = [c for c in load_roster(data_dir / ROSTER_DIR) if c.node_id != node_keys.certificate.node_id]
    trust = TrustStore(node_keys.authority, [node_keys.certificate], node_keys.revocations)
    for certificate in roster:
        try:
            trust.add(certificate, to_epoch(time.time()))
        except CryptoError as exc:
            log.warning("roster certificate of %s not trusted: %s", certificate.name, exc)
    links = [build_link(section, node_keys, data_dir, trust) for section in config.links]
    # Bound before the store opens: a port in use is reported without leaving the store's thread behind.
    api_sock = bind_api_socket(config.api.host, config.api.port) if config.api.enabled else None
    engine = await NodeEngine.open(
        node_keys.identity,
        node_keys.certificate,
        trust,
        data_dir / STORE_FILE,
        quota_bytes=config.store.quota_mb << 20,
        max_clock_skew_s=config.node.max_clock_skew_s,
        now=to_epoch(time.time()),
        keyring=load_keyring(data_dir, node_keys.identity, node_keys.authority),
        groups=frozenset(joined_groups(data_dir)),
    )
    node = Node(engine, links)
    trust.on_learned(lambda certificate: remember_certificate(data_dir / ROSTER_DIR, certificate))
    engine.on_revocations(lambda revocations: save_revocations(data_dir, revocations))  # survives restarts
    engine.on_group_key(lambda key, wrapped: save_group_key(data_dir, key, wrapped))
    post_apps: list[CommandPostApp] = []
    if config.api.enabled:
        from relay.command_post import command_post_apps  # imports the API, see below

        post_apps += command_post_apps(node)
        post_apps += command_post_webrtc(node, links, data_dir / VIDEO_DIR)
    tasks: list[asyncio.Task[None]] = []
    journal: JournalBackend | None = None
    server: uvicorn.Server | None = None
    ingest: asyncio.AbstractServer | None = None
    try:
        await node.start()
        if api_sock is not None:
            # FastAPI and uvicorn: a second of imports a node without its API (the app) would pay
            import uvicorn

            from relay.api.app import ApiContext, create_app
            from relay.api.ingest_unix import SOCKET_FILE, open_ingest_socket
            from relay.api.metrics import NodeCollector
            from relay.command_post import CommandPostFeed

            if config.command_post.database is None:
                journal = await Journal.open(data_dir / JOURNAL_FILE)
            else:
                from relay.journal_pg import PgJournal  # asyncpg: the 'regional' extra

                journal = await PgJournal.open(config.command_post.database)
            ctx = ApiContext(
                node,
                journal,
                node_keys.authority,
                lambda: engine.trust.revocations,
                rate_per_s=config.api.rate_per_s,
                rate_burst=config.api.rate_burst,
                command_post=config.node.command_post,
                roster=engine.trust.certificates,
                node_metrics=NodeCollector(node),
                send_groups=lambda: held_groups(data_dir),
                tiles=data_dir / config.api.tiles if config.api.tiles else None,
            )
            engine.on_revocations(
                lambda revocations: ctx.hub.publish({"type": "revocation", "serial": revocations.serial})
            )  # open streams re-check their tokens at once
            ctx.ack_hooks.update({app.record_type: app.acknowledge for app in post_apps})
            for app in post_apps:
                router = getattr(app, "router", None)
                if router is not None:
                    ctx.app_routers[app.record_type] = router
            feed = CommandPostFeed(node, journal, ctx, post_apps)
            tasks.append(asyncio.create_task(feed.run(), name="journal-feed"))
            if not isinstance(journal, Journal):  # PostgreSQL: other processes' writes on this stream too
                follow = journal.follow(lambda change: ctx.hub.publish(change.event()))
                tasks.append(asyncio.create_task(follow, name="journal-follow"))
            if config.backbone is not None:
                from relay.backbone.bridge import bridge_for_post, run_bridge  # nats-py: extra 'regional'

                bridge = bridge_for_post(config.backbone, journal, ctx)
                tasks.append(asyncio.create_task(run_bridge(bridge), name="backbone"))
            server = uvicorn.Server(
                uvicorn.Config(create_app(ctx), log_level="warning", lifespan="off", access_log=False)
            )
            tasks.append(asyncio.create_task(server.serve(sockets=[api_sock]), name="api"))
            ingest = await open_ingest_socket(ctx, data_dir / SOCKET_FILE)
        tasks += [asyncio.create_task(app(node), name=f"app-{index}") for index, app in enumerate(apps)]
        settle_interpreter()
        log.info("node %s running with links %s", config.node.name, ", ".join(node.links) or "none")
        if ready is not None:
            ready(node)
        if notifier is not None:
            notifier.notify("READY=1", f"STATUS=node {config.node.name} running")
            if notifier.watchdog_interval_s is not None:
                tasks.append(asyncio.create_task(notifier.watchdog(), name="watchdog"))
        await stop.wait()
    finally:
        log.info("node %s stopping", config.node.name)
        if notifier is not None:
            with contextlib.suppress(OSError):
                notifier.notify("STOPPING=1")
        if server is not None:
            server.should_exit = True
        if ingest is not None:
            ingest.close()  # no new clients; those connected finish with the node
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
