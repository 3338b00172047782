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
from itertools import chain
from operator import itemgetter
from typing import Any

from relay.bundle import Bundle, BundleId, Priority, encode_full
from relay.store_schema import StoreError

_IN_CHUNK = 500  # ids per "IN (...)" query, well under SQLite's variable limit
SETTLE_ROWS = 4096  # unsettled rows of earlier seconds that a transaction settles into the id index
SETTLE_ALL = 1 << 16  # unsettled rows settled whatever their second (65,536: an origin's second)
_ORIGIN, _SECOND = 16, 20  # a key: origin, creation second (4 bytes, big-endian), seq (2 bytes)
_LOWEST, _HIGHEST = bytes(6), b"\xff" * 6  # an origin's first and last key, past its 16 bytes
_INSERT_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"  # 10 variables: 64 rows stay under SQLite's old limit of 999
_INSERT = (
    "INSERT INTO seen (id, expires, delivered, priority, created, received_at, local, size, data, settled) "
    "VALUES "
)
# ``seen.delivered``: 0 not for this node, 1 delivered (in the inbox until the app's ack), AWAITING_APP
# handed to an application before the commit, kept by it and not by the store (no inbox copy) until
# its ack; at open such ids are forgotten (:func:`forget_awaiting`).
AWAITING_APP = 2
_ON_SEEN = " ON CONFLICT (id) WHERE settled DO NOTHING"  # a settled (indexed) id: a duplicate
# Rows per INSERT statement, widest first: a batch's rows go in statements of these widths (a
# batch of 60 in four), as one statement per row reopens its four B-trees; a few widths, so
# their statements stay in the connection's cache.
_INSERT_WIDTHS = (64, 32, 16, 8, 4, 2, 1)
_INSERTS = {width: f"{_INSERT}{', '.join([_INSERT_ROW] * width)}{_ON_SEEN}" for width in _INSERT_WIDTHS}
# A batch of rows not held (a command post's: each bundle it takes is its own), unsettled, without
# size or data: those are in the statement, not bound (see _insert)
_ID_ROW = "(?, ?, ?, ?, ?, ?, ?, NULL, NULL, 0)"
_INSERTS_ID = {width: f"{_INSERT}{', '.join([_ID_ROW] * width)}{_ON_SEEN}" for width in _INSERT_WIDTHS}
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


@dataclass(slots=True)  # not frozen: one per bundle received, and a frozen init costs ~4x more
class PutRequest:
    """One caller's put/put_many: its bundles are accepted or refused together."""

    bundles: tuple[Bundle, ...]
    now: float
    local: bool
    deliver: bool
    hold: bool
    app_has: bool = False  # delivered early to an app that acks once it keeps it: no inbox copy


_Row = tuple[bytes, int, Bundle, bytes, PutRequest]  # key, quota bytes, bundle, its encoding, request
_SIZE = itemgetter(1)  # a row's quota bytes


