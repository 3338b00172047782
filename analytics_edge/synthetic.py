"""Synthetic camera clips composed from the two public-domain photos of people in scikit-image.

``skimage.data.astronaut()`` (Eileen Collins, NASA) and ``skimage.data.camera()`` (the cameraman)
are pasted as "actors" onto a brick-wall plaza and moved along straight-line paths, so a test or
the demo knows exactly who is where and when: someone walking past, someone entering a zone,
someone standing still, a bag left behind, a crowd. No image of unknown licence is involved; the bag
is drawn here.

scikit-image is needed to build clips (tests, demo, bench), not to run a camera.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path

import av
import numpy as np
from PIL import Image

WIDTH, HEIGHT = 640, 360
PERSON_HEIGHT = 260  # the person model finds these actors reliably from about 240 px tall
LYING_LENGTH = 160  # a lying person is found only when small (the model is made for upright people)


@dataclass(frozen=True, slots=True)
class Actor:
    """A sprite following keyframes ``(t, x, y)`` (top-left corner); absent outside their span."""

    sprite: str  # "astronaut" | "cameraman" | "bag"
    height: int
    path: tuple[tuple[float, float, float], ...]

    def position(self, t: float) -> tuple[int, int] | None:
        if not self.path or t < self.path[0][0] or t > self.path[-1][0]:
            return None
        for (t0, x0, y0), (t1, x1, y1) in zip(self.path, self.path[1:], strict=False):
            if t0 <= t <= t1:
                share = 0.0 if t1 == t0 else (t - t0) / (t1 - t0)
                return round(x0 + (x1 - x0) * share), round(y0 + (y1 - y0) * share)
        return round(self.path[-1][1]), round(self.path[-1][2])


@dataclass(frozen=True, slots=True)
class Scene:
    name: str
    duration_s: float
    actors: tuple[Actor, ...]
    fps: int = 5
    width: int = WIDTH
    height: int = HEIGHT


def render(scene: Scene, t: float) -> np.ndarray:
    """The scene at time ``t`` as an RGB frame."""
    frame = _background(scene.width, scene.height).copy()
    for actor in scene.actors:
        where = actor.position(t)
        if where is not None:
            _paste(frame, _sprite(actor.sprite, actor.height), *where)
    return frame


def write_clip(scene: Scene, path: Path, codec: str = "libx264") -> Path:
    """Encode the scene to ``path`` (MP4 or MKV by suffix) with PyAV."""
    count = round(scene.duration_s * scene.fps)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=scene.fps)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = scene.width, scene.height, "yuv420p"
        stream.time_base = Fraction(1, scene.fps)
        if codec == "libx264":
            stream.options = {"crf": "23", "preset": "veryfast", "tune": "zerolatency"}
        for index in range(count):
            frame = av.VideoFrame.from_ndarray(render(scene, index / scene.fps), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def ground_y(height: int = PERSON_HEIGHT) -> int:
    """Top y of a sprite of ``height`` standing on the plaza's ground line."""
    return HEIGHT - 10 - height


# --- the scenario library ----------------------------------------------------------------------


def walking_past(duration_s: float = 8.0) -> Scene:
    """The cameraman walks from the left edge to the right edge."""
    y = ground_y()
    walker = Actor("cameraman", PERSON_HEIGHT, ((0.0, 0, y), (duration_s, WIDTH - 170, y)))
    return Scene("walking_past", duration_s, (walker,))


def entering_zone(duration_s: float = 8.0) -> Scene:
    """The astronaut walks in from the left and stops in the right third (a restricted zone)."""
    y = ground_y()
    path = ((0.0, 0, y), (duration_s / 2, 420, y), (duration_s, 420, y))
    return Scene("entering_zone", duration_s, (Actor("astronaut", PERSON_HEIGHT, path),))


def standing_still(duration_s: float = 10.0) -> Scene:
    """The cameraman stands in the middle of the plaza the whole time."""
    y = ground_y()
    return Scene(
        "standing_still",
        duration_s,
        (Actor("cameraman", PERSON_HEIGHT, ((0.0, 240, y), (duration_s, 240, y))),),
    )


