"""Run the app: the node (its links from ``node.toml``, its store in the node directory) and the Kivy
window on one asyncio loop, in one process. The node is the daemon's, with the API left off: the
app reads the node's inbox itself. Closing the window stops the node cleanly; killing the process
loses nothing the screen called "sent" (the store is durable).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from crypto.keystore import load_certificate
from mobile.appstore import AppStore
from mobile.early import EarlySos
from mobile.settings import AppSettings
from mobile.state import AppState
from relay.position import Position

if TYPE_CHECKING:
    from mobile.responder import Responder, ResponderConfig
    from mobile.ui.app import ResponderApp
    from relay.apps import App
    from relay.config import NodeConfig
    from relay.node import Node

log = logging.getLogger("mesh112.mobile")

EARTH_RADIUS_M = 6_371_000.0
POSITION_CHECK_S = 60.0  # a new fix is reported to the command post a minute after the last at the soonest
POSITION_MOVED_M = 25.0  # when the unit moved this far since the last report,
POSITION_STILL_S = 600.0  # or, standing still, this long after it (a report is a bundle and a receipt)


def app_node_config(node_dir: Path) -> NodeConfig:
    """The node's config with the relay API off (the phone serves no operators)."""
    from relay.config import load_config
    from relay.errors import ConfigError

    config = load_config(node_dir / "node.toml")
    if config.node.command_post is None:
        raise ConfigError(
            f"{node_dir / 'node.toml'}: [node] command_post is not set; the app sends its SOS there"
        )
    return config.model_copy(update={"api": config.api.model_copy(update={"enabled": False})})


def responder_config(config: NodeConfig, settings: AppSettings) -> ResponderConfig:
    from mobile.responder import ResponderConfig
    from relay.bundle import Destination
    from relay.enrolment import joined_groups

    post = config.node.command_post
    assert post is not None  # app_node_config checked it
    groups = joined_groups(config.node.data_dir)
    team = settings.team or (f"group:{groups[0]}" if groups else "role:responder")
    return ResponderConfig(Destination.to_node(post), Destination.parse(team), settings.pin)


class FixedPosition:
    """Where the device is when no receiver says: the settings' fixed position, or gpsd's last fix."""

    def __init__(self, settings: AppSettings) -> None:
        self._fix: tuple[float, float, float] | None = None
        if settings.position is not None:
            self._fix = (*settings.position, 0.0)
        self.changed = asyncio.Event()  # a new fix came (gpsd pushes them)

    @property
    def fix(self) -> tuple[float, float, float] | None:
        return self._fix

    @fix.setter
    def fix(self, fix: tuple[float, float, float] | None) -> None:
        self._fix = fix
        self.changed.set()

    def __call__(self) -> Position | None:
        if self.fix is None:
            return None
        lat, lon, accuracy = self.fix
        return Position.from_fix(lat, lon, time.time(), accuracy or None)


