"""Fetching a follow-up that has not arrived: the command post asks the gateway node to send it again.

A follow-up can be lost where its first frame was not: its bundle expired during a long partition,
a full store evicted it, a gateway restarted from a backup. Once an alarm's follow-up has been
pending for ``FETCH_AFTER_S`` the command post sends a fetch request (kind ``NG112_FETCH``, 9 bytes,
IMMEDIATE) to the node the alarm came from, naming the record's digest ``(key id, seq)``. The relay
core routes it like any bundle: over IP when an IP path exists, else in one LoRa frame, else it waits
for a path. While the follow-up stays pending it asks again once the previous request's lifetime
(``FETCH_LIFETIME_S``) is over, so requests do not pile up in a partition.

The gateway answers by sending the follow-up it kept (:meth:`ng112.store.AlarmStore.followup`) again,
to the destination it sends its alarms to, never to whoever asked: a fetch cannot disclose an alarm.
It resends one alarm's follow-up at most once per ``RESEND_MIN_S``, so a flood of requests costs
airtime once.

Layout, big endian: byte 0 version (= 1), bytes 1-4 key id, bytes 5-8 seq.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from ng112.errors import RecordError

FETCH_VERSION = 1
FETCH_AFTER_S = 60.0  # a follow-up pending this long is asked for
FETCH_LIFETIME_S = 600  # a request not delivered by then is dropped; the next one replaces it
RESEND_MIN_S = 30.0  # the gateway resends one alarm's follow-up at most this often
_FETCH = struct.Struct(">BII")

Digest = tuple[int, int]  # (key id, seq) of the record whose follow-up is wanted


def encode_fetch(digest: Digest) -> bytes:
    return _FETCH.pack(FETCH_VERSION, *digest)


def decode_fetch(data: bytes) -> Digest:
    """Decode untrusted fetch bytes; any violation raises :class:`RecordError`."""
    if len(data) != _FETCH.size:
        raise RecordError(f"fetch request of {len(data)} bytes (want {_FETCH.size})")
    version, key_id, seq = _FETCH.unpack(data)
    if version != FETCH_VERSION:
        raise RecordError(f"fetch request version {version} unsupported (want {FETCH_VERSION})")
    return key_id, seq


@dataclass
class FetchSchedule:
    """When the command post asks for a pending follow-up (pure: the caller passes the time)."""

    after_s: float = FETCH_AFTER_S
    _asked: dict[Digest, float] = field(default_factory=dict)

    def due(self, pending: Iterable[tuple[Digest, float]], now: float) -> list[Digest]:
        """Which of ``pending`` (digest, pending since) to ask for now; marks them asked."""
        wanted: list[Digest] = []
        interval = max(self.after_s, FETCH_LIFETIME_S)
        still = set()
        for digest, since in pending:
            still.add(digest)
            asked = self._asked.get(digest)
            if now - since >= self.after_s and (asked is None or now - asked >= interval):
                self._asked[digest] = now
                wanted.append(digest)
        for digest in [d for d in self._asked if d not in still]:  # completed: forget
            del self._asked[digest]
        return wanted


@dataclass
class ResendLimit:
    """At most one resend of an alarm's follow-up per ``RESEND_MIN_S`` (pure: the caller passes the time)."""

    min_s: float = RESEND_MIN_S
    _last: dict[Digest, float] = field(default_factory=dict)

    def allow(self, digest: Digest, now: float) -> bool:
        last = self._last.get(digest)
        if last is not None and now - last < self.min_s:
            return False
        self._last = {d: t for d, t in self._last.items() if now - t < self.min_s}
        self._last[digest] = now
        return True
