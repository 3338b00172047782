"""Sans-I/O send window of one IP link session: how much may be in flight, when to send, how patient to be.

Why: a path far slower than the link's configured bitrate (a cellular modem, a capped proxy) queues
whatever the sender hands it. Unbounded, that queue holds minutes of data, so keepalive answers and
FLASH frames wait behind it and the link is declared dead although it works. The receiver therefore
acknowledges records (cumulative ACK records), and the sender keeps at most ``window`` bytes of DATA
unacknowledged:

- ``window`` = highest delivery rate measured in the last ``RATE_FILTER_S`` × (lowest round trip +
  ``TARGET_QUEUE_S``): about a second of standing queue on a slow path, clamped to
  ``MIN_WINDOW`` .. ``bitrate × WINDOW_CAP_S``. It grows by at most the bytes each ack releases
  (doubling per round trip), and older rate samples are forgotten when a round trip exceeds the
  lowest by more than ``2 × TARGET_QUEUE_S`` (the path has slowed).
- Delivery rate samples follow BBR: bytes acknowledged between a record's sending and its ack, over
  the time since the ack that preceded its sending.
- Records are at most a quarter of the window, so acks come back several times per window.
- DATA is paced to ``bitrate``: a record of n bytes holds the next one back by n / bitrate.
- Patience: a keepalive answer waits behind at most what is in flight, so the session may wait
  ``patience()`` beyond its keepalive timeout: the larger of the recent round trips and the time the
  bytes in flight need at the measured rate.

The first estimate comes from the handshake: its two messages crossed the path during its round trip.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from relay.links.ip_records import BATCH_TARGET, MAX_BODY, RecordError

TARGET_QUEUE_S = 1.0  # standing queue the window aims for on a slow path
WINDOW_CAP_S = 2.0  # the window never exceeds bitrate × this
MIN_WINDOW = 1024
MIN_RECORD = 256  # below this, wait for more room rather than send a sliver
RATE_FILTER_S = 10.0
_RECENT_RTTS = 8


@dataclass(frozen=True, slots=True)
class WindowMetrics:
    window_bytes: int
    in_flight_bytes: int
    delivery_rate: float  # bytes/s, the estimate the window uses
    min_rtt_s: float
    frames_acked: int  # frames whose last byte the peer acknowledged


@dataclass(frozen=True, slots=True)
class _InFlight:
    counter: int
    size: int
    frames: int  # frames this record completed
    sent_at: float
    delivered: int  # bytes acknowledged when it was sent
    delivered_at: float  # time of the ack before it was sent


class SendWindow:
    """Flow control for the DATA records of one direction of one session; all times are ``now`` args."""

    def __init__(
        self,
        bitrate: float,
        handshake_rtt: float,
        handshake_bytes: int,
        now: float,
        largest_record: int = BATCH_TARGET,
    ) -> None:
        """``largest_record``: stream bytes one DATA record carries at most (at most ``MAX_BODY``)."""
        if bitrate <= 0 or handshake_rtt <= 0 or handshake_bytes <= 0:
            raise ValueError("bitrate, handshake round trip and size must be positive")
        if not 0 < largest_record <= MAX_BODY:
            raise ValueError(f"a record carries 1 to {MAX_BODY} bytes, not {largest_record}")
        self._bitrate = bitrate
        self._largest_record = largest_record
        self._cap = max(MIN_WINDOW, int(bitrate * WINDOW_CAP_S))
        self._min_rtt = handshake_rtt
        self._rtts: deque[float] = deque([handshake_rtt], maxlen=_RECENT_RTTS)
        self._rates: deque[tuple[float, float]] = deque([(now, handshake_bytes / handshake_rtt)])
        self._window = self._target()
        self._flight: deque[_InFlight] = deque()
        self._in_flight = 0
        self._acked_records = 0
        self._delivered = 0
        self._delivered_at = now
        self._frames_acked = 0
        self._pace_due = now

    @property
    def window(self) -> int:
        return self._window

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def records_in_flight(self) -> int:
        """DATA records sent and not yet acknowledged."""
        return len(self._flight)

    @property
    def acked_records(self) -> int:
        """Records of every kind the peer said it received (its last ACK's count)."""
        return self._acked_records

    def metrics(self) -> WindowMetrics:
        return WindowMetrics(self._window, self._in_flight, self._rate(), self._min_rtt, self._frames_acked)

    def record_size(self, waiting: int) -> int:
        """Bytes of the DATA stream the next record may carry now; 0 means wait for an ack."""
        room = self._window - self._in_flight
        size = min(waiting, room, self._largest_record, max(MIN_RECORD, self._window // 4))
        return size if size > 0 and size >= min(waiting, MIN_RECORD) else 0

    def pace_delay(self, now: float) -> float:
        """Seconds until pacing to ``bitrate`` lets the next DATA record go."""
        return max(0.0, self._pace_due - now)

    def on_sent(self, counter: int, size: int, frames: int, now: float) -> None:
        """Note a DATA record handed to the transport (``counter`` as sealed)."""
        if not self._flight:
            self._delivered_at = now  # measure from here, not from before an idle spell
        self._flight.append(_InFlight(counter, size, frames, now, self._delivered, self._delivered_at))
        self._in_flight += size
        self._pace_due = max(self._pace_due, now) + size / self._bitrate

    def on_ack(self, records_received: int, records_sealed: int, now: float) -> bool:
        """Apply an ACK; True if it released data. RecordError (nothing changed) if it is impossible."""
        if records_received > records_sealed:
            raise RecordError(f"ack of {records_received} records, only {records_sealed} were sent")
        if records_received < self._acked_records:
            raise RecordError(f"ack of {records_received} records went back from {self._acked_records}")
        self._acked_records = records_received
        released = 0
        newest: _InFlight | None = None
        while self._flight and self._flight[0].counter < records_received:
            newest = self._flight.popleft()
            released += newest.size
            self._frames_acked += newest.frames
        if newest is None:
            return False
        self._in_flight -= released
        self._delivered += released
        rtt = now - newest.sent_at
        self.add_rtt(rtt)
        if rtt > self._min_rtt + 2 * TARGET_QUEUE_S:
            self._rates.clear()  # queueing grew past the target: the path has slowed
        rate = (self._delivered - newest.delivered) / max(now - newest.delivered_at, 1e-6)
        while self._rates and self._rates[-1][1] <= rate:
            self._rates.pop()  # a sliding-window maximum: a lower, older sample can never be it
        self._rates.append((now, rate))
        while self._rates[0][0] < now - RATE_FILTER_S:
            self._rates.popleft()  # never the last: it was just appended
        self._delivered_at = now
        target = self._target()
        self._window = min(target, self._window + released) if target > self._window else target
        return True

    def add_rtt(self, rtt: float) -> None:
        """A round trip measured by an ack or a keepalive answer."""
        if rtt > 0:
            self._rtts.append(rtt)
            self._min_rtt = min(self._min_rtt, rtt)

    def patience(self) -> float:
        """How much longer than an idle path's keepalive timeout an answer may take now."""
        return max(max(self._rtts), self._in_flight / self._rate())

    def _rate(self) -> float:
        return self._rates[0][1]  # the maximum (see on_ack); never empty: a sample follows every clear

    def _target(self) -> int:
        return max(MIN_WINDOW, min(self._cap, int(self._rate() * (self._min_rtt + TARGET_QUEUE_S))))