class RecentIds:
    """The unsettled rows of the ``seen`` table (schema 4): key -> rowid, in memory.

    A row not held here is written with ``settled = 0``, outside the partial id index ``seen_id``:
    its id is found in :attr:`rows` instead. When a row of a later second than any waiting comes
    and :data:`SETTLE_ROWS` wait, the transaction settles those of earlier seconds into the index
    (their entries written together, above an origin's earlier ones, each page once); the current
    second's stay, so a new id is usually above every settled id of its origin and needs no lookup
    in the index (:meth:`maybe_indexed`; an origin whose clock is behind the newest second gets its
    current second settled, and its new ids are looked up). Held rows are settled when written (the
    reader and every held-row statement look them up in the index). :attr:`rows` changes with the
    open transaction, which keeps an undo log: a rollback restores what was committed. The store
    reads the unsettled rows back at open (:meth:`load`), so a crash loses nothing of it. Ints and
    bytes only, no tuple per row: thousands of tuples kept alive made the garbage collector's passes
    longer.
    """

    def __init__(self) -> None:
        self.rows: dict[bytes, int] = {}  # a plain dict: admission tests every key
        self._added: list[bytes] = []  # by the open transaction
        self._removed: list[tuple[bytes, int]] = []  # by the open transaction (expired), with rowids
        self._newest = b""  # the latest second (4 bytes of a key) among the rows
        self._turned = False  # a row of a later second came: the earlier seconds' rows may settle
        self._settling: list[bytes] = []  # the rows the open transaction settles
        self.tops: dict[bytes, bytes] = {}  # per origin read so far: no key above it is on the index

    def load(self, db: sqlite3.Connection) -> None:
        """At open: the unsettled rows on disk (one pass over the table, as the open's other reads)."""
        self.rows = {
            bytes(key): rowid for key, rowid in db.execute("SELECT id, rowid FROM seen WHERE NOT settled")
        }
        self._newest = max((key[_ORIGIN:_SECOND] for key in self.rows), default=b"")

    def add(self, keys: list[bytes], rowids: list[int]) -> None:
        """Rows written unsettled by the open transaction (none: a batch's were all duplicates)."""
        if not keys:
            return
        self.rows.update(zip(keys, rowids, strict=True))
        self._added += keys
        span = _one_origin(keys)
        newest = span[1][_ORIGIN:_SECOND] if span else max(key[_ORIGIN:_SECOND] for key in keys)
        if newest > self._newest:
            self._newest, self._turned = newest, True

    def maybe_indexed(self, db: sqlite3.Connection, keys: list[bytes]) -> list[bytes]:
        """Those of ``keys`` that may be on the id index: not above their origin's top key there
        (read once per origin, one indexed MAX, then kept up to date)."""
        span = _one_origin(keys)
        if span is not None and span[0] > self._top(db, span[0][:_ORIGIN]):
            return []  # the usual batch: one sender's ids, all above what is settled
        return [key for key in keys if key <= self._top(db, key[:_ORIGIN])]

    def _top(self, db: sqlite3.Connection, origin: bytes) -> bytes:
        highest = self.tops.get(origin)
        if highest is None:
            (row,) = db.execute(
                "SELECT MAX(id) FROM seen WHERE settled AND id >= ? AND id <= ?",
                (origin + _LOWEST, origin + _HIGHEST),
            ).fetchone()
            highest = self.tops[origin] = b"" if row is None else bytes(row)
        return highest

    def indexed(self, keys: list[bytes]) -> None:
        """``keys`` go on the id index in the open transaction: their origins' tops rise (kept if it
        rolls back: a top only has to be at or above every key on the index)."""
        top = self.tops
        if not keys:
            return
        if (span := _one_origin(keys)) is not None:
            keys = [span[1]]
        for key in keys:
            origin = key[:_ORIGIN]
            highest = top.get(origin)
            if highest is not None and key > highest:
                top[origin] = key

    def mark(self) -> int:
        return len(self._added)

    def rollback_to(self, mark: int) -> None:
        """A savepoint rolled back: forget the rows added since ``mark`` (expiry is not in one)."""
        rows = self.rows
        for key in self._added[mark:]:
            del rows[key]
        del self._added[mark:]

    def expire(self, db: sqlite3.Connection, now: float) -> None:
        """The open transaction is about to delete the rows expired at ``now``: on ``seen_expiry``. A
        rollback restores those committed before it, not one it wrote itself (put, then expired)."""
        rows, added = self.rows, set(self._added)
        for key, rowid in db.execute("SELECT id, rowid FROM seen WHERE expires <= ? AND NOT settled", (now,)):
            key = bytes(key)
            if rows.pop(key, None) is None:
                continue
            if key in added:  # written by this transaction: a rollback has nothing to restore
                self._added.remove(key)
            else:
                self._removed.append((key, rowid))

    def full(self) -> bool:
        """:data:`SETTLE_ALL` rows wait: the next transaction must settle them, wherever it runs."""
        return len(self.rows) >= SETTLE_ALL

    def settle(self, db: sqlite3.Connection) -> None:
        """Before COMMIT: settle the rows of seconds before the newest into the id index when
        :data:`SETTLE_ROWS` wait, and every row when :data:`SETTLE_ALL` do (a second of ids that
        does not end, or a clock set back)."""
        rows = self.rows
        if self.full():
            settling = list(rows)
        elif self._turned and len(rows) >= SETTLE_ROWS:  # looked at once a second, not per commit
            self._turned = False
            newest = self._newest
            settling = [key for key in rows if key[_ORIGIN:_SECOND] < newest]
            if len(settling) < SETTLE_ROWS:
                return
        else:
            return
        rowids = [rows[key] for key in settling]
        for start in range(0, len(rowids), _IN_CHUNK):
            chunk = rowids[start : start + _IN_CHUNK]
            db.execute(f"UPDATE seen SET settled = 1 WHERE rowid IN ({', '.join('?' * len(chunk))})", chunk)
        self.indexed(settling)
        self._settling = settling

    def committed(self) -> None:
        rows = self.rows
        for key in self._settling:
            del rows[key]
        self._settling = []
        self._added = []
        self._removed = []

    def rolled_back(self) -> None:
        self.rollback_to(0)
        self.rows.update(self._removed)
        self._removed = []
        self._settling = []
        # a top read after the transaction's expiry deleted keys would be below them once they are
        # back: read again (one indexed MAX per origin)
        self.tops.clear()


