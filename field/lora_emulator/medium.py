"""The simulated LoRa air shared by emulated radios.

It times every frame with the Semtech formula, decides who hears it from positions (log-distance
path loss → RSSI → SNR against the spreading factor's threshold) or from explicit per-link
overrides, loses overlapping receptions to collisions, keeps radios half duplex, and accounts each
radio's transmit airtime over a rolling hour for the regional duty cycle.

Time is either *scaled real time* (a scheduler thread; ``speedup=50`` runs a 2 s LongFast frame in
40 ms of wall time) or *virtual* (nothing moves until ``advance()``, which makes a run exactly
reproducible from its seed). Every random draw comes from one seeded ``random.Random``.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from relay.links.lora_phy import Modem, modem

PATH_LOSS_D0_M = 40.0  # log-distance model reference distance (LoRaSim's 868 MHz fit)
PATH_LOSS_AT_D0_DB = 127.41
PATH_LOSS_EXPONENT = 2.08
NOISE_FIGURE_DB = 6.0
MAX_EVENTS_PER_ADVANCE = 1_000_000


class Scheduler:
    """Timers in simulated seconds; callbacks run one at a time holding ``lock``."""

    def __init__(self, speedup: float = 1.0, virtual: bool = False) -> None:
        if speedup <= 0:
            raise ValueError("speedup must be positive")
        self.speedup = float(speedup)
        self.virtual = virtual
        self.lock = threading.RLock()
        self._virtual_now = 0.0
        self._t0 = time.monotonic()
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._wake = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None
        if not virtual:
            self._thread = threading.Thread(target=self._run, name="lora-medium", daemon=True)
            self._thread.start()

    def now(self) -> float:
        if self.virtual:
            return self._virtual_now
        return (time.monotonic() - self._t0) * self.speedup

    def call_later(self, delay_s: float, fn: Callable[..., None], *args: Any) -> Timer:
        return self.call_at(self.now() + max(0.0, delay_s), fn, *args)

    def call_at(self, when: float, fn: Callable[..., None], *args: Any) -> Timer:
        timer = Timer(fn, args)
        with self._wake:
            heapq.heappush(self._heap, (when, next(self._seq), timer))
            self._wake.notify()
        return timer

    def advance(self, seconds: float) -> int:
        """Virtual time only: run every timer due in the next ``seconds``; returns how many ran."""
        if not self.virtual:
            raise RuntimeError("advance() needs a virtual-time scheduler")
        end = self._virtual_now + seconds
        ran = 0
        while ran < MAX_EVENTS_PER_ADVANCE:
            with self._wake:
                if not self._heap or self._heap[0][0] > end:
                    break
                when, _, timer = heapq.heappop(self._heap)
            self._virtual_now = max(self._virtual_now, when)
            self._fire(timer)
            ran += 1
        self._virtual_now = end
        return ran

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _fire(self, timer: Timer) -> None:
        if timer.cancelled:
            return
        with self.lock:
            timer.fn(*timer.args)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopped:
                    if self._heap:
                        wait = (self._heap[0][0] - self.now()) / self.speedup
                        if wait <= 0:
                            break
                        self._wake.wait(timeout=wait)
                    else:
                        self._wake.wait()
                if self._stopped:
                    return
                _, _, timer = heapq.heappop(self._heap)
            self._fire(timer)


@dataclass(slots=True)
class Timer:
    fn: Callable[..., None]
    args: tuple[Any, ...]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass(frozen=True, slots=True)
class LinkQuality:
    """How one radio hears another: SNR/RSSI reported to the receiver and the chance a frame is lost."""

    snr: float
    rssi: float
    loss: float


@dataclass(frozen=True, slots=True)
class AirFrame:
    """One LoRa transmission: the Meshtastic header fields and the (encoded) Data protobuf."""

    to: int
    sender: int
    packet_id: int
    hop_limit: int
    hop_start: int
    want_ack: bool
    channel: int
    data: bytes
    pki: bool = False
    relay_node: int = 0
    priority: int = 0
    phy_len: int = 0


class Receiver(Protocol):
    num: int

    def on_air_receive(self, frame: AirFrame, snr: float, rssi: float) -> None: ...


@dataclass(slots=True)
class _Reception:
    frame: AirFrame
    quality: LinkQuality
    collided: bool = False
    deaf: bool = False


@dataclass(slots=True)
class _RadioState:
    receiver: Receiver
    position: tuple[float, float]
    tx_power_dbm: float
    receiving: list[_Reception] = field(default_factory=list)
    tx_until: float = 0.0
    tx_log: list[tuple[float, float]] = field(default_factory=list)


@dataclass(slots=True)
class MediumStats:
    transmissions: int = 0
    received: int = 0
    lost: int = 0
    collided: int = 0
    half_duplex: int = 0
    airtime_s: float = 0.0
    bytes_on_air: int = 0


class LoRaMedium:
    """The air: radios at positions, one modem preset, seeded loss and collisions."""

    def __init__(
        self,
        preset: str = "LONG_FAST",
        *,
        seed: int = 0,
        speedup: float = 1.0,
        virtual_time: bool = False,
        extra_loss: float = 0.0,
        collisions: bool = True,
    ) -> None:
        self.modem: Modem = modem(preset)
        self.scheduler = Scheduler(speedup, virtual=virtual_time)
        self.lock = self.scheduler.lock
        self.rng = random.Random(seed)
        self.extra_loss = extra_loss
        self.collisions = collisions
        self.stats = MediumStats()
        self.trace: list[str] = []
        self._radios: dict[int, _RadioState] = {}
        self._overrides: dict[tuple[int, int], LinkQuality] = {}

    def now(self) -> float:
        return self.scheduler.now()

    def close(self) -> None:
        self.scheduler.stop()

    # ---- topology ----
    def add_radio(
        self, receiver: Receiver, position: tuple[float, float], tx_power_dbm: float = 27.0
    ) -> None:
        with self.lock:
            self._radios[receiver.num] = _RadioState(receiver, position, tx_power_dbm)

    def remove_radio(self, num: int) -> None:
        with self.lock:
            self._radios.pop(num, None)

    def radio_nums(self) -> list[int]:
        return sorted(self._radios)

    def radios(self) -> list[Receiver]:
        return [self._radios[num].receiver for num in sorted(self._radios)]

    def move(self, num: int, position: tuple[float, float]) -> None:
        with self.lock:
            self._radios[num].position = position

    def set_link(
        self, a: int, b: int, *, loss: float = 0.0, snr: float = 5.0, symmetric: bool = True
    ) -> None:
        """Override what distance says: ``b`` hears ``a`` with this SNR and loss (1.0 = never)."""
        quality = LinkQuality(snr=snr, rssi=snr - 120.0, loss=loss)
        with self.lock:
            self._overrides[(a, b)] = quality
            if symmetric:
                self._overrides[(b, a)] = quality

    def quality(self, tx: int, rx: int) -> LinkQuality:
        """How ``rx`` hears ``tx``: the override if set, else the log-distance path-loss model."""
        override = self._overrides.get((tx, rx))
        if override is not None:
            return override
        a, b = self._radios[tx], self._radios[rx]
        distance = max(1.0, math.dist(a.position, b.position))
        path_loss = PATH_LOSS_AT_D0_DB + 10 * PATH_LOSS_EXPONENT * math.log10(distance / PATH_LOSS_D0_M)
        rssi = a.tx_power_dbm - path_loss
        noise = -174.0 + 10 * math.log10(self.modem.bw_hz) + NOISE_FIGURE_DB
        snr = rssi - noise
        margin = snr - self.modem.snr_threshold_db
        loss = 1.0 if margin < -3 else 1.0 / (1.0 + math.exp(2.0 * margin))  # soft edge of ~2 dB
        return LinkQuality(snr=round(snr, 2), rssi=round(rssi, 1), loss=loss)

    # ---- accounting ----
    def tx_fraction_last_hour(self, num: int) -> float:
        """Share of the last hour this radio spent transmitting (the duty-cycle measure)."""
        now = self.now()
        log = self._radios[num].tx_log
        log[:] = [(start, air) for start, air in log if start + air > now - 3600.0]
        return sum(air for _, air in log) / 3600.0

    def is_busy(self, num: int) -> bool:
        """What channel activity detection at ``num`` reports: receiving or transmitting."""
        state = self._radios[num]
        return bool(state.receiving) or state.tx_until > self.now()

    # ---- the air (callers hold ``lock``) ----
    def transmit(self, tx: int, frame: AirFrame) -> float:
        """Put ``frame`` on the air from ``tx`` now; returns its airtime in seconds."""
        now = self.now()
        airtime = self.modem.airtime_s(frame.phy_len)
        sender = self._radios[tx]
        sender.tx_until = now + airtime
        sender.tx_log.append((now, airtime))
        for reception in sender.receiving:  # half duplex: transmitting deafens us
            reception.deaf = True
        self.stats.transmissions += 1
        self.stats.airtime_s += airtime
        self.stats.bytes_on_air += frame.phy_len
        self.trace.append(
            f"{now:10.3f} TX {tx:08x} id={frame.packet_id:08x} to={frame.to:08x} "
            f"hop={frame.hop_limit}/{frame.hop_start} len={frame.phy_len}"
        )
        for rx, state in self._radios.items():
            if rx == tx:
                continue
            quality = self.quality(tx, rx)
            if quality.loss >= 1.0:
                continue
            if state.tx_until > now:
                self.stats.half_duplex += 1
                continue
            reception = _Reception(frame, quality)
            if self.collisions and state.receiving:
                reception.collided = True
                for other in state.receiving:
                    other.collided = True
            state.receiving.append(reception)
            self.scheduler.call_at(now + airtime, self._end_reception, rx, reception)
        return airtime

    def _end_reception(self, rx: int, reception: _Reception) -> None:
        state = self._radios.get(rx)
        if state is None:
            return
        if reception in state.receiving:
            state.receiving.remove(reception)
        frame = reception.frame
        if reception.deaf:
            self.stats.half_duplex += 1
            return
        if reception.collided:
            self.stats.collided += 1
            self.trace.append(f"{self.now():10.3f} COLLISION at {rx:08x} id={frame.packet_id:08x}")
            return
        if self.rng.random() < reception.quality.loss or self.rng.random() < self.extra_loss:
            self.stats.lost += 1
            self.trace.append(f"{self.now():10.3f} LOST at {rx:08x} id={frame.packet_id:08x}")
            return
        self.stats.received += 1
        state.receiver.on_air_receive(frame, reception.quality.snr, reception.quality.rssi)


def relayed(frame: AirFrame, relay_num: int) -> AirFrame:
    """The copy a relay rebroadcasts: one hop fewer, its own last byte as relay node."""
    return replace(frame, hop_limit=frame.hop_limit - 1, relay_node=relay_num & 0xFF)
