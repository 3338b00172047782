"""The Kivy app: five screens over :class:`mobile.state.AppState`, buttons that call the Responder.

The widgets never poll: they redraw when the state tells them something changed (the state's
listeners are called from the node's pushes, on the same asyncio loop Kivy runs on). The link
screen also refreshes every few seconds while it is on screen, and only then.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kivy.app import App
from kivy.clock import Clock
from kivy.lang import Builder
from kivy.metrics import dp
from kivy.properties import BooleanProperty, ListProperty, NumericProperty, StringProperty
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.label import Label
from kivy.uix.modalview import ModalView
from kivy.uix.screenmanager import Screen
from kivy.uix.textinput import TextInput

from crypto.errors import CryptoError
from crypto.invite import Invitation
from mobile.early import EarlySos
from mobile.maptiles import MBTiles
from mobile.settings import AppSettings
from mobile.state import AppState, Delivery, SosPhase
from mobile.ui import widgets
from mobile.ui.doze import Doze, prepare_clock
from mobile.ui.i18n import tr
from relay.bundle import Priority

if TYPE_CHECKING:
    from mobile.responder import Responder

log = logging.getLogger("mesh112.mobile.ui")

KV = Path(__file__).with_name("screens.kv")
LINKS_REFRESH_S = 2.0  # only while the link screen is shown
DAY = {"bg": [1, 1, 1, 1], "fg": [0, 0, 0, 1], "button_bg": [0.12, 0.12, 0.12, 1], "button_fg": [1, 1, 1, 1]}
NIGHT = {
    "bg": [0, 0, 0, 1],
    "fg": [1, 0.55, 0.3, 1],
    "button_bg": [0.18, 0.08, 0.04, 1],
    "button_fg": [1, 0.6, 0.35, 1],
}
PRIORITY_TINT = {
    Priority.FLASH: [0.85, 0.0, 0.0, 1],
    Priority.IMMEDIATE: [0.95, 0.45, 0.0, 1],
    Priority.PRIORITY: [0.95, 0.8, 0.0, 1],
    Priority.ROUTINE: [0.3, 0.5, 0.9, 1],
    Priority.BULK: [0.5, 0.5, 0.5, 1],
}
SOS_STEP = {
    SosPhase.QUEUED: 1,
    SosPhase.FORWARDED: 2,
    SosPhase.DELIVERED: 3,
    SosPhase.ACKNOWLEDGED: 4,
}


class Root(BoxLayout):  # type: ignore[misc]  # kivy is untyped
    pass


class Card(BoxLayout):  # type: ignore[misc]  # kivy is untyped
    tint = ListProperty([0.9, 0.9, 0.9, 1])


class SosScreen(Screen):  # type: ignore[misc]  # kivy is untyped
    pass


class IncidentScreen(Screen):  # type: ignore[misc]  # kivy is untyped
    pass


class MessagesScreen(Screen):  # type: ignore[misc]  # kivy is untyped
    pass


class MapScreen(Screen):  # type: ignore[misc]  # kivy is untyped
    pass


class LinksScreen(Screen):  # type: ignore[misc]  # kivy is untyped
    pass


class EnrolScreen(Screen):  # type: ignore[misc]  # kivy is untyped
    pass


def ago(seconds: float, language: str) -> str:
    seconds = max(0.0, seconds)
    text = (
        f"{seconds:.0f} s"
        if seconds < 120
        else f"{seconds / 60:.0f} min"
        if seconds < 7200
        else f"{seconds / 3600:.0f} h"
    )
    return f"{text} {tr('ago', language)}" if language == "en" else f"před {text}"


class ResponderApp(App):  # type: ignore[misc]  # kivy is untyped
    bg = ListProperty(DAY["bg"])
    fg = ListProperty(DAY["fg"])
    button_bg = ListProperty(DAY["button_bg"])
    button_fg = ListProperty(DAY["button_fg"])
    accent = ListProperty([0.0, 0.35, 0.8, 1])
    ok_color = ListProperty([0.0, 0.55, 0.15, 1])
    warn_color = ListProperty([0.8, 0.0, 0.0, 1])
    font = NumericProperty(dp(20))
    lang = StringProperty("en")
    night = BooleanProperty(False)
    ready = BooleanProperty(False)
    sos_live = BooleanProperty(False)
    sos_step = NumericProperty(0)
    sos_text = StringProperty("")
    sos_detail = StringProperty("")
    me_name = StringProperty("")
    link_summary = StringProperty("")
    links_up = BooleanProperty(False)
    alarm_count = NumericProperty(0)
    destination = StringProperty("post")
    enrolled = BooleanProperty(True)
    enrol_text = StringProperty("")

    def __init__(self, state: AppState, settings: AppSettings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.title = "Mesh112"
        prepare_clock()
        self.state = state
        self.settings = settings
        self.responder: Responder | None = None
        self.early: EarlySos | None = None
        self.lang = settings.language
        self._links_event: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.confirm_view: ModalView | None = None
        self._enrol: tuple[Path, Callable[[], None]] | None = None
        self._doze: Doze | None = None
        self.pin_view: ModalView | None = None
        self.camera_view: ModalView | None = None
        self.set_night(settings.night)

    # -- building and wiring -----------------------------------------------------------------------

    def build(self) -> Root:
        Builder.load_file(str(KV))
        root = Root()
        self.sos_text = tr("starting", self.lang)
        if self.settings.mbtiles is not None and self.settings.mbtiles.exists():
            root.ids.screens.get_screen("map").ids.map.open_tiles(MBTiles(self.settings.mbtiles))
        self.state.listen(self.changed)
        return root

    def on_start(self) -> None:
        from kivy.core.window import Window

        self._doze = Doze()
        Window.bind(on_motion=self._doze.awake, on_key_down=self._doze.awake)
        if not self.enrolled:
            self.root.ids.screens.transition.duration = 0
            self.root.ids.screens.current = "enrol"
        for what in ("sos", "messages", "alarms", "units", "links"):
            self.changed(what)

    def needs_enrolment(self, node_dir: Path, enrolled: Callable[[], None]) -> None:
        """No certificate yet: show the enrolment screen; ``enrolled`` starts the node."""
        self.enrolled = False
        self._enrol = (node_dir, enrolled)

    def enrol_from_image(self, path: str) -> None:
        if self._enrol is not None and path.strip():
            self.run_task(self._enrol_from(Path(path.strip()).expanduser()))

    def enrol_by_camera(self) -> None:
        """The camera dialog; the invitation it sees takes the same path as one from an image."""
        from mobile.ui.camera_scan import CameraScan

        if self._enrol is not None:
            self.camera_view = CameraScan(lambda found: self.run_task(self._enrol_with(found)), self.lang)
            self.camera_view.open()

    async def _enrol_from(self, image: Path) -> None:
        from mobile.enrol import scan_image  # zbar: only a device being enrolled

        self.enrol_text = "…"
        try:
            invitation = await asyncio.to_thread(scan_image, image)
        except CryptoError as exc:
            self.enrol_text = str(exc)
            return
        await self._enrol_with(invitation)

    async def _enrol_with(self, invitation: Invitation) -> None:
        from mobile.enrol import enrol  # httpx: only a device being enrolled

        assert self._enrol is not None
        node_dir, enrolled = self._enrol
        self.enrol_text = f"{invitation.name} ({', '.join(invitation.roles)})…"
        try:
            certificate = await asyncio.to_thread(enrol, node_dir, invitation)
        except CryptoError as exc:
            self.enrol_text = str(exc)
            return
        self.enrol_text = f"{tr('enrol_done', self.lang)}: {certificate.name}"
        self._enrol = None
        self.enrolled = True
        self.show("sos")
        enrolled()

    def sos_ready(self, early: EarlySos) -> None:
        """The app's table is open: the SOS button is live, before the node has started."""
        self.early = early
        self.me_name = self.state.me
        self.ready = True
        self.changed("sos")

    def attach(self, responder: Responder) -> None:
        """The node is running: messages, the map and the links follow it now."""
        self.responder = responder
        self.changed("sos")

    def screen(self, name: str) -> Screen:
        return self.root.ids.screens.get_screen(name)

    def t(self, key: str, language: str) -> str:
        return tr(key, language)

    def run_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("app action failed: %s", task.exception())

    # -- look --------------------------------------------------------------------------------------

    def set_night(self, night: bool) -> None:
        self.night = night
        theme = NIGHT if night else DAY
        self.bg, self.fg = theme["bg"], theme["fg"]
        self.button_bg, self.button_fg = theme["button_bg"], theme["button_fg"]
        self.accent = [0.8, 0.35, 0.1, 1] if night else [0.0, 0.35, 0.8, 1]
        self.ok_color = [0.75, 0.45, 0.1, 1] if night else [0.0, 0.55, 0.15, 1]

    def toggle_night(self) -> None:
        self.set_night(not self.night)
        if self.root is not None:
            for what in ("alarms", "messages", "links"):
                self.changed(what)

    def toggle_language(self) -> None:
        self.lang = "cs" if self.lang == "en" else "en"
        for what in ("sos", "alarms", "messages", "links"):
            self.changed(what)

    def show(self, name: str) -> None:
        screens = self.root.ids.screens
        screens.transition.duration = 0
        screens.current = name
        self.root.ids[f"tab_{name}"].state = "down"
        if self._links_event is not None:
            self._links_event.cancel()
            self._links_event = None
        if name == "links":
            self._refresh_links(0)
            self._links_event = Clock.schedule_interval(self._refresh_links, LINKS_REFRESH_S)

    def _refresh_links(self, _dt: float) -> None:
        if self.responder is not None:
            self.responder.refresh_links()
        self.changed("links")

    # -- SOS ---------------------------------------------------------------------------------------

    def ask_confirm(self) -> None:
        view = ModalView(size_hint=(0.9, 0.5), auto_dismiss=False)
        box = BoxLayout(orientation="vertical", padding=dp(16), spacing=dp(12))
        box.add_widget(Label(text=tr("sos_confirm", self.lang), font_size=dp(26), bold=True))
        send = Button(
            text=tr("sos_send", self.lang),
            font_size=dp(32),
            bold=True,
            background_normal="",
            background_color=(0.85, 0, 0, 1),
            size_hint_y=None,
            height=dp(96),
        )
        back = Button(text=tr("back", self.lang), font_size=self.font, size_hint_y=None, height=dp(64))
        send.bind(on_release=lambda *_: self.confirm_sos())
        back.bind(on_release=lambda *_: view.dismiss())
        box.add_widget(send)
        box.add_widget(back)
        view.add_widget(box)
        view.ids = {"send": send, "back": back}  # for tests and the screenshot script
        self.confirm_view = view
        view.open()

    def confirm_sos(self) -> None:
        if self.confirm_view is not None:
            self.confirm_view.dismiss()
        if self.early is not None:
            self.run_task(self.early.raise_sos())

    def ask_pin(self) -> None:
        view = ModalView(size_hint=(0.9, 0.5), auto_dismiss=False)
        box = BoxLayout(orientation="vertical", padding=dp(16), spacing=dp(12))
        prompt = Label(text=tr("pin_prompt", self.lang), font_size=dp(24))
        pin = TextInput(
            password=True, input_filter="int", multiline=False, font_size=dp(32), size_hint_y=None
        )
        pin.height = dp(64)
        row = BoxLayout(spacing=dp(12), size_hint_y=None, height=dp(64))
        ok = Button(text=tr("ok", self.lang), font_size=self.font)
        back = Button(text=tr("back", self.lang), font_size=self.font)
        ok.bind(on_release=lambda *_: self.run_task(self.cancel_with_pin(pin.text, prompt)))
        back.bind(on_release=lambda *_: view.dismiss())
        row.add_widget(ok)
        row.add_widget(back)
        for widget in (prompt, pin, row):
            box.add_widget(widget)
        view.add_widget(box)
        view.ids = {"pin": pin, "ok": ok, "back": back, "prompt": prompt}
        self.pin_view = view
        view.open()

    async def cancel_with_pin(self, pin: str, prompt: Label) -> None:
        from mobile.responder import WrongPinError  # loaded by the node's start (mobile.runtime)

        if self.responder is None:
            return
        try:
            await self.responder.cancel_sos(pin)
        except WrongPinError:
            prompt.text = tr("pin_wrong", self.lang)
            return
        if self.pin_view is not None:
            self.pin_view.dismiss()

    # -- messages ----------------------------------------------------------------------------------

    def send_canned(self, key: str) -> None:
        from mobile.responder import CANNED  # loaded by the node's start (mobile.runtime)

        if self.responder is not None and key in CANNED:
            self.run_task(self.responder.send_text(self.destination, f"STATUS: {key}"))

    def send_typed(self) -> None:
        field = self.screen("messages").ids.text
        text = field.text.strip()
        if text and self.responder is not None:
            field.text = ""
            self.run_task(self.responder.send_text(self.destination, text))

    # -- drawing the state -------------------------------------------------------------------------

    def changed(self, what: str) -> None:
        if self.root is None:
            return
        if self._doze is not None:
            self._doze.news()
        if what == "sos":
            self._draw_sos()
        elif what == "messages":
            self._draw_messages()
        elif what == "alarms":
            self._draw_alarms()
            self._draw_map()
        elif what == "units":
            self._draw_map()
        elif what == "links":
            self._draw_links()

    def _draw_sos(self) -> None:
        sos = self.state.sos
        phase = SosPhase.IDLE if sos is None else sos.phase
        self.sos_live = sos is not None and sos.live
        self.sos_step = SOS_STEP.get(phase, 0)
        if not self.ready:
            self.sos_text = tr("starting", self.lang)
        else:
            self.sos_text = tr(f"sos_{phase.value}", self.lang)
        detail = []
        if sos is not None and phase is not SosPhase.IDLE:
            detail.append(f"#{sos.number} · {ago(time.time() - sos.raised, self.lang)}")
            if sos.durable_ms is not None:
                detail.append(f"{sos.durable_ms:.0f} ms")
            if sos.ack:
                detail.append(sos.ack)
        self.sos_detail = "\n".join(detail)

    def _card(self, tint: list[float], lines: list[tuple[str, bool]]) -> Card:
        card = Card(tint=tint)
        dark = sum(tint[:3]) < 1.6
        for text, bold in lines:
            label = Label(
                text=text,
                bold=bold,
                font_size=self.font,
                color=(1, 1, 1, 1) if dark else (0, 0, 0, 1),
                size_hint_y=None,
                halign="left",
            )
            label.bind(width=lambda w, v: setattr(w, "text_size", (v, None)))
            label.bind(texture_size=lambda w, v: setattr(w, "height", v[1] + dp(4)))
            card.add_widget(label)
        return card

    def _empty(self, key: str) -> Label:
        return Label(
            text=tr(key, self.lang), color=self.fg, font_size=self.font, size_hint_y=None, height=dp(64)
        )

    def _draw_alarms(self) -> None:
        box = self.screen("incident").ids.alarms
        box.clear_widgets()
        alarms = self.state.alarms_by_priority()
        self.alarm_count = len(alarms)
        if not alarms:
            box.add_widget(self._empty("no_alarms"))
        for alarm in alarms:
            hazard = tr(f"hazard_{alarm.hazard}", self.lang) if alarm.hazard else ""
            title = alarm.title if not hazard or hazard.startswith("hazard_") else f"{hazard}: {alarm.title}"
            lines = [(f"{alarm.priority.name} · {title}", True)]
            where = [f"{tr('zone', self.lang)} {alarm.zone}"] if alarm.zone else []
            where += [f"{tr('floor', self.lang)} {alarm.floor}"] if alarm.floor is not None else []
            if where:
                lines.append((", ".join(where), False))
            if alarm.detail:
                lines.append((alarm.detail, False))
            pin = (
                f" · {alarm.lat:.5f}, {alarm.lon:.5f}"
                if alarm.lat is not None and alarm.lon is not None
                else ""
            )
            lines.append((f"{ago(time.time() - alarm.at, self.lang)} · {alarm.source}{pin}", False))
            box.add_widget(self._card(PRIORITY_TINT[alarm.priority], lines))

    def _draw_messages(self) -> None:
        box = self.screen("messages").ids.messages
        box.clear_widgets()
        if not self.state.messages:
            box.add_widget(self._empty("no_messages"))
        for message in self.state.messages[-30:]:
            who = (
                tr("to_post" if message.peer == "post" else "to_team", self.lang)
                if message.outgoing
                else message.peer
            )
            arrow = "»" if message.outgoing else "«"
            state = "" if message.state is Delivery.RECEIVED else tr(f"{message.state.value}_m", self.lang)
            tint = [0.85, 0.9, 1, 1] if message.outgoing else [0.9, 0.9, 0.9, 1]
            if self.night:
                tint = [0.2, 0.1, 0.05, 1] if message.outgoing else [0.12, 0.12, 0.12, 1]
            stamp = time.strftime("%H:%M", time.localtime(message.at))
            box.add_widget(
                self._card(tint, [(f"{arrow} {who} · {stamp} · {state}", True), (message.text, False)])
            )

    def _draw_map(self) -> None:
        state = self.state
        self.screen("map").ids.map.markers(
            state.position,
            [(u.lat, u.lon) for u in state.units.values()],
            [(a.lat, a.lon) for a in state.alarms.values() if a.lat is not None and a.lon is not None],
        )

    def _draw_links(self) -> None:
        rows = self.state.links
        up = sum(row.neighbours for row in rows)
        self.links_up = up > 0
        self.link_summary = f"{up} {tr('neighbours', self.lang)}"  # green when > 0, red when none
        box = self.screen("links").ids.links
        box.clear_widgets()
        contact = self.state.last_post_contact
        when = tr("never", self.lang) if contact is None else ago(time.time() - contact, self.lang)
        box.add_widget(
            self._card(
                [0.9, 0.9, 0.9, 1] if not self.night else [0.12, 0.12, 0.12, 1],
                [(f"{tr('last_contact', self.lang)}: {when}", True)],
            )
        )
        if not rows:
            box.add_widget(self._empty("no_links"))
        for row in rows:
            queued = ", ".join(f"{name} {count}" for name, count in row.queued.items())
            lines = [
                (f"{row.name} ({row.kind}) · {row.neighbours} {tr('neighbours', self.lang)}", True),
                (f"{tr('queued', self.lang)}: {queued}", False),
            ]
            if row.airtime_left_s is not None:
                lines.append((f"{tr('airtime_left', self.lang)}: {row.airtime_left_s:.0f} s", False))
            tint = [0.75, 0.95, 0.75, 1] if row.neighbours else [1, 0.8, 0.8, 1]
            if self.night:
                tint = [0.1, 0.2, 0.05, 1] if row.neighbours else [0.3, 0.05, 0.05, 1]
            box.add_widget(self._card(tint, lines))


__all__ = ["ResponderApp", "widgets"]