def _one_origin(keys: list[bytes]) -> tuple[bytes, bytes] | None:
    """The lowest and highest of ``keys`` if all are of one origin (a batch from one sender, the
    usual case: a comparison in C per key, not a slice each), else None; ``keys`` not empty."""
    lowest, highest = min(keys), max(keys)
    return (lowest, highest) if lowest[:_ORIGIN] == highest[:_ORIGIN] else None


def admit(
    db: sqlite3.Connection,
    budget: Budget,
    recent: RecentIds,
    puts: list[PutRequest],
    *,
    allow_eviction: bool,
) -> list[list[bool]]:
    """Store the new, unexpired bundles of ``puts``; per request, which bundles were accepted.

    With ``allow_eviction`` (one request only) lower classes are evicted to make room, all or
    nothing; without it a request that does not fit raises :class:`SplitNeeded` before writing.
    When the batch fits even if every bundle is new (the usual case), the insert itself finds the
    duplicates of held bundles; those of bundles not held (written unsettled, outside the id index)
    are looked up in ``recent`` and with one indexed query per :data:`_IN_CHUNK` before it.
    """
    accepted = [[False] * len(put.bundles) for put in puts]
    fresh: dict[bytes, tuple[_Row, int, int]] = {}  # each new key's row and (request, bundle) index
    recent_rows = recent.rows
    unsettled: list[bytes] = []  # keys not held: written outside the index, so the insert cannot
    for i, put in enumerate(puts):  # find their duplicates
        now, hold = put.now, put.hold
        copies = hold + (put.deliver and not put.app_has)  # held, and in the inbox unless the app has it
        for j, bundle in enumerate(put.bundles):
            key = bundle.key
            if key not in fresh and key not in recent_rows and now < bundle.created + bundle.lifetime:
                data = encode_full(bundle) if copies else b""  # app_has, not held: the id alone
                fresh[key] = ((key, len(data) * copies, bundle, data, put), i, j)
                if not hold:
                    unsettled.append(key)
    rows = [row for row, _, _ in fresh.values()]
    if unsettled and (maybe := recent.maybe_indexed(db, unsettled)):
        known = _seen_among(db, maybe)
        rows = [row for row in rows if row[0] not in known]
    if budget.used + _bytes(rows) > budget.quota:  # may still fit without the duplicates
        known = _seen_among(db, [row[0] for row in rows])
        rows = [row for row in rows if row[0] not in known]
        if budget.used + _bytes(rows) > budget.quota:
            if not allow_eviction or len(puts) != 1:
                raise SplitNeeded
            _evict_and_insert(db, budget, recent, rows)
            for row in rows:
                accepted[0][fresh[row[0]][2]] = True
            return accepted
    for key in _insert(db, budget, recent, rows, unsettled=bool(unsettled)):
        _, i, j = fresh[key]
        accepted[i][j] = True
    return accepted


def _evict_and_insert(db: sqlite3.Connection, budget: Budget, recent: RecentIds, rows: list[_Row]) -> None:
    """Insert new ``rows`` one by one, evicting lower classes for each; all or nothing."""
    db.execute("SAVEPOINT accept")
    used_before, evicted_before, recent_before = budget.used, len(budget.batch_evicted), recent.mark()
    try:
        for row in rows:
            priority = row[2].priority
            make_room(db, budget, priority, row[1], for_what=f"a {priority.name} bundle")
            _insert(db, budget, recent, [row], unsettled=not row[4].hold)
    except StoreFullError:
        db.execute("ROLLBACK TO accept")
        db.execute("RELEASE accept")
        budget.used = used_before
        del budget.batch_evicted[evicted_before:]
        recent.rollback_to(recent_before)
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
    victims_by_key = [(key,) for key in victims]  # held, so settled: on the id index
    db.executemany("UPDATE seen SET size = NULL, data = NULL WHERE settled AND id = ?", victims_by_key)
    db.executemany("DELETE FROM forwarding WHERE id = ?", [(key,) for key in victims])
    budget.used -= freed
    reason = f"storage full: evicted for higher-priority traffic ({for_what})"
    budget.batch_evicted.extend(Eviction(BundleId.from_key(key), reason) for key in victims)


