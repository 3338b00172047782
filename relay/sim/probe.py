"""The FLASH probe: how long a FLASH frame waited for a transmitter busy with lower-priority frames.

The promise under test (ARCHITECTURE §3): a lower class never delays a higher one on any link by
more than the one frame already on the air. For the first transmission of each FLASH bundle on
each transmitter, the probe takes the moment the engine queued the bundle for that frame's peer
(:meth:`relay.core.machine.RelayCore.routed_at`; later if the contact to the receiver came up
later) and sums the time the transmitter spent sending non-FLASH frames between then and the FLASH
frame's start (a custody ACK for FLASH is FLASH traffic, not a lower class). Time the transmitter
was idle (the engine chose to wait, e.g. for duty-cycle budget) is not counted, and neither are
retransmissions, whose timing belongs to the engine's timers. With the radio ARQ
(:mod:`relay.sim.arq`) a unicast frame holds its link to the radio's answer for lower classes only:
a FLASH frame goes alongside, so its airtime is counted, not its wait for the answer. A lower
class's radio retry on the air is not counted either (at most one frame, and the retries of a
frame go on while a FLASH waits for reasons of its own, such as its origin's share).

Measuring from the routing decision, not from when the node got the bundle, is what makes this a
test of the scheduler: a FLASH copy a node keeps until the end-to-end receipt (delivered long ago
over another link) is queued on LoRa only when its route moves there, and the hour it sat held was
routing's choice, not a wait behind other traffic (the first probe counted it: "110 frame times").
"""

from __future__ import annotations

from collections import deque

TxKey = tuple[str, str]  # (node, link)
WINDOW_S = 3600.0  # how far back a wait is measured; older busy periods are forgotten


class FlashProbe:
    def __init__(self) -> None:
        self._others: dict[TxKey, deque[tuple[float, float]]] = {}
        self._first_sent: set[tuple[TxKey, int, bytes]] = set()
        self._max_wait: dict[TxKey, float] = {}
        self._flash_frames: dict[TxKey, int] = {}

    def frame_started(
        self,
        tx: TxKey,
        incarnation: int,
        flash: bool,
        flash_key: bytes | None,
        queued_at: float | None,
        start: float,
        end: float,
    ) -> None:
        """A frame occupies ``tx`` from ``start`` to ``end``. ``flash``: it is FLASH traffic (a FLASH
        bundle, or a control frame serving one, such as its custody ACK); ``flash_key``: its FLASH
        bundle, if it carries one; ``queued_at``: when that bundle became the scheduler's to send
        (None: the engine does not hold it)."""
        if not flash:
            others = self._others.setdefault(tx, deque())
            others.append((start, end))
            while others and others[0][1] < start - WINDOW_S:
                others.popleft()
            return
        if flash_key is None:
            return
        self._flash_frames[tx] = self._flash_frames.get(tx, 0) + 1
        first = (tx, incarnation, flash_key)
        if first in self._first_sent or queued_at is None:
            return
        self._first_sent.add(first)
        eligible = max(queued_at, start - WINDOW_S)
        # A transmitter's frames end in the order they start (each starts once the last has ended),
        # so those ending after ``eligible`` are the last ones: found from the end, not by a walk
        # through the hour (1 % of a reference run), and summed in their order as before.
        recent = []
        for span in reversed(self._others.get(tx, ())):
            if span[1] <= eligible:
                break
            recent.append(span)
        waited = sum(max(0.0, min(e, start) - max(s, eligible)) for s, e in reversed(recent))
        self._max_wait[tx] = max(self._max_wait.get(tx, 0.0), waited)

    def max_wait(self, tx: TxKey) -> float:
        return self._max_wait.get(tx, 0.0)

    def flash_frames(self, tx: TxKey) -> int:
        return self._flash_frames.get(tx, 0)
