"""Stock Meshtastic users heard on a LoRa channel: someone with an off-the-shelf radio calling for help.

A LoRa link reports plain text (TEXT_MESSAGE_APP) and positions (POSITION_APP) from any radio on its
channel through its ``on_text`` and ``on_position`` hooks. None of it is Mesh112 traffic: nothing
is authenticated (any radio can claim any number), nothing becomes a bundle, and the core never
sees it. The command post records what it hears as ``meshtastic`` records, marked unauthenticated,
after a per-radio and an overall budget (:class:`HeardGate`), so a chatty or hostile radio cannot
fill the journal; what the budget drops is counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from relay.ratelimit import RateLimiter

RECORD_TYPE = "meshtastic"
PER_RADIO_PER_MIN = 6.0
PER_RADIO_BURST = 3
ALL_RADIOS_PER_MIN = 60.0
ALL_RADIOS_BURST = 20
MAX_TEXT = 240  # a Meshtastic text payload is at most ~230 bytes; more is not a stock client


@dataclass(frozen=True, slots=True)
class Heard:
    """One packet from a stock Meshtastic radio: a text, or a position (degrees)."""

    link: str
    radio: int  # the Meshtastic node number it claims
    at: float  # Unix time heard
    text: str | None = None
    lat: float | None = None
    lon: float | None = None

    @property
    def radio_id(self) -> str:
        return f"!{self.radio:08x}"

    def record_id(self) -> str:
        """A text is a record of its own; a radio's position is one record, moved as it reports."""
        if self.text is not None:
            return f"{RECORD_TYPE}-{self.radio:08x}-{int(self.at * 1000)}"
        return f"{RECORD_TYPE}-{self.radio:08x}-position"

    def body(self) -> dict[str, Any]:
        what = f"says: {self.text}" if self.text is not None else f"is at {self.lat:.5f}, {self.lon:.5f}"
        return {
            "summary": f"Heard on the air: stock Meshtastic radio {self.radio_id} {what}",
            "authenticated": False,
            "note": "not Mesh112 traffic: any radio can send this and claim any number",
            "radio": self.radio_id,
            "link": self.link,
            "heard_at": round(self.at, 3),
            "text": self.text,
            "location": {"lat": self.lat, "lon": self.lon, "source": "meshtastic"}
            if self.lat is not None
            else None,
        }


class HeardGate:
    """Per-radio and overall budgets for what stock radios may put in the journal (sans I/O)."""

    def __init__(self) -> None:
        self._per_radio: RateLimiter[int] = RateLimiter(PER_RADIO_PER_MIN / 60, PER_RADIO_BURST, 1000)
        self._all: RateLimiter[str] = RateLimiter(ALL_RADIOS_PER_MIN / 60, ALL_RADIOS_BURST, 1)
        self.dropped = 0

    def allow(self, heard: Heard) -> bool:
        if self._per_radio.take(heard.radio, heard.at) > 0 or self._all.take("", heard.at) > 0:
            self.dropped += 1
            return False
        return True


def listen(links: Iterable[Any], name_of: Callable[[Any], str], sink: Callable[[Heard], None]) -> int:
    """Point the ``on_text``/``on_position`` hooks of every link that has them at ``sink``; returns
    how many links now report what stock radios send."""
    wired = 0
    for link in links:
        if not hasattr(link, "on_text") or not hasattr(link, "on_position"):
            continue
        name = name_of(link)

        def on_text(radio: int, text: str, name: str = name) -> None:
            sink(Heard(name, radio, time.time(), text=text[:MAX_TEXT]))

        def on_position(radio: int, lat: float, lon: float, name: str = name) -> None:
            sink(Heard(name, radio, time.time(), lat=lat, lon=lon))

        link.on_text, link.on_position = on_text, on_position
        wired += 1
    return wired
