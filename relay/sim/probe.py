"""The FLASH probe: how long a FLASH frame waited for a transmitter busy with lower-priority frames.

The promise under test (ARCHITECTURE §3): a lower class never delays a higher one on any link by
more than the one frame already on the air. For the first transmission of each FLASH bundle on
each transmitter, the probe takes the moment the bundle became *eligible* there (the node got it,
or restarted holding it, or the contact to the receiver came up, whichever is last) and sums the
time the transmitter spent sending non-FLASH frames between then and the FLASH frame's start.
Time the transmitter was idle (the engine chose to wait, e.g. for duty-cycle budget) is not
counted, and neither are retransmissions, whose timing belongs to the engine's timers, nor bundles
the engine makes itself (receipts), whose moment of creation the simulator does not see.
"""

from __future__ import annotations

from collections import deque

TxKey = tuple[str, str]  # (node, link)
WINDOW_S = 3600.0  # how far back a wait is measured; older busy periods are forgotten


class FlashProbe:
    def __init__(self) -> None:
        self._acquired: dict[tuple[str, int, bytes], float] = {}
        self._ever_held: set[tuple[str, bytes]] = set()
        self._others: dict[TxKey, deque[tuple[float, float]]] = {}
        self._first_sent: set[tuple[TxKey, int, bytes]] = set()
        self._max_wait: dict[TxKey, float] = {}
        self._flash_frames: dict[TxKey, int] = {}

    def acquired(self, node: str, incarnation: int, bundle_key: bytes, now: float) -> None:
        """``node`` holds the bundle from ``now`` (the first time counts)."""
        self._acquired.setdefault((node, incarnation, bundle_key), now)
        self._ever_held.add((node, bundle_key))

    def frame_started(
        self,
        tx: TxKey,
        incarnation: int,
        node_started_at: float,
        flash_key: bytes | None,
        reachable_since: float,
        start: float,
        end: float,
    ) -> None:
        """A frame occupies ``tx`` from ``start`` to ``end``; ``flash_key`` is its FLASH bundle, if any."""
        if flash_key is None:
            others = self._others.setdefault(tx, deque())
            others.append((start, end))
            while others and others[0][1] < start - WINDOW_S:
                others.popleft()
            return
        self._flash_frames[tx] = self._flash_frames.get(tx, 0) + 1
        first = (tx, incarnation, flash_key)
        if first in self._first_sent:
            return
        self._first_sent.add(first)
        held_since = self._acquired.get((tx[0], incarnation, flash_key))
        if held_since is None:
            if (tx[0], flash_key) not in self._ever_held:
                return  # made by the engine itself (a receipt): when it became eligible is unknown
            held_since = node_started_at  # restored from the store at restart
        eligible = max(held_since, reachable_since, start - WINDOW_S)
        waited = sum(
            max(0.0, min(e, start) - max(s, eligible)) for s, e in self._others.get(tx, ()) if e > eligible
        )
        self._max_wait[tx] = max(self._max_wait.get(tx, 0.0), waited)

    def max_wait(self, tx: TxKey) -> float:
        return self._max_wait.get(tx, 0.0)

    def flash_frames(self, tx: TxKey) -> int:
        return self._flash_frames.get(tx, 0)