def bag_left_behind(duration_s: float = 16.0) -> Scene:
    """The cameraman carries a bag in, puts it down at t=5 s, walks out by t=8 s; the bag stays."""
    y, bag_h = ground_y(), 60
    bag_y = HEIGHT - 10 - bag_h
    walker = Actor("cameraman", PERSON_HEIGHT, ((0.0, -320, y), (5.0, 200, y), (8.0, WIDTH, y)))
    bag = Actor("bag", bag_h, ((0.0, -170, bag_y), (5.0, 350, bag_y), (duration_s, 350, bag_y)))
    return Scene("bag_left_behind", duration_s, (walker, bag))


BAG_BOX = (350, HEIGHT - 70, 440, HEIGHT - 10)  # where the bag of ``bag_left_behind`` rests


def person_falls(duration_s: float = 9.0) -> Scene:
    """The astronaut walks in and at t=3 s lies down on the ground (a small, lying figure)."""
    y = ground_y()
    lying_h = _sprite("astronaut_lying", LYING_LENGTH).shape[0]
    walker = Actor("astronaut", PERSON_HEIGHT, ((0.0, -260, y), (2.9, 80, y)))
    lying = Actor(
        "astronaut_lying",
        LYING_LENGTH,
        ((3.0, 100, HEIGHT - 10 - lying_h), (duration_s, 100, HEIGHT - 10 - lying_h)),
    )
    return Scene("person_falls", duration_s, (walker, lying))


def crowd_gathering(duration_s: float = 10.0) -> Scene:
    """One person, then two, then three stand side by side: the count rises."""
    y = ground_y()
    return Scene(
        "crowd_gathering",
        duration_s,
        (
            Actor("astronaut", PERSON_HEIGHT, ((0.0, 10, y), (duration_s, 10, y))),
            Actor("cameraman", PERSON_HEIGHT, ((3.0, 240, y), (duration_s, 240, y))),
            Actor("astronaut", PERSON_HEIGHT, ((6.0, 430, y), (duration_s, 430, y))),
        ),
    )


# --- pixels ------------------------------------------------------------------------------------


@cache
def _background(width: int, height: int) -> np.ndarray:
    brick = np.asarray(Image.fromarray(_photo("brick")).resize((width, height))).astype(np.float32)
    plaza = np.stack([brick * 0.6 + 60, brick * 0.6 + 50, brick * 0.5 + 40], axis=-1)
    plaza[height - 10 :] = (90, 90, 85)  # the ground line
    return plaza.astype(np.uint8)


@cache
def _sprite(name: str, height: int) -> np.ndarray:
    if name.endswith("_lying"):  # the upright sprite turned on its side; ``height`` is its length
        return np.ascontiguousarray(np.rot90(_sprite(name.removesuffix("_lying"), height)))
    if name == "astronaut":
        image = _photo("astronaut")[:, :400]
    elif name == "cameraman":
        image = np.stack([_photo("camera")[:, 40:360]] * 3, axis=-1)
    elif name == "bag":
        return _bag(height)
    else:
        raise ValueError(f"unknown sprite {name!r}")
    width = height * image.shape[1] // image.shape[0]
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def _photo(name: str) -> np.ndarray:
    """One of scikit-image's bundled public-domain photos (imported late: a test/demo dependency)."""
    import skimage.data

    loader: Callable[[], np.ndarray] = getattr(skimage.data, name)
    return loader()


def _bag(height: int) -> np.ndarray:
    """A dark-red holdall with a handle, drawn: it is whatever a person might leave behind."""
    width = height * 3 // 2
    bag = np.zeros((height, width, 3), dtype=np.uint8)
    bag[:] = (120, 30, 25)
    bag[: height // 4] = (60, 60, 60)  # handle band
    bag[: height // 4, width // 4 : 3 * width // 4] = (90, 90, 85)  # sky through the handle
    bag[height // 2 : height // 2 + 3] = (200, 180, 40)  # zip
    return bag


def _paste(frame: np.ndarray, sprite: np.ndarray, x: int, y: int) -> None:
    h, w = sprite.shape[:2]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, frame.shape[1]), min(y + h, frame.shape[0])
    if x1 > x0 and y1 > y0:
        frame[y0:y1, x0:x1] = sprite[y0 - y : y1 - y, x0 - x : x1 - x]


SCENES = {
    scene.name: scene
    for scene in (
        walking_past(),
        entering_zone(),
        standing_still(),
        bag_left_behind(),
        crowd_gathering(),
        person_falls(),
    )
}
