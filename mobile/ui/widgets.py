"""The two widgets Kivy does not have: a button that fires only when held, and the offline map."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from kivy.clock import Clock
from kivy.core.image import Image as CoreImage
from kivy.graphics import Color, Ellipse, Line, Rectangle
from kivy.metrics import dp
from kivy.properties import BooleanProperty, ListProperty, NumericProperty, StringProperty
from kivy.uix.button import Button
from kivy.uix.stencilview import StencilView

from mobile.maptiles import TILE, MBTiles, TileView, world_px

HOLD_S = 1.5  # a glove brushing the screen does not raise an SOS


class HoldButton(Button):  # type: ignore[misc]  # kivy is untyped
    """Fires ``on_hold`` after it has been pressed for ``hold_s`` without lifting; ``progress`` goes
    0 -> 1 meanwhile (one timer per press, nothing ticks while idle)."""

    hold_s = NumericProperty(HOLD_S)
    progress = NumericProperty(0.0)
    holding = BooleanProperty(False)

    def __init__(self, **kwargs: Any) -> None:
        self.register_event_type("on_hold")
        super().__init__(**kwargs)
        self._events: list[Any] = []

    def on_touch_down(self, touch: Any) -> bool:
        if self.disabled or not self.collide_point(*touch.pos):
            return bool(super().on_touch_down(touch))
        touch.grab(self)
        self.holding = True
        self.progress = 0.0
        steps = 10
        self._events = [
            Clock.schedule_once(lambda dt, i=i: setattr(self, "progress", i / steps), self.hold_s * i / steps)
            for i in range(1, steps)
        ]
        self._events.append(Clock.schedule_once(self._held, self.hold_s))
        return True

    def on_touch_up(self, touch: Any) -> bool:
        if touch.grab_current is not self:
            return bool(super().on_touch_up(touch))
        touch.ungrab(self)
        self._reset()
        return True

    def _reset(self) -> None:
        for event in self._events:
            event.cancel()
        self._events = []
        self.holding = False
        self.progress = 0.0

    def _held(self, _dt: float) -> None:
        self._reset()
        self.dispatch("on_hold")

    def on_hold(self) -> None:
        pass


class MapView(StencilView):  # type: ignore[misc]  # kivy is untyped; a stencil keeps tiles inside
    """Tiles from an MBTiles file under markers for me, units and alarms; a grid where no tile is."""

    lat = NumericProperty(50.0875)
    lon = NumericProperty(14.4213)
    zoom = NumericProperty(15)
    grid_color = ListProperty([0.5, 0.5, 0.5, 1])
    note = StringProperty("")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tiles: MBTiles | None = None
        self.me: tuple[float, float] | None = None
        self.units: Sequence[tuple[float, float]] = ()
        self.alarms: Sequence[tuple[float, float]] = ()
        self._textures: dict[tuple[int, int, int], Any] = {}
        self.tiles_drawn = 0
        self.bind(pos=self.redraw, size=self.redraw, lat=self.redraw, lon=self.redraw, zoom=self.redraw)

    def open_tiles(self, tiles: MBTiles | None) -> None:
        self.tiles = tiles
        if tiles is not None:
            low, high = tiles.zooms()
            self.zoom = max(low, min(high, int(self.zoom)))
        self.redraw()

    def markers(
        self,
        me: tuple[float, float] | None,
        units: Sequence[tuple[float, float]],
        alarms: Sequence[tuple[float, float]],
    ) -> None:
        self.me, self.units, self.alarms = me, units, alarms
        if me is not None:
            self.lat, self.lon = me
        self.redraw()

    def _texture(self, zoom: int, x: int, y: int) -> Any:
        key = (zoom, x, y)
        if key not in self._textures and self.tiles is not None:
            data = self.tiles.tile(zoom, x, y)
            self._textures[key] = CoreImage(io.BytesIO(data), ext="png").texture if data else None
        return self._textures.get(key)

    def redraw(self, *_args: Any) -> None:
        zoom = int(self.zoom)
        view = TileView.covering(self.lat, self.lon, zoom, self.width, self.height)
        x0, top = self.x, self.top
        self.canvas.clear()
        drawn = 0
        with self.canvas:
            for tx, ty, left, tile_top in view.placements:
                texture = self._texture(zoom, tx, ty)
                pos = (x0 + left, top - tile_top - TILE)
                if texture is not None:
                    Color(1, 1, 1, 1)
                    Rectangle(texture=texture, pos=pos, size=(TILE, TILE))
                    drawn += 1
                else:
                    Color(*self.grid_color)
                    Line(rectangle=(*pos, TILE, TILE), width=1)
            cx, cy = world_px(self.lat, self.lon, zoom)
            for points, colour in ((self.alarms, (0.85, 0, 0, 1)), (self.units, (0, 0.55, 0, 1))):
                Color(*colour)
                for lat, lon in points:
                    self._dot(lat, lon, zoom, cx, cy, dp(14))
            if self.me is not None:
                Color(0, 0.3, 1, 1)
                self._dot(*self.me, zoom, cx, cy, dp(20))
        self.tiles_drawn = drawn
        self.note = "" if drawn else "grid"

    def _dot(self, lat: float, lon: float, zoom: int, cx: float, cy: float, size: float) -> None:
        x, y = world_px(lat, lon, zoom)
        px = self.center_x + (x - cx)
        py = self.center_y - (y - cy)
        Ellipse(pos=(px - size / 2, py - size / 2), size=(size, size))
