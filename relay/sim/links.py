"""Simulated link models: what a link is (spec), which pairs it joins and when (contacts), and the
per-node transmitter that occupies the medium while a frame is on the air.

A link is a medium with one transmitter per attached node: a LoRa radio, a cellular modem. It
joins listed pairs of nodes; each pair is a :class:`Contact` with its own up/down schedule. A
transmitter sends one frame at a time, to one peer or broadcast to every peer in contact, and is
busy for the frame's serialisation time (LoRa: the Semtech airtime of the preset). On LoRa it is
also the node's radio: it sends the radio-level ACKs and retries of :mod:`relay.sim.arq`, and the
link waits for the radio's answer to a unicast frame before it takes the next one, except FLASH
frames, a few of which go alongside (``FLASH_ALONGSIDE``, as ``relay.links.lora``).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from relay.bundle import COMPACT_HEADER_LEN
from relay.links.base import LinkProfile
from relay.sim.arq import UTILISATION_WINDOW_S
from relay.sim.phy import Modem, frame_airtime
from relay.sim.schedule import Interval, Schedule


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """How to build a contact's schedule: ``always`` up, ``random`` blocks, or explicit ``intervals``."""

    kind: str
    up_fraction: float = 1.0
    mean_cycle_s: float = 600.0
    up: tuple[Interval, ...] = ()

    def build(self, rng: random.Random, horizon: float) -> Schedule:
        if self.kind == "random":
            return Schedule.random_blocks(
                rng, up_fraction=self.up_fraction, mean_cycle_s=self.mean_cycle_s, horizon=horizon
            )
        if self.kind == "intervals":
            return Schedule.from_up(self.up)
        return Schedule.always(horizon)


@dataclass(frozen=True, slots=True)
class SimLinkSpec:
    profile: LinkProfile
    latency_s: float  # propagation and processing delay after the last bit is sent
    loss: float  # probability that a receiver misses a frame
    schedule: ScheduleSpec
    pairs: tuple[tuple[str, str], ...]
    lora: Modem | None = None  # set for LoRa: frame time is the preset's airtime
    radio_arq: bool = False  # LoRa: unicast frames go through the radio's ACKs and retries
    name: str = field(init=False, compare=False)  # the profile's: read for every event of a node
    # bundle_time by payload length: the oracle asks for every hop of every search
    _bundle_times: dict[int, float] = field(default_factory=dict, init=False, repr=False, compare=False)
    # frame_time by frame length: asked for every frame sent (LoRa: the Semtech formula)
    _frame_times: dict[int, float] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.profile.name)

    def frame_time(self, frame_len: int) -> float:
        """Seconds the transmitter is busy sending a frame of ``frame_len`` bytes."""
        seconds = self._frame_times.get(frame_len)
        if seconds is None:
            if self.lora is not None:
                seconds = frame_airtime(min(frame_len, self.profile.mtu), self.lora)
            else:
                seconds = frame_len / self.profile.bitrate + self.profile.per_frame_overhead_s
            self._frame_times[frame_len] = seconds
        return seconds

    def bundle_time(self, payload_len: int) -> float:
        """Lower bound on one hop for a bundle: its frames back to back, then the latency.

        The bundle is counted as payload plus the compact header, split at the MTU; real frames
        are at least this big, so the oracle built on it never overestimates.
        """
        seconds = self._bundle_times.get(payload_len)
        if seconds is None:
            total = payload_len + COMPACT_HEADER_LEN
            full, last = divmod(total, self.profile.mtu)
            frames = full * self.frame_time(self.profile.mtu) + (self.frame_time(last) if last else 0.0)
            seconds = self._bundle_times[payload_len] = frames + self.latency_s
        return seconds


@dataclass(frozen=True, slots=True, eq=False)
class Contact:
    """One pair joined by a link, with the schedule on which they can hear each other. Each is one
    object, keyed by identity: the world looks one up for every frame, and hashing its schedule's
    fields each time was 2 % of a run."""

    link: SimLinkSpec
    a: str
    b: str
    schedule: Schedule

    def other(self, node: str) -> str:
        return self.b if node == self.a else self.a


@dataclass(slots=True)
class Transmitter:
    """One node's side of a link: sends a frame at a time and counts what it spent."""

    node: str
    link: SimLinkSpec
    busy_until: float = 0.0  # the medium is ours until then (a frame, a retry or an ACK on the air)
    awaiting_ack: int = 0  # LoRa: unicast frames awaiting the radio's answer (then FLASH goes only)
    frames: int = 0  # frames of ours on the air, retries included
    bytes: int = 0
    retries: int = 0
    acks: int = 0  # radio-level ACKs sent
    max_retransmit: int = 0  # unicast frames the radio gave up on (MAX_RETRANSMIT)
    airtime_s: float = 0.0
    max_frame_time_s: float = 0.0
    airtime_log: list[tuple[float, float]] = field(default_factory=list)  # (start, seconds), LoRa only
    seen: set[int] = field(default_factory=set)  # LoRa: packet ids this radio already handed over
    contacts: list[Contact] = field(default_factory=list)  # the pairs it reaches (a broadcast: those up)
    _recent: deque[tuple[float, float]] = field(default_factory=deque)  # the utilisation window
    _recent_s: float = 0.0

    def idle(self, now: float) -> bool:
        return now >= self.busy_until and not self.awaiting_ack

    def start(self, frame_len: int, now: float) -> float:
        """Occupy the medium for one frame of ours, as soon as it is free from ``now``; returns
        when the last bit leaves."""
        seconds = self.link.frame_time(frame_len)
        self.frames += 1
        self.bytes += frame_len
        # conditionals, not max(): the builtin parses its arguments on every call (Python 3.11)
        if seconds > self.max_frame_time_s:
            self.max_frame_time_s = seconds
        return self._occupy(self.busy_until if self.busy_until > now else now, seconds)

    def start_ack(self, now: float, ack_data_len: int) -> float:
        """Send the radio's routing ACK as soon as the medium is free from ``now``; returns its end."""
        self.acks += 1
        return self._occupy(max(now, self.busy_until), self.link.frame_time(ack_data_len))

    def _occupy(self, begin: float, seconds: float) -> float:
        self.busy_until = begin + seconds
        self.airtime_s += seconds
        if self.link.lora is not None:
            self.airtime_log.append((begin, seconds))
            self._recent.append((begin, seconds))
            self._recent_s += seconds
        return self.busy_until

    def recent_airtime(self, now: float) -> float:
        """Seconds this radio transmitted in the utilisation window before ``now``."""
        while self._recent and self._recent[0][0] + self._recent[0][1] <= now - UTILISATION_WINDOW_S:
            self._recent_s -= self._recent.popleft()[1]
        return max(0.0, self._recent_s)

    def reboot(self) -> None:
        """The node restarted: its radio forgot what it was sending and what it had seen."""
        self.awaiting_ack = 0
        self.seen.clear()

    def max_hourly_airtime(self) -> float:
        """Largest airtime (s) in any rolling hour starting at a frame: the duty cycle actually used."""
        log = self.airtime_log  # thousands of frames a run: locals, not attribute lookups
        best = 0.0
        total = 0.0
        first = 0
        for start, seconds in log:
            total += seconds
            while log[first][0] <= start - 3600.0:
                total -= log[first][1]
                first += 1
            if total > best:
                best = total
        return best
