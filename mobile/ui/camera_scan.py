"""Enrolment by camera: Kivy's Camera widget in a dialog, its frames decoded for an invitation QR.

A few frames a second are read from the camera's texture and decoded off the UI thread
(:func:`mobile.enrol.scan_frame`, zbar through pyzbar); the first invitation found closes the
dialog and takes the same path as an invitation read from an image file. A QR code that is not an
invitation is named on screen and scanning goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from kivy.clock import Clock
from kivy.metrics import dp
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.label import Label
from kivy.uix.modalview import ModalView

from crypto.errors import CryptoError
from crypto.invite import Invitation
from mobile.ui.i18n import tr

log = logging.getLogger("mesh112.mobile.ui")

SCAN_EVERY_S = 0.3  # frames decoded per second: enough to feel instant, little CPU
RESOLUTION = (640, 480)


class CameraScan(ModalView):  # type: ignore[misc]  # kivy is untyped
    """The dialog; ``found`` gets the first invitation seen."""

    def __init__(self, found: Callable[[Invitation], object], language: str, **kwargs: Any) -> None:
        super().__init__(size_hint=(0.95, 0.8), auto_dismiss=False, **kwargs)
        self._found = found
        self._busy = False
        self._event: Any = None
        self._camera: Any = None
        box = BoxLayout(orientation="vertical", padding=dp(8), spacing=dp(8))
        self.note = Label(text=tr("camera_hint", language), font_size=dp(20), size_hint_y=None, height=dp(64))
        close = Button(text=tr("back", language), font_size=dp(20), size_hint_y=None, height=dp(64))
        close.bind(on_release=lambda *_: self.close())
        try:
            from kivy.uix.camera import Camera

            self._camera = Camera(play=True, resolution=RESOLUTION, index=0)
        except Exception as exc:  # Kivy raises whatever its camera provider does
            log.warning("no camera: %s", exc)
            self.note.text = f"{tr('camera_none', language)}: {exc}"
        else:
            box.add_widget(self._camera)
            self._event = Clock.schedule_interval(self._grab, SCAN_EVERY_S)
        box.add_widget(self.note)
        box.add_widget(close)
        self.add_widget(box)
        self.ids = {"close": close, "note": self.note}  # for tests and the screenshot script

    def close(self) -> None:
        if self._event is not None:
            self._event.cancel()
        if self._camera is not None:
            self._camera.play = False
        self.dismiss()

    def _grab(self, _dt: float) -> None:
        texture = self._camera.texture if self._camera is not None else None
        if texture is None or self._busy:
            return
        self._busy = True
        width, height = texture.size
        self.decode(texture.pixels, width, height)

    def decode(self, rgba: bytes, width: int, height: int) -> asyncio.Task[None]:
        """Decode one RGBA frame (bottom row first, as a texture holds it) in a worker thread."""
        task = asyncio.ensure_future(self._decode(rgba, width, height))
        task.add_done_callback(lambda _task: setattr(self, "_busy", False))
        return task

    async def _decode(self, rgba: bytes, width: int, height: int) -> None:
        from mobile.enrol import scan_frame

        try:
            invitation = await asyncio.to_thread(scan_frame, rgba, width, height)
        except CryptoError as exc:  # a QR code, but not a valid invitation
            self.note.text = str(exc)
            return
        if invitation is not None:
            self.close()
            self._found(invitation)
