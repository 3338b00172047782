"""The ids a relay saw recently: a bounded memory in front of the store's ``seen`` table.

An id is kept as a 64-bit digest in a set, with the order of arrival in a ring of machine words, so
the oldest is forgotten first: about 80 bytes an id, where an ordered dict of ``BundleId`` objects
cost about 250. Two ids share a digest with probability 2^-64 per pair; a forgotten id is still
caught by the store, so this memory only saves a round trip to it.

The digest is Python's hash of the id's key bytes: SipHash under a key drawn at random for each
process, so nobody outside can aim an id at another's digest to have it taken as seen (ids cannot
be pre-empted), at a tenth of the cost of a BLAKE2b per lookup (three per frame received). The
memory takes digests, not ids: a relay asks about a bundle when it comes and adds it once it is
durable, and packing its key for each was a third of the cost of the two (one digest kept in between).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable

_U64 = (1 << 64) - 1


def id_digest(key: bytes) -> int:
    """What :class:`SeenIds` keeps of the id whose key is ``key`` (a bundle's ``key``, packed once)."""
    return hash(key) & _U64


class SeenIds:
    """The last ``capacity`` distinct ids added (as their :func:`id_digest`), oldest forgotten first."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("a seen memory needs room for at least one id")
        self._capacity = capacity
        self._ring = array("Q")  # grows to capacity as ids come: a node (re)starts without 512 KiB to zero
        self._ids: set[int] = set()
        # whether a digest is kept: the set's own method, not ``in`` through __contains__ (a Python
        # call from C, about a thousand instructions more on 3.11; asked for every DATA frame). Bound
        # to this set, which is changed in place, never replaced.
        self.has: Callable[[int], bool] = self._ids.__contains__
        self._next = 0  # the oldest, once the ring is full

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, digest: int) -> bool:
        return digest in self._ids

    def add(self, digest: int) -> None:
        if digest in self._ids:
            return
        self._ids.add(digest)
        if len(self._ring) < self._capacity:
            self._ring.append(digest)
            return
        self._ids.discard(self._ring[self._next])
        self._ring[self._next] = digest
        self._next = (self._next + 1) % self._capacity