async def run(
    node_dir: Path,
    settings: AppSettings,
    on_ready: Callable[[Responder], None] = lambda responder: None,
) -> None:
    """Until the window closes. A device with no certificate shows the enrolment screen first and
    starts its node once the invitation it scanned enrolled it. Only what the SOS button needs is
    imported before the window; the node's stack (a second or more on a loaded phone) is imported
    in a thread while the window already runs."""
    from mobile.ui.app import ResponderApp

    state = AppState()
    ui = ResponderApp(state, settings)
    stop = asyncio.Event()
    nodes: list[asyncio.Task[None]] = []
    position = FixedPosition(settings)

    async def run_node(reading: asyncio.Future[NodeConfig]) -> None:
        """The SOS button is live once the app's table is open, before the node's store and links."""
        config = await reading
        state.me = config.node.name
        store = await AppStore.open(config.node.data_dir)
        try:
            early = EarlySos(store, state, position)
            await early.restore()
            ui.sos_ready(early)
            await asyncio.to_thread(_import_node_stack)
            from relay import daemon

            ride = _ride(config, settings, state, ui, store, early, position, on_ready)
            await daemon.run(config, stop, apps=[ride])
        finally:
            await store.close()

    def start_node() -> None:
        # read (pydantic) in a thread at once, while the window (the slowest step) is created
        reading = asyncio.get_running_loop().run_in_executor(None, app_node_config, node_dir)
        task = asyncio.create_task(run_node(reading))
        task.add_done_callback(lambda task: _node_ended(task, ui))
        nodes.append(task)

    if load_certificate(node_dir) is None:
        ui.needs_enrolment(node_dir, start_node)
    else:
        start_node()
    try:
        await ui.async_run(async_lib="asyncio")
    finally:
        stop.set()
        for task in nodes:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def run_headless(
    node_dir: Path,
    settings: AppSettings,
    stop: asyncio.Event,
    on_ready: Callable[[Responder], None] = lambda responder: None,
) -> None:
    """The node with no window, until ``stop``: the Android foreground service
    (:mod:`mobile.android_service`). It sends an SOS confirmed into the app's table that the node
    never stored (:meth:`Responder.start`) and records the SOS's progress there, but leaves the
    deliveries in the node's inbox: the window shows them when it runs again."""
    from mobile.responder import Responder
    from relay import daemon

    config = app_node_config(node_dir)

    async def keep(node: Node) -> None:
        store = await AppStore.open(config.node.data_dir)
        try:
            state = AppState()
            state.me = config.node.name
            responder = Responder(
                node, store, state, responder_config(config, settings), FixedPosition(settings)
            )
            await responder.start()
            on_ready(responder)
            await asyncio.Event().wait()  # until the node stops and cancels this
        finally:
            await store.close()

    await daemon.run(config, stop, apps=[keep])


def _import_node_stack() -> None:
    """The node, its links and the Responder's record types (run in a thread, off the window's loop)."""
    import mobile.responder  # noqa: F401  # the payload codecs it uses
    import relay.daemon  # noqa: F401


def _ride(
    config: NodeConfig,
    settings: AppSettings,
    state: AppState,
    ui: ResponderApp,
    store: AppStore,
    early: EarlySos,
    position: FixedPosition,
    on_ready: Callable[[Responder], None],
) -> App:
    """The app riding on the running node: the Responder, gpsd, position reports."""

    async def ride(node: Node) -> None:
        from mobile.gps import follow_gpsd
        from mobile.responder import Responder

        responder = Responder(node, store, state, responder_config(config, settings), position)
        tasks: list[asyncio.Task[None]] = []
        try:
            await early.hand_over(responder)
            ui.attach(responder)
            on_ready(responder)
            if settings.gpsd:
                tasks.append(asyncio.create_task(follow_gpsd(settings.gpsd, position, state)))
            tasks.append(asyncio.create_task(report_position(responder, position)))
            await responder.run()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    return ride


def _node_ended(task: asyncio.Task[None], ui: object) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the node stopped: %s", task.exception())
        stop = getattr(ui, "stop", None)
        if callable(stop):
            stop()


async def report_position(responder: Responder, position: FixedPosition) -> None:
    """Own position to the command post when it changed or a while passed: a unit standing still
    does not wake its radio every minute to say so. Nothing is polled: it waits for a new fix (gpsd
    pushes them) or for the still-standing report."""
    last: tuple[float, float] | None = None
    last_at = 0.0
    while True:
        fix = position()
        now = time.monotonic()
        if fix is not None and (
            last is None
            or _metres(last, (fix.lat, fix.lon)) >= POSITION_MOVED_M
            or now - last_at >= POSITION_STILL_S
        ):
            await responder.send_position()
            last, last_at = (fix.lat, fix.lon), now
        position.changed.clear()
        still = None if last is None else max(0.0, last_at + POSITION_STILL_S - time.monotonic())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(still):
                await position.changed.wait()
        if position.changed.is_set():  # a receiver pushes a fix a second: a report a minute at most
            await asyncio.sleep(max(0.0, last_at + POSITION_CHECK_S - time.monotonic()))


def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Distance on the ground, flat-earth: exact enough for tens of metres."""
    north = math.radians(b[0] - a[0]) * EARTH_RADIUS_M
    east = math.radians(b[1] - a[1]) * EARTH_RADIUS_M * math.cos(math.radians(a[0]))
    return math.hypot(north, east)
