"""Drive the real responder app (``mobile.runtime.run``: node + Kivy window) under Xvfb with real
touch events, for tests and the README's screenshots. Run as a script by the tests:

    python tests/mobile_drive.py --node DIR ACTION...

Every state change is printed as one JSON line (``{"sos": "queued", ...}``); actions run in order:

    hold:<widget>:<s>     press a widget for s seconds (the SOS button needs 1.5 s)
    tap:<widget>          press and release
    type:<widget>:<text>  set a text field
    show:<screen>         tap that tab
    wait:sos=<phase>      until the SOS reaches that phase (or later)
    wait:message=<state>  until my last message is in that state
    wait:alarms=<n>       until n alarms are on the incident screen
    wait:ready            until the node runs (after an enrolment)
    sleep:<s>
    shot:<file.png>       a screenshot of the window
    map                   print how many tiles the map drew
    targets               print the smallest button (dp) and the tab labels
    night / language      tap the header's night or language button
    quit                  close the window (the node stops cleanly)

Widgets are named ``<screen>.<id>`` (``sos.hold``), ``root.<id>`` (``root.tab_links``) or
``confirm.send`` / ``pin.ok`` for the two dialogs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("KIVY_NO_ARGS", "1")
os.environ.setdefault("KIVY_LOG_MODE", "PYTHON")

from mobile.runtime import run
from mobile.settings import AppSettings
from mobile.state import SosPhase
from relay.logs import setup_logging

if TYPE_CHECKING:
    from mobile.responder import Responder

ORDER = ["idle", "confirmed", "queued", "forwarded", "delivered", "acknowledged"]


def emit(**fields: Any) -> None:
    print(json.dumps({"t": round(time.time(), 3), **fields}), flush=True)


def widget(app: Any, name: str) -> Any:
    where, _, wid = name.partition(".")
    if where == "root":
        return app.root.ids[wid]
    if where == "confirm":
        return app.confirm_view.ids[wid]
    if where == "enrol":
        return app.screen("enrol").ids[wid]
    if where == "pin":
        return app.pin_view.ids[wid]
    return app.screen(where).ids[wid]


async def press(target: Any, seconds: float) -> None:
    from kivy.tests.common import UnitTestTouch

    x, y = target.to_window(*target.center)
    touch = UnitTestTouch(x, y)
    touch.touch_down()
    await asyncio.sleep(seconds)
    touch.touch_up()
    await asyncio.sleep(0.1)


async def until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            emit(error=f"timed out waiting for {what}")
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


async def script(app: Any, actions: list[str]) -> None:
    state = app.state
    # the node (an enrolment comes first); the SOS button is live before it
    await until(lambda: app.responder is not None or not app.enrolled, 60, "the node")
    await asyncio.sleep(0.3)  # the first frame
    for action in actions:
        verb, _, arg = action.partition(":")
        emit(action=action)
        if verb == "hold":
            name, _, seconds = arg.rpartition(":")
            await press(widget(app, name), float(seconds))
        elif verb == "tap":
            await press(widget(app, arg), 0.05)
        elif verb == "type":
            name, _, text = arg.partition(":")
            widget(app, name).text = text
        elif verb == "show":
            await press(widget(app, f"root.tab_{arg}"), 0.05)
        elif verb in ("night", "language"):
            await press(widget(app, f"root.{verb}"), 0.05)
        elif verb == "wait" and arg == "ready":
            await until(lambda: app.responder is not None, 60, action)
        elif verb == "wait":
            what, _, value = arg.partition("=")
            if what == "sos":

                def reached(value: str = value) -> bool:
                    phase = state.sos.phase.value if state.sos else "idle"
                    return phase == value or (phase in ORDER and ORDER.index(phase) >= ORDER.index(value))

                await until(reached, 60, action)
            elif what == "message":
                await until(
                    lambda value=value: bool(state.messages) and state.messages[-1].state.value == value,
                    60,
                    action,
                )
            elif what == "alarms":
                await until(lambda value=value: len(state.alarms) >= int(value), 60, action)
        elif verb == "sleep":
            await asyncio.sleep(float(arg))
        elif verb == "shot":
            from kivy.core.window import Window

            await asyncio.sleep(0.4)  # let the canvas catch up
            made = Window.screenshot(name=str(Path(arg).with_suffix("")) + ".png")
            os.replace(made, arg)
        elif verb == "targets":
            from kivy.metrics import dp
            from kivy.uix.button import Button

            buttons = [w for w in app.root.walk(restrict=True) if isinstance(w, Button) and w.opacity > 0]
            shown = [w for w in buttons if w.get_root_window() is not None and w.height > 0]
            emit(
                smallest_target_dp=round(min(min(w.height, w.width) for w in shown) / dp(1), 1),
                buttons=len(shown),
                tabs=[app.root.ids[f"tab_{n}"].text for n in ("sos", "incident", "messages", "map", "links")],
            )
        elif verb == "map":
            view = app.screen("map").ids.map
            emit(map_tiles=view.tiles_drawn, map_note=view.note, zoom=int(view.zoom))
        elif verb == "quit":
            break
        else:
            raise SystemExit(f"unknown action {action!r}")
    emit(done=True)
    app.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--node", type=Path, required=True)
    parser.add_argument("--language", default=None)
    parser.add_argument("actions", nargs="*")
    args = parser.parse_args()
    setup_logging("info", False)  # the node's log on stderr, into the test's app.log
    settings = AppSettings.load(args.node)
    if args.language:
        from dataclasses import replace

        settings = replace(settings, language=args.language)
    started = time.monotonic()

    def ready(responder: Responder) -> None:
        emit(ready=round(time.monotonic() - started, 3), sos=state_phase(responder))

        def changed(what: str) -> None:
            if what == "sos" and responder.state.sos is not None:
                sos = responder.state.sos
                emit(sos=sos.phase.value, number=sos.number, durable_ms=sos.durable_ms, ack=sos.ack)
            elif what == "messages" and responder.state.messages:
                last = responder.state.messages[-1]
                emit(message=last.state.value, text=last.text)

        responder.state.listen(changed)

    async def drive() -> None:
        from kivy.app import App

        while (app := App.get_running_app()) is None or app.root is None:
            await asyncio.sleep(0.05)
        emit(window=round(time.monotonic() - started, 3))
        if app.enrolled:
            await until(lambda: app.ready, 60, "the SOS button")
            emit(sos_button=round(time.monotonic() - started, 3))
        task = asyncio.ensure_future(script(app, args.actions))
        task.add_done_callback(lambda t: t.cancelled() or t.exception() is None or app.stop())

    async def both() -> None:
        driver = asyncio.ensure_future(drive())
        await run(args.node, settings, on_ready=ready)
        driver.cancel()

    asyncio.run(both())
    emit(exited=True)


def state_phase(responder: Responder) -> str:
    sos = responder.state.sos
    return (sos.phase if sos else SosPhase.IDLE).value


if __name__ == "__main__":
    sys.exit(main())