def _insert(
    db: sqlite3.Connection, budget: Budget, recent: RecentIds, rows: list[_Row], *, unsettled: bool
) -> list[bytes]:
    """Insert the rows whose id is not seen yet (one row each: the id, and the bundle if held), in
    statements of :data:`_INSERT_WIDTHS` rows; returns their keys. The rows inserted are those after
    the highest rowid before; a lone row (most puts: a frame received) was inserted if the count of
    changes moved, so it needs no query for that rowid. Rows not held (``unsettled``: some are) are
    written unsettled and added to ``recent``."""
    last = db.execute("SELECT COALESCE(MAX(rowid), 0) FROM seen").fetchone()[0] if len(rows) > 1 else 0
    changes = db.total_changes
    # sqlite3 binds exact ints, floats, str and bytearrays as they are, but passes bytes and None
    # through its adapter registry first (relay.sqlite's identity adapters: about 2,000 and 1,300
    # instructions more than an int): so ints, not bool or IntEnum, the key and data as bytearrays
    # (the same BLOBs; a copy costs less), and rows not held with their NULLs in the statement
    held = any(row[4].hold for row in rows)
    statements = _INSERTS if held else _INSERTS_ID
    params: list[tuple[Any, ...]] = [
        (
            bytearray(key),
            b.created + b.lifetime,
            AWAITING_APP if put.app_has else int(put.deliver),
            int(b.priority),
            b.created,
            put.now,
            int(put.local),
            # size, data and settled: a held row goes on the id index at once
            *((len(data), bytearray(data), 1) if put.hold else (None, None, 0) if held else ()),
        )
        for key, _, b, data, put in rows
    ]
    written = rows  # in the statements' order (``rows`` loses the duplicates below)
    lone = None  # the rowid of a lone row
    if len(params) == 1:
        lone = db.execute(statements[1], params[0]).lastrowid
    else:
        start, left = 0, len(params)
        for width in _INSERT_WIDTHS:
            while left >= width:
                chunk = params[start : start + width]
                db.execute(statements[width], list(chain.from_iterable(chunk)))  # flattened in C
                start += width
                left -= width
    if db.total_changes - changes != len(rows):  # some were duplicates
        if len(rows) == 1:
            rows = []
        else:
            new = {bytes(row[0]) for row in db.execute("SELECT id FROM seen WHERE rowid > ?", (last,))}
            rows = [row for row in rows if row[0] in new]
    if unsettled and rows:
        recent.add(*_unsettled(db, written, last if lone is None else lone - 1, len(rows)))
    if recent.tops:  # the held rows' keys (a duplicate's is on the index already: no harm in it)
        recent.indexed([row[0] for row in written if row[4].hold])
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


def _unsettled(
    db: sqlite3.Connection, rows: list[_Row], last: int, inserted: int
) -> tuple[list[bytes], list[int]]:
    """The keys and rowids of the unsettled rows just inserted after rowid ``last`` (``rows`` as
    written, in order). With no duplicate among them, SQLite gave them the rowids after ``last`` in
    order (one more than the largest each): no query; else they are read back."""
    if inserted == len(rows):
        unsettled = [i for i, row in enumerate(rows) if not row[4].hold]
        return [rows[i][0] for i in unsettled], [last + 1 + i for i in unsettled]
    added = db.execute("SELECT id, rowid FROM seen WHERE rowid > ? AND NOT settled", (last,)).fetchall()
    return [bytes(key) for key, _ in added], [rowid for _, rowid in added]


def forget_awaiting(db: sqlite3.Connection) -> int:
    """At open: forget the ids an application had not acknowledged keeping when the node stopped.
    No custody ACK or receipt went out for them, so their previous hop sends them again and they
    are accepted and delivered again (the application keeps them once per id); an id the
    application did keep, whose ack did not commit here, comes again only as a duplicate it
    ignores. Returns how many were forgotten."""
    return db.execute("DELETE FROM seen WHERE delivered = ?", (AWAITING_APP,)).rowcount


def _bytes(rows: list[_Row]) -> int:
    """Quota bytes ``rows`` take: the encoding once per copy (held, inbox). Summed through map in C:
    a generator is a Python frame resumed per row."""
    return sum(map(_SIZE, rows))


def _seen_among(db: sqlite3.Connection, keys: Iterable[bytes]) -> set[bytes]:
    """Those of ``keys`` (not in :class:`RecentIds`) already on the id index: one query per chunk."""
    unique = list(dict.fromkeys(keys))
    found: set[bytes] = set()
    for start in range(0, len(unique), _IN_CHUNK):
        chunk = unique[start : start + _IN_CHUNK]
        marks = ", ".join("?" * len(chunk))
        rows = db.execute(f"SELECT id FROM seen WHERE settled AND id IN ({marks})", chunk)
        found.update(bytes(row[0]) for row in rows)
    return found
