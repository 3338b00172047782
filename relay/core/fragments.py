"""Fragmentation of DATA frames for small-MTU links, with selective resend and bounded reassembly.

The sender cuts a whole DATA frame into FRAGMENTs of at most the link MTU (4 bytes of header each).
The receiver answers the last fragment, or a fragment it already holds (a sender's poll), with a
FRAGMENT_STATUS bitmap, and the sender resends only what is missing. A poll for a transfer that
already completed (same count, same last chunk) yields the whole frame again, so a lost custody
ACK costs one frame, not the whole transfer. Reassembly state is bounded in
transfers and bytes and forgotten after ``timeout`` seconds without progress, so a hostile or
broken neighbour can neither exhaust memory nor keep stale halves alive.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from relay.core.frames import FRAGMENT_HEADER_LEN, MAX_FRAGMENTS, FragmentFrame, FragmentStatusFrame

REASSEMBLY_TIMEOUT_S = 900.0  # LoRa at 1 % duty cycle may send one fragment every few minutes
MAX_TRANSFERS = 64
MAX_REASSEMBLY_BYTES = 4 << 20
COMPLETED_MEMORY = 16  # finished transfers kept to answer a sender whose custody ACK was lost
COMPLETED_MAX_BYTES = 256 << 10


class FragmentError(ValueError):
    """A fragment that contradicts its transfer or would exceed the reassembly bounds."""


def max_fragmented_size(mtu: int) -> int:
    """The largest frame that can cross a link of this MTU in fragments."""
    return (mtu - FRAGMENT_HEADER_LEN) * MAX_FRAGMENTS


def split(frame: bytes, mtu: int, transfer: int) -> list[FragmentFrame]:
    chunk = mtu - FRAGMENT_HEADER_LEN
    if chunk < 1:
        raise ValueError(f"an MTU of {mtu} bytes cannot carry fragments")
    count = -(-len(frame) // chunk)
    if count > MAX_FRAGMENTS:
        raise ValueError(f"a {len(frame)}-byte frame needs {count} fragments, more than {MAX_FRAGMENTS}")
    return [FragmentFrame(transfer, i, count, frame[i * chunk : (i + 1) * chunk]) for i in range(count)]


@dataclass
class OutgoingTransfer:
    """One fragmented frame on its way to one neighbour; ``confirmed`` is what the receiver last
    reported holding."""

    transfer: int
    fragments: list[FragmentFrame]
    confirmed: set[int] = field(default_factory=set)
    status_seen: bool = False

    def apply_status(self, status: FragmentStatusFrame) -> list[int]:
        """Record the receiver's bitmap; returns the indexes to resend. The bitmap replaces the one
        before, not adds to it: a receiver whose partial transfer timed out holds none of what it
        reported, and a sender that kept the union polled with the last fragment for ever (a bundle
        never delivered, found by the exactly-once soak at 50 % loss)."""
        if status.count != len(self.fragments):
            return []
        self.confirmed = set(status.received)
        self.status_seen = True
        return self.missing()

    def missing(self) -> list[int]:
        return [i for i in range(len(self.fragments)) if i not in self.confirmed]

    def to_resend(self) -> list[int]:
        """On a retransmission timeout: the missing ones if we know, else the last one as a poll."""
        if self.status_seen:
            return self.missing() or [len(self.fragments) - 1]
        return [len(self.fragments) - 1]


@dataclass
class _Partial:
    count: int
    chunks: dict[int, bytes]
    size: int
    touched: float


class Reassembler:
    """Partial transfers keyed by (link, peer, transfer id)."""

    def __init__(
        self,
        *,
        timeout: float = REASSEMBLY_TIMEOUT_S,
        max_transfers: int = MAX_TRANSFERS,
        max_bytes: int = MAX_REASSEMBLY_BYTES,
    ) -> None:
        self.timeout = timeout
        self.max_transfers = max_transfers
        self.max_bytes = max_bytes
        self._partials: dict[tuple[str, bytes, int], _Partial] = {}
        self._bytes = 0
        self._completed: OrderedDict[tuple[str, bytes, int], tuple[int, bytes, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._partials)

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def add(
        self, link: str, peer: bytes, fragment: FragmentFrame, now: float
    ) -> tuple[bytes | None, FragmentStatusFrame | None]:
        """Take one fragment. Returns (whole frame when complete, status to send back or None)."""
        key = (link, peer, fragment.transfer)
        done = self._completed.get(key)
        if done is not None and key not in self._partials:
            count, last_chunk, whole = done
            if fragment.count == count and fragment.index == count - 1 and fragment.chunk == last_chunk:
                return whole, None  # a poll for a transfer we finished: decode it again, ACK again
            del self._completed[key]  # the sender reused the id for a new transfer
        partial = self._partials.get(key)
        if partial is not None and partial.count != fragment.count:
            self._forget(key)  # the sender started a new transfer under a reused id
            partial = None
        if fragment.count == 1:
            return fragment.chunk, None
        if partial is None:
            self.expire(now)
            if len(self._partials) >= self.max_transfers:
                raise FragmentError(f"{self.max_transfers} reassemblies in progress; fragment refused")
            partial = self._partials[key] = _Partial(fragment.count, {}, 0, now)
        duplicate = fragment.index in partial.chunks
        if not duplicate:
            if self._bytes + len(fragment.chunk) > self.max_bytes:
                raise FragmentError(f"reassembly buffer of {self.max_bytes} bytes is full; fragment refused")
            partial.chunks[fragment.index] = fragment.chunk
            partial.size += len(fragment.chunk)
            self._bytes += len(fragment.chunk)
        partial.touched = now
        if len(partial.chunks) == partial.count:
            self._forget(key)
            whole = b"".join(partial.chunks[i] for i in range(partial.count))
            self._remember_completed(key, partial.count, partial.chunks[partial.count - 1], whole)
            return whole, None
        if duplicate or fragment.index == fragment.count - 1:
            return None, FragmentStatusFrame(fragment.transfer, partial.count, frozenset(partial.chunks))
        return None, None

    def expire(self, now: float) -> int:
        stale = [key for key, p in self._partials.items() if now - p.touched >= self.timeout]
        for key in stale:
            self._forget(key)
        return len(stale)

    def drop_peer(self, link: str, peer: bytes) -> None:
        for key in [k for k in self._partials if k[0] == link and k[1] == peer]:
            self._forget(key)
        for key in [k for k in self._completed if k[0] == link and k[1] == peer]:
            del self._completed[key]

    def next_deadline(self) -> float | None:
        if not self._partials:
            return None  # asked after every event, and most often nothing is being reassembled
        return min(p.touched for p in self._partials.values()) + self.timeout

    def _remember_completed(self, key: tuple[str, bytes, int], count: int, last: bytes, whole: bytes) -> None:
        if len(whole) > COMPLETED_MAX_BYTES // COMPLETED_MEMORY:
            return
        self._completed[key] = (count, last, whole)
        self._completed.move_to_end(key)
        while len(self._completed) > COMPLETED_MEMORY:
            self._completed.popitem(last=False)

    def _forget(self, key: tuple[str, bytes, int]) -> None:
        partial = self._partials.pop(key)
        self._bytes -= partial.size
