"""Admission of bundles into the store: deduplication, the quota and priority-aware eviction.

These run on the store's own thread inside its open transaction (see :mod:`relay.store`), as
plain :mod:`sqlite3` calls: a batch's whole admission is one function, no thread hop per query. A refusal
(:class:`StoreFullError`) is raised before anything is written, or after rolling back to a
savepoint, so the other writes of the same group commit are unaffected.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field

from relay.bundle import Bundle, BundleId, Priority, encode_full
from relay.store_schema import StoreError

_IN_CHUNK = 500  # ids per "IN (...)" query, well under SQLite's variable limit


class StoreFullError(StoreError):
    """The store is at its quota and the new bundle may not evict what it holds."""


@dataclass(frozen=True, slots=True)
class Eviction:
    """A held bundle dropped for space, and why (its origin's status shows the reason)."""

    bundle_id: BundleId
    reason: str


class SplitNeeded(Exception):
    """Merged puts do not fit without eviction: the writer retries them one request at a time."""


@dataclass
class Budget:
    """Bytes used against the quota, kept in step with the open transaction."""

    quota: int
    used: int = 0
    high_water: int = 0
    batch_evicted: list[Eviction] = field(default_factory=list)  # evictions not yet committed


@dataclass(frozen=True, slots=True)
class PutRequest:
    """One caller's put/put_many: its bundles are accepted or refused together."""

    bundles: tuple[Bundle, ...]
    now: float
    local: bool
    deliver: bool
    hold: bool

    @property
    def copies(self) -> int:
        return int(self.hold) + int(self.deliver)


_Row = tuple[bytes, Bundle, bytes, PutRequest]


def admit(
    db: sqlite3.Connection, budget: Budget, puts: list[PutRequest], *, allow_eviction: bool
) -> list[list[bool]]:
    """Store the new, unexpired bundles of ``puts``; per request, which bundles were accepted.

    With ``allow_eviction`` (one request only) lower classes are evicted to make room, all or
    nothing; without it a request that does not fit raises :class:`SplitNeeded` before writing.
    """
    keys = [[bundle.id.key() for bundle in put.bundles] for put in puts]
    known = _seen_among(db, (key for request_keys in keys for key in request_keys))
    accepted: list[list[bool]] = []
    fresh: dict[bytes, _Row] = {}
    for put, request_keys in zip(puts, keys, strict=True):
        flags = []
        for bundle, key in zip(put.bundles, request_keys, strict=True):
            is_new = key not in known and key not in fresh and not bundle.is_expired(put.now)
            flags.append(is_new)
            if is_new:
                fresh[key] = (key, bundle, encode_full(bundle), put)
        accepted.append(flags)
    rows = list(fresh.values())
    if budget.used + sum(len(data) * put.copies for _, _, data, put in rows) <= budget.quota:
        _insert(db, budget, rows)
        return accepted
    if not allow_eviction or len(puts) != 1:
        raise SplitNeeded
    db.execute("SAVEPOINT accept")
    used_before, evicted_before = budget.used, len(budget.batch_evicted)
    try:
        for row in rows:
            size = len(row[2]) * row[3].copies
            make_room(db, budget, row[1].priority, size, for_what=f"a {row[1].priority.name} bundle")
            _insert(db, budget, [row])
    except StoreFullError:
        db.execute("ROLLBACK TO accept")
        db.execute("RELEASE accept")
        budget.used = used_before
        del budget.batch_evicted[evicted_before:]
        raise
    db.execute("RELEASE accept")
    return accepted


def make_room(
    db: sqlite3.Connection, budget: Budget, priority: Priority, size: int, *, for_what: str
) -> None:
    """Evict held bundles of classes strictly below ``priority`` (never FLASH) until ``size`` fits;
    ``for_what`` names the newcomer in the evicted bundles' reason."""
    need = budget.used + size - budget.quota
    if need <= 0:
        return
    if size > budget.quota:
        raise StoreFullError(
            f"a {priority.name} bundle of {size} bytes is larger than the whole store quota of "
            f"{budget.quota} bytes; it is refused"
        )
    victims: list[bytes] = []
    freed = 0
    sql = "SELECT id, size FROM bundles WHERE priority > ? ORDER BY priority DESC, created, rowid"
    for key, victim_size in db.execute(sql, (int(priority),)):
        victims.append(key)
        freed += int(victim_size)
        if freed >= need:
            break
    if freed < need:
        raise StoreFullError(
            f"store full: {budget.used} of {budget.quota} quota bytes used and a {priority.name} bundle "
            f"of {size} bytes may only evict lower classes, which hold {freed} bytes; it is refused "
            "(raise the quota or wait for bundles to be forwarded or expire)"
        )
    db.executemany("DELETE FROM bundles WHERE id = ?", [(key,) for key in victims])
    db.executemany("DELETE FROM forwarding WHERE id = ?", [(key,) for key in victims])
    budget.used -= freed
    reason = f"storage full: evicted for higher-priority traffic ({for_what})"
    budget.batch_evicted.extend(Eviction(BundleId.from_key(key), reason) for key in victims)


def _insert(db: sqlite3.Connection, budget: Budget, rows: list[_Row]) -> None:
    db.executemany(
        "INSERT INTO seen (id, expires, delivered) VALUES (?, ?, ?)",
        [(key, bundle.expires, int(put.deliver)) for key, bundle, _, put in rows],
    )
    held = [
        (key, int(b.priority), b.created, b.expires, put.now, int(put.local), len(data), data)
        for key, b, data, put in rows
        if put.hold
    ]
    if held:
        db.executemany(
            "INSERT INTO bundles (id, priority, created, expires, received_at, local, size, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            held,
        )
    inbox = [(key, int(b.priority), len(data), data) for key, b, data, put in rows if put.deliver]
    if inbox:
        db.executemany("INSERT INTO inbox (id, priority, size, data) VALUES (?, ?, ?, ?)", inbox)
    budget.used += sum(len(data) * put.copies for _, _, data, put in rows)


def _seen_among(db: sqlite3.Connection, keys: Iterable[bytes]) -> set[bytes]:
    """The subset of ``keys`` already in the seen table."""
    unique = list(dict.fromkeys(keys))
    found: set[bytes] = set()
    for start in range(0, len(unique), _IN_CHUNK):
        chunk = unique[start : start + _IN_CHUNK]
        marks = ", ".join("?" * len(chunk))
        rows = db.execute(f"SELECT id FROM seen WHERE id IN ({marks})", chunk)
        found.update(bytes(row[0]) for row in rows)
    return found
