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
_ROWS_PER_INSERT = 100  # rows per INSERT statement: one statement per row reopens its four B-trees
_INSERT_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?)"  # 9 variables: 100 rows stay under SQLite's old limit of 999
_INSERT = (
    "INSERT INTO seen (id, expires, delivered, priority, created, received_at, local, size, data) VALUES "
)
# ``seen.delivered``: 0 not for this node, 1 delivered (in the inbox until the app's ack), AWAITING_APP
# handed to an application before the commit, kept by it and not by the store (no inbox copy) until
# its ack; at open such ids are forgotten (:func:`forget_awaiting`).
AWAITING_APP = 2
_INSERT_ONE = f"{_INSERT}{_INSERT_ROW} ON CONFLICT (id) DO NOTHING"
_INSERT_MANY = f"{_INSERT}{', '.join([_INSERT_ROW] * _ROWS_PER_INSERT)} ON CONFLICT (id) DO NOTHING"
_INSERT_INBOX = "INSERT INTO inbox (id, priority, size, data) VALUES (?, ?, ?, ?)"


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
    app_has: bool = False  # delivered early to an app that acks once it keeps it: no inbox copy

    @property
    def copies(self) -> int:
        return int(self.hold) + int(self.deliver and not self.app_has)


_Row = tuple[bytes, int, Bundle, bytes, PutRequest]  # key, quota bytes, bundle, its encoding, request


def admit(
    db: sqlite3.Connection, budget: Budget, puts: list[PutRequest], *, allow_eviction: bool
) -> list[list[bool]]:
    """Store the new, unexpired bundles of ``puts``; per request, which bundles were accepted.

    With ``allow_eviction`` (one request only) lower classes are evicted to make room, all or
    nothing; without it a request that does not fit raises :class:`SplitNeeded` before writing.
    When the batch fits even if every bundle is new (the usual case), the insert itself finds the
    duplicates: no lookup query before it.
    """
    accepted = [[False] * len(put.bundles) for put in puts]
    fresh: dict[bytes, tuple[_Row, int, int]] = {}  # each new key's row and (request, bundle) index
    for i, put in enumerate(puts):
        copies, now = put.copies, put.now
        for j, bundle in enumerate(put.bundles):
            key = bundle.id.key()
            if key not in fresh and not bundle.is_expired(now):
                data = encode_full(bundle) if copies else b""  # app_has, not held: the id alone
                fresh[key] = ((key, len(data) * copies, bundle, data, put), i, j)
    rows = [row for row, _, _ in fresh.values()]
    if budget.used + _bytes(rows) > budget.quota:  # may still fit without the duplicates
        known = _seen_among(db, fresh)
        rows = [row for row in rows if row[0] not in known]
        if budget.used + _bytes(rows) > budget.quota:
            if not allow_eviction or len(puts) != 1:
                raise SplitNeeded
            _evict_and_insert(db, budget, rows)
            for row in rows:
                accepted[0][fresh[row[0]][2]] = True
            return accepted
    for key in _insert(db, budget, rows):
        _, i, j = fresh[key]
        accepted[i][j] = True
    return accepted


def _evict_and_insert(db: sqlite3.Connection, budget: Budget, rows: list[_Row]) -> None:
    """Insert new ``rows`` one by one, evicting lower classes for each; all or nothing."""
    db.execute("SAVEPOINT accept")
    used_before, evicted_before = budget.used, len(budget.batch_evicted)
    try:
        for row in rows:
            priority = row[2].priority
            make_room(db, budget, priority, row[1], for_what=f"a {priority.name} bundle")
            _insert(db, budget, [row])
    except StoreFullError:
        db.execute("ROLLBACK TO accept")
        db.execute("RELEASE accept")
        budget.used = used_before
        del budget.batch_evicted[evicted_before:]
        raise
    db.execute("RELEASE accept")


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
    sql = (  # on the held_eviction index
        "SELECT id, size FROM seen WHERE data IS NOT NULL AND priority > ? "
        "ORDER BY priority DESC, created, rowid"
    )
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
    db.executemany("UPDATE seen SET size = NULL, data = NULL WHERE id = ?", [(key,) for key in victims])
    db.executemany("DELETE FROM forwarding WHERE id = ?", [(key,) for key in victims])
    budget.used -= freed
    reason = f"storage full: evicted for higher-priority traffic ({for_what})"
    budget.batch_evicted.extend(Eviction(BundleId.from_key(key), reason) for key in victims)


def _insert(db: sqlite3.Connection, budget: Budget, rows: list[_Row]) -> list[bytes]:
    """Insert the rows whose id is not seen yet (one row each: the id, and the bundle if held), 100
    per statement; returns their keys. The rows inserted are those after the highest rowid before;
    a lone row (most puts: a frame received) was inserted if the count of changes moved, so it needs
    no query for that rowid."""
    last = db.execute("SELECT COALESCE(MAX(rowid), 0) FROM seen").fetchone()[0] if len(rows) > 1 else 0
    changes = db.total_changes
    params = [
        (
            key,  # ints, not bool or IntEnum: sqlite3 binds exact ints without adapting them
            b.created + b.lifetime,
            AWAITING_APP if put.app_has else int(put.deliver),
            int(b.priority),
            b.created,
            put.now,
            int(put.local),
            len(data) if put.hold else None,
            data if put.hold else None,
        )
        for key, _, b, data, put in rows
    ]
    whole = len(params) - len(params) % _ROWS_PER_INSERT
    for start in range(0, whole, _ROWS_PER_INSERT):
        chunk = params[start : start + _ROWS_PER_INSERT]
        db.execute(_INSERT_MANY, [value for row in chunk for value in row])
    if len(params) == 1:
        db.execute(_INSERT_ONE, params[0])
    else:
        db.executemany(_INSERT_ONE, params[whole:])
    if db.total_changes - changes != len(rows):  # some were duplicates
        if len(rows) == 1:
            rows = []
        else:
            new = {bytes(row[0]) for row in db.execute("SELECT id FROM seen WHERE rowid > ?", (last,))}
            rows = [row for row in rows if row[0] in new]
    inbox = [
        (key, int(b.priority), len(data), data)
        for key, _, b, data, put in rows
        if put.deliver and not put.app_has
    ]
    if len(inbox) == 1:
        db.execute(_INSERT_INBOX, inbox[0])
    elif inbox:
        db.executemany(_INSERT_INBOX, inbox)
    budget.used += _bytes(rows)
    return [row[0] for row in rows]


def forget_awaiting(db: sqlite3.Connection) -> int:
    """At open: forget the ids an application had not acknowledged keeping when the node stopped.
    No custody ACK or receipt went out for them, so their previous hop sends them again and they
    are accepted and delivered again (the application keeps them once per id); an id the
    application did keep, whose ack did not commit here, comes again only as a duplicate it
    ignores. Returns how many were forgotten."""
    return db.execute("DELETE FROM seen WHERE delivered = ?", (AWAITING_APP,)).rowcount


def _bytes(rows: list[_Row]) -> int:
    """Quota bytes ``rows`` take: the encoding once per copy (held, inbox)."""
    return sum(row[1] for row in rows)


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
