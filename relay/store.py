"""The durable store: every bundle a node holds, the ids it has seen, and the local app inbox.

SQLite (plain :mod:`sqlite3`, opened by :mod:`relay.sqlite`) in WAL mode with ``synchronous=FULL``:
every COMMIT fsyncs the write-ahead log, so a committed transaction survives a killed process *and*
a power cut or kernel crash. ``NORMAL`` would survive ``kill -9`` but may lose the last commits on
power loss, and a previous hop that was told "durable" would already have dropped its copy. The
fsync is paid once per *batch*: a single writer task takes every write queued while the previous
COMMIT ran (up to ``max_batch``), hands the whole batch to the store's own thread, where one plain
function runs it in one transaction (deduplication, puts, forwarding state, inbox: one thread hop
per batch, not one per query), and resolves each caller's future only after COMMIT (group commit).
A lone put of one bundle while the thread is idle (a frame received on a quiet link) is committed on
the event loop itself: the two thread hops cost more than its fsync on an idle machine, and there is
nothing for the loop to do meanwhile; batches keep the thread, and so does a put whose caller has
work for the loop while it commits (``overlap=True``: a bundle sent here, whose frame a link hands
over during the commit, docs/relay-core.md). On the simulator's loop, which runs the thread's work
inline, an op the writer would take alone next (it waits, and no other callback is ready) commits
in its caller's turn: the same transaction without two turns of the loop.
A put of FLASH bundles only (an alarm a link took ahead of the frames waiting, or one sent here),
and the id mark an alarm sent here waits for, go in the writer's alarm lane: the next transaction
is made of them alone, ahead of the batches queued before them, so an alarm waits for the one
transaction running and not for a backlog's (over three hops of a 20,000-bundle backlog an alarm
waited 275-650 ms, most of it in these queues). The lanes take turns while both hold work, so
alarms cannot starve the rest; the other lane's turn takes only what was queued before the first
alarm waiting, so whatever was queued after an alarm (a custody ACK's delete of a bundle sent here
while its put commits) still lands after it.
So **a call that returned has been made durable**; one that raised or never returned may or may not
have been, and retrying it is safe (ids deduplicate). Reads run on the same thread between batches,
so they never see an uncommitted write. Each accepted id is one row of the ``seen`` table, holding the
bundle while it is held (:mod:`relay.store_schema`, version 2): a put writes one row, and its insert is
the duplicate check. A row not held here is written outside the id index and found in memory until
a few thousand are settled into it together (version 4, :class:`relay.store_accept.RecentIds`), so
the index's pages are not dirtied at random by every commit: every statement that looks a row up by
its id says ``settled`` (held rows always are), or goes by rowid through :class:`RecentIds`.

Times: ``now`` is passed by the caller in seconds since the Mesh112 epoch (see
:func:`relay.bundle.to_epoch`); the store reads no clock, so the simulator can drive it.

API (all methods are coroutines unless noted):

- ``Store.open(path, quota_bytes=256 MiB, *, max_batch=256)``: create or migrate, start the writer.
- ``close()``: finish queued writes, stop the writer, close the file.
- ``put(bundle, *, now, local=False, deliver=False, hold=True, overlap=False) -> bool``: accept a
  bundle; False if it is a duplicate (held, or seen and not yet expired) or already expired.
  ``deliver=True`` also puts it in the app inbox in the *same* transaction; ``hold=False`` keeps no
  forwarding copy (a bundle only for this node); ``overlap=True``: commit on the store's thread even
  alone. Raises :class:`StoreFullError` if it cannot fit (see eviction below).
- ``put_many(bundles, *, now, local=False, deliver=False, hold=True) -> list[bool]``: the same for
  several, all or nothing on :class:`StoreFullError`.
- ``put_each(items, *, now, local=False, overlap=False, app_has=()) -> list[bool | StoreError]``:
  ``(bundle, deliver, hold)`` items, each accepted or refused on its own (a refusal is returned,
  not raised), all in one group commit: the engine stores a batch of frames from its links, or a
  batch an application sends, with it. ``app_has``: ids an application already took and keeps
  itself: their id is recorded, with no inbox copy, and forgotten at open unless acked.
- ``get(bundle_id) -> Bundle | None``: a held bundle.
- ``replace(bundle) -> bool``: a neighbour's copy in place of a held copy that does not decode.
- ``delete(bundle_id, reason)``: drop the held copy (custody passed on, delivered...); the id stays seen.
  ``delete_many(bundle_ids, reason)``: the same for several, in one op.
- ``load_all() -> list[StoredBundle]``: every held bundle, highest class and oldest first, for start-up.
- ``expire(now) -> list[BundleId]``: drop held bundles past their lifetime and forget expired seen ids.
- ``next_bundle_id(origin, now_epoch_s) -> BundleId``: a fresh id for a bundle originated here, never
  reused across restarts (a block of ids is reserved by a commit before the first is returned).
  ``next_bundle_ids(origin, now_epoch_s, count) -> list[BundleId]``: ``count`` of them, one commit at most.
- ``enqueue_delivery(bundle_id)``: put a held bundle in the app inbox, at most once per id ever.
- ``pending_deliveries(limit=None, damaged=None) -> list[Bundle]``: inbox contents not yet acknowledged
  by the app (a copy that does not decode told to ``damaged`` and skipped).
  ``inbox_from_held(bundle_ids) -> list[Bundle]``: such copies written again from held copies that decode.
- ``ack_delivery(bundle_id)``: the app has recorded the bundle; it is never returned again.
  ``ack_deliveries(keys)``: the same for several, by their ids' keys, in one op (an ``app_has`` id:
  marked delivered).
- ``mark_forwarded(bundle_id, neighbour, link, state, now)``: record what a neighbour holds / was sent.
- ``forwarding(bundle_id) -> list[(neighbour, link, state, at)]``: that record, oldest first.
- ``custody_records() -> dict[BundleId, list[(neighbour, link, at)]]``: every custody ACK recorded.
- ``stats() -> StoreStats``: counts per class, bytes used, quota, high-water mark.
- ``drain_evicted() -> list[Eviction]`` (plain method): bundles evicted for space since the last
  call, each with its reason, so the in-memory queues can drop them and their origin's status can
  say "evicted" and why.

Exactly once to the app: a bundle enters the inbox in the transaction that records its id as
delivered, so neither a duplicate nor a restart can queue it twice; it leaves the inbox only in the
transaction of ``ack_delivery``. Between the app's own durable effect and its ack a crash can
happen, so after a restart the app sees the unacknowledged bundles again and must recognise the
ones it already recorded (by bundle id) before acking them. Inbox entries outlive the bundle's
lifetime: an alarm must reach the app even if the app was down.

Quota and eviction: ``quota_bytes`` bounds the encoded size of held bundles plus inbox copies. A
bundle that does not fit evicts held bundles of strictly lower classes, lowest class and oldest
first; ``FLASH`` is never evicted (it leaves only by expiry or delete). If that is not enough, the
new bundle is refused with :class:`StoreFullError` and nothing already accepted is dropped.

Disk full: when SQLite reports the disk full ("database or disk is full"), the write is refused with
:class:`DiskFullError` (a :class:`StoreFullError`), ``disk_full`` says why, and the store gives up its
reserve file (:mod:`relay.store_reserve`, ``reserve_bytes``) and retries the batch without its
non-FLASH puts; until the reserve can be made again only FLASH puts are tried.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import math
import sqlite3
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import groupby, starmap
from pathlib import Path
from typing import Any, TypeVar, cast

from relay import sqlite
from relay.bundle import (
    ID_KEY,
    MAX_SEQ,
    Bundle,
    BundleDecodeError,
    BundleId,
    Priority,
    decode_full,
    encode_full,
)
from relay.store_accept import (
    AWAITING_APP,
    Budget,
    Eviction,
    PutRequest,
    RecentIds,
    SplitNeeded,
    StoreFullError,
    admit,
    forget_awaiting,
    make_room,
)
from relay.store_reserve import DiskReserve
from relay.store_schema import StoreError, migrate

__all__ = [
    "DiskFullError",
    "Eviction",
    "Store",
    "StoreClosedError",
    "StoreError",
    "StoreFullError",
    "StoreStats",
    "StoredBundle",
    "UnknownBundleError",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
IN_CHUNK = 500  # ids per "WHERE id IN (...)" statement, under SQLite's bound-parameter limit
ID_BLOCK = 256  # seqs per second issued from memory under a committed floor (and its raises' step)
BATCH_BLOCK = 8  # a batch of n ids raises the floor to its last seq + max(ID_BLOCK, 8 n): 8 batches a commit
ID_HORIZON_S = 600  # how far ahead a commit lets ids be issued from memory; renewed halfway, off the path
HELD_IN_ORDER = (  # every held bundle for start-up: highest class, then oldest, then arrival order
    "SELECT data, received_at, local FROM seen WHERE data IS NOT NULL ORDER BY priority, created, rowid"
)


class UnknownBundleError(StoreError):
    """The bundle asked for is not held (never received, expired, evicted or deleted)."""


class StoreClosedError(StoreError):
    """The store was closed; open it again to use it."""


class DiskFullError(StoreFullError):
    """The filesystem under the store is full (SQLite: "database or disk is full"); free space there."""


@dataclass(frozen=True, slots=True)
class StoredBundle:
    bundle: Bundle
    received_at: float
    local: bool  # originated on this node


@dataclass(frozen=True, slots=True)
class StoreStats:
    held_by_priority: Mapping[Priority, int]
    inbox: int  # delivered to the app, not yet acknowledged
    seen: int  # ids remembered for deduplication
    bytes_used: int
    quota_bytes: int
    high_water_bytes: int  # the most bytes_used ever reached by this store file


_Op = Callable[[sqlite3.Connection], Any]  # runs on the store's thread, inside the batch's transaction
_Result = tuple["_Pending", Any, StoreError | None]
_Puts = tuple[PutRequest, ...]  # one caller's requests, each accepted or refused on its own
_PutResult = list[bool] | StoreError  # one request's flags, or why it was refused


def _alarms_only(requests: _Puts) -> bool:
    """Whether every bundle of these put requests is FLASH (the writer's alarm lane)."""
    return all(bundle.priority is Priority.FLASH for request in requests for bundle in request.bundles)


@dataclass(slots=True)  # not frozen: one per store write, and a frozen init costs several times more
class _Pending:
    work: _Op | _Puts  # puts are data so the writer can merge them into one insert
    future: asyncio.Future[Any]
    overlap: bool = False  # the caller has loop work while this commits: never on the loop (_lone)


class Store:
    def __init__(
        self,
        path: Path,
        db: sqlite3.Connection,
        thread: ThreadPoolExecutor,
        quota_bytes: int,
        max_batch: int,
        reserve: DiskReserve | None = None,
    ) -> None:
        """Use :meth:`open`."""
        self.path = path  # the SQLite file; applications keep their own files beside it
        self._db = db  # used on ``_thread``, or on the loop while nothing runs there (see _commit)
        # Where ``_db`` is used: BEGIN, COMMIT and ROLLBACK on one kept cursor (db.execute makes a
        # cursor and tracks it per call: 1,500 instructions of each transaction's two).
        self._control = db.cursor()
        self._thread = thread
        self._on_thread: set[object] = set()  # a token per work submitted to ``_thread`` and not finished
        self._reserve = reserve or DiskReserve(Path(), 0)
        self.disk_full: str | None = None  # why writes are refused for want of disk space, if they are
        self._budget = Budget(quota_bytes)
        self._recent = RecentIds()  # used where ``_db`` is
        # whether the forwarding table may hold rows, where ``_db`` is used: a relay that hands every
        # bundle on along a route records none, and its deletes skip that table's statement
        self._forwarding_rows = True
        self._freed_bytes = 0  # counted by the SQL function freed() (see _freed)
        self._max_batch = max_batch
        self._closed = False
        # The writer's queue (None: stop), and the future it waits on while the queue is empty: a
        # deque and one future, not an asyncio.Queue, whose get and put each look the loop up.
        self._queue: deque[_Pending | None] = deque()
        # The alarm lane: puts of FLASH bundles only (and their ids' marks), each with how many
        # items had entered ``_queue`` when it came. What was queued after an alarm commits after
        # it (a custody ACK's delete of a bundle sent while it commits lands after its put).
        self._alarms: deque[tuple[_Pending, int]] = deque()
        self._queued_in = 0  # items ever appended to ``_queue``
        self._queued_out = 0  # items ever taken from it
        self._wake: asyncio.Future[None] | None = None
        # The simulator's loop tells whether any callback is ready (_writer_next_alone); others do not.
        self._nothing_ready: Callable[[], bool] | None = getattr(
            asyncio.get_running_loop(), "nothing_ready", None
        )
        self._evicted: list[Eviction] = []
        self._writer: asyncio.Task[None] | None = None
        self.evictions = 0  # bundles evicted for space since the store opened (for metrics)
        self._ids: dict[bytes, _Ids] = {}  # origins this store issued ids for since it opened
        # No seen id expires before this (a lower bound: lowered when a put is queued, set from the
        # file by an expire), so an expire with nothing due skips its transaction.
        self._first_expiry = -math.inf
        self._id_lock = asyncio.Lock()

    @classmethod
    async def open(
        cls, path: Path, quota_bytes: int = 256 << 20, *, max_batch: int = 256, reserve_bytes: int = 1 << 20
    ) -> Store:
        """Open (creating or migrating) the store file at ``path`` and start its writer.

        ``reserve_bytes`` of disk are held in ``<path>.reserve`` for FLASH on a full disk.
        """
        if quota_bytes <= 0 or max_batch <= 0:
            raise ValueError("quota_bytes and max_batch must be positive")
        reserve = DiskReserve(Path(f"{path}.reserve"), reserve_bytes)
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"store:{Path(path).name}")
        loop = asyncio.get_running_loop()
        try:
            db = await loop.run_in_executor(
                thread,
                functools.partial(sqlite.connect_sync, Path(path), autocommit=True, check_same_thread=False),
            )
        except BaseException:
            thread.shutdown(wait=False)
            raise
        store = cls(Path(path), db, thread, quota_bytes, max_batch, reserve)
        db.create_function("freed", 1, store._freed)
        try:
            await store._call(migrate)
            forgotten = await store._call(forget_awaiting)
            if forgotten:
                log.info("store: %d ids an application had not acknowledged keeping are forgotten", forgotten)
            if not reserve.restore():
                store.disk_full = (
                    f"disk full: no room for the {reserve_bytes}-byte FLASH reserve beside {path}"
                )
                log.warning("store: %s; only FLASH is taken until space is freed", store.disk_full)
            store._budget.used = await store._call(_count_used)
            store._forwarding_rows = await store._call(_any_forwarding)
            high = await store._call(
                lambda db: db.execute("SELECT value FROM meta WHERE key = 'high_water_bytes'").fetchone()[0]
            )
            store._budget.high_water = max(int(high), store._budget.used)
            store._first_expiry = await store._call(_first_expiry)
            await store._call(store._recent.load)
        except BaseException:
            await store._call(sqlite3.Connection.close)
            thread.shutdown(wait=False)
            raise
        store._writer = asyncio.create_task(store._run_writer(), name=f"store-writer:{path}")
        return store

    async def close(self) -> None:
        """Finish the writes already queued, record the last ids issued, then close the file."""
        if self._closed:
            return
        async with self._id_lock:
            for origin, ids in self._ids.items():
                try:
                    await self._submit(_id_write(origin, ids.closing()))
                except StoreError as exc:  # a full disk: the committed mark covers every id issued
                    log.warning("store: last id issued not recorded at close (%s); none is reused", exc)
        self._closed = True
        self._put(None)
        if self._writer is not None:
            await self._writer
        await self._call(sqlite3.Connection.close)
        self._thread.shutdown(wait=False)

    # -- writes (group-committed) -------------------------------------------------------------

    async def put(
        self,
        bundle: Bundle,
        *,
        now: float,
        local: bool = False,
        deliver: bool = False,
        hold: bool = True,
        overlap: bool = False,
    ) -> bool:
        """Accept one bundle durably; False if duplicate or expired. ``overlap``: the caller has work
        for the event loop while this commits, so it is committed on the store's thread even alone."""
        request = PutRequest((bundle,), now, local, deliver, hold)
        [result] = cast(list[_PutResult], await self._enqueue((request,), overlap=overlap))
        if isinstance(result, StoreError):
            raise result
        return result[0]

    async def put_many(
        self,
        bundles: Sequence[Bundle],
        *,
        now: float,
        local: bool = False,
        deliver: bool = False,
        hold: bool = True,
    ) -> list[bool]:
        """Accept several bundles in one transaction; all or nothing if the store is full."""
        [result] = cast(
            list[_PutResult], await self._enqueue((PutRequest(tuple(bundles), now, local, deliver, hold),))
        )
        if isinstance(result, StoreError):
            raise result
        return result

    async def put_each(
        self,
        items: Sequence[tuple[Bundle, bool, bool]],
        *,
        now: float,
        local: bool = False,
        overlap: bool = False,
        app_has: Collection[BundleId] = (),
    ) -> list[bool | StoreError]:
        """Accept ``(bundle, deliver, hold)`` items (from neighbours, or ``local``: originated here) in
        one group commit, each on its own: per item True (accepted), False (duplicate or expired) or
        the :class:`StoreError` that refused it. One future for the whole batch, not one per bundle.
        ``overlap``: as for :meth:`put`. ``app_has``: ids of delivered, not held items an application
        already took and acks once it keeps them: their id is recorded without an inbox copy, and
        forgotten at the next open unless acknowledged (docs/store.md, "Kept by the application")."""
        requests = tuple(  # a list comprehension, then its tuple: a generator resumed per item costs more
            [
                # an empty app_has (most batches) is not asked: the id would be hashed to look
                PutRequest((bundle,), now, local, deliver, hold, bool(app_has) and bundle.id in app_has)
                for bundle, deliver, hold in items
            ]
        )
        results = cast(list[_PutResult], await self._enqueue(requests, overlap=overlap))
        return [result if isinstance(result, StoreError) else result[0] for result in results]

    async def replace(self, bundle: Bundle) -> bool:
        """Put ``bundle`` in place of its held copy, which does not decode (the file is damaged): that
        row only, in one transaction, the rest of it as it was (its id stays seen, its inbox copy
        and delivery mark untouched: an application does not get it twice). False if it is no
        longer held."""
        key, data = bundle.key, encode_full(bundle)

        def op(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "SELECT size FROM seen WHERE settled AND id = ? AND data IS NOT NULL", (key,)
            ).fetchone()
            if row is None:
                return False
            db.execute("UPDATE seen SET size = ?, data = ? WHERE settled AND id = ?", (len(data), data, key))
            self._budget.used += len(data) - int(row[0])
            return True

        return await self._submit(op)

    async def delete(self, bundle_id: BundleId, reason: str) -> None:
        """Drop the held copy of a bundle; its id stays seen until expiry so it is not taken again."""
        await self.delete_many([bundle_id], reason)

    async def delete_many(self, bundle_ids: Sequence[BundleId], reason: str) -> None:
        """:meth:`delete` for several in one op of a group commit: a custody ACK hands over up to
        255 bundles, and one op costs one future, not one per bundle. Ids not held are skipped.
        Each id's origin must be a node id (16 bytes, as every id decoded from a frame or held is):
        the key is packed in C with a fixed width, so a shorter origin would be padded, not refused.
        One UPDATE per :data:`IN_CHUNK` ids (it counts the bytes it frees, :meth:`_freed`), and a
        DELETE of their forwarding records while there may be any, not an UPDATE and a DELETE per
        bundle (a sender deletes every bundle it hands on)."""

        def op(db: sqlite3.Connection) -> None:
            keys = list(starmap(ID_KEY.pack, bundle_ids))  # ids of held bundles: origins checked
            deleted = 0
            for start in range(0, len(keys), IN_CHUNK):
                # bytearrays: bound as the same blobs, without sqlite3's adapter lookup per bytes
                # parameter (relay/sqlite.py), and each key is bound two or three times
                chunk = [bytearray(key) for key in keys[start : start + IN_CHUNK]]
                where = f"WHERE id IN ({','.join('?' * len(chunk))})"
                held = f"{where} AND settled AND data IS NOT NULL"  # held rows are settled
                self._freed_bytes = 0
                cleared = db.execute(f"UPDATE seen SET size = freed(size), data = NULL {held}", chunk)
                deleted += cleared.rowcount
                self._budget.used -= self._freed_bytes
                # those of an id not held serve nothing
                if self._forwarding_rows and db.execute(f"DELETE FROM forwarding {where}", chunk).rowcount:
                    self._forwarding_rows = _any_forwarding(db)
            log.debug("deleted %d bundles: %s", deleted, reason)

        if bundle_ids:
            await self._submit(op)

    def _freed(self, size: int | None) -> None:
        """The SQL function ``freed(size)`` (on the store's connection): adds a held row's size to
        :attr:`_freed_bytes` as the UPDATE that clears the row runs it, and gives NULL, the size of
        a row no longer held. One statement per chunk of a delete, not a SELECT of the sizes' sum
        and then the UPDATE: each looked every id up (a rollback counts the budget again anyway)."""
        if size is not None:
            self._freed_bytes += size

    async def expire(self, now: float) -> list[BundleId]:
        """Delete held bundles whose lifetime has ended and forget seen ids past expiry. Without a
        commit when no seen id is due yet (a node expires every minute, and most minutes nothing);
        an expire called while another runs returns at once."""
        if self._first_expiry > now:
            return []
        self._first_expiry = math.inf  # puts queued from here on lower it (_enqueue)

        def op(db: sqlite3.Connection) -> tuple[list[BundleId], float]:
            rows = db.execute(
                "SELECT id, size FROM seen WHERE expires <= ? AND data IS NOT NULL", (now,)
            ).fetchall()
            db.executemany("DELETE FROM forwarding WHERE id = ?", [(row[0],) for row in rows])
            self._recent.expire(db, now)
            db.execute("DELETE FROM seen WHERE expires <= ?", (now,))  # held or not, settled or not
            self._budget.used -= sum(int(row[1]) for row in rows)
            return [BundleId.from_key(row[0]) for row in rows], _first_expiry(db)

        try:
            expired, first = await self._submit(op)
        except BaseException:
            self._first_expiry = -math.inf  # not known: the next expire looks
            raise
        self._first_expiry = min(self._first_expiry, first)
        return expired

    async def next_bundle_id(self, origin: bytes, now_epoch_s: int, *, urgent: bool = False) -> BundleId:
        """A fresh id for a bundle this node originates: never reused, even after ``kill -9``.

        ``created`` is ``now_epoch_s`` unless the clock went back or 65536 ids were taken in this
        second; then it continues from the last id issued (possibly a second ahead of the clock).
        Ids are issued from memory under a committed mark (:class:`_IdMark`); after a crash a
        second's ids start above the floor the mark recorded, a clean :meth:`close` records the last.
        ``urgent``: the id is for an alarm, so a commit it waits for takes the alarm lane (the
        first id after opening does: a responder's SOS right after a restart waited behind the
        backlog's writes), unless an earlier mark of ``origin`` is still queued (marks commit in order).
        """
        return (await self.next_bundle_ids(origin, now_epoch_s, 1, urgent=urgent))[0]

    async def next_bundle_ids(
        self, origin: bytes, now_epoch_s: int, count: int, *, urgent: bool = False
    ) -> list[BundleId]:
        """``count`` fresh ids in order, as :meth:`next_bundle_id` issues them, with one commit at most.

        Ids are issued from memory while the committed :class:`_IdMark` covers them; one it does not
        cover waits for a commit raising the floor (to its seq + ``max(ID_BLOCK, BATCH_BLOCK * count)``,
        so a sender of batches pays one per :data:`BATCH_BLOCK` of them) or opening a new window (the
        first id after :data:`ID_HORIZON_S` of silence, or after opening). The window is renewed off
        the path (:meth:`_renew`), so a sender silent for less than half of it pays no commit."""
        async with self._id_lock:
            if self._closed:  # close() recorded the last id issued: one issued now would be reused
                raise StoreClosedError("the store is closed")
            state = self._ids.get(origin)
            if state is None:
                mark = await self._call(functools.partial(_id_read, origin=origin))
                state = self._ids[origin] = _Ids(mark.last, mark, mark)
            issued = []
            covered = True
            last = state.last
            for _ in range(count):
                last = state.prior.next_after(last, now_epoch_s)
                issued.append(BundleId(origin, *last))
                covered = covered and state.issuable(last)
            if not covered:
                ahead = ID_BLOCK if count == 1 else max(ID_BLOCK, BATCH_BLOCK * count)
                floor = state.floor_at(last[0], min(last[1] + ahead, MAX_SEQ + 1))
                covering = _IdMark(max(state.mark.last, (last[0] - 1, MAX_SEQ)), last[0], floor)
                # shielded: a cancelled caller's cover still updates the mark when it commits
                cover = self._id_op(
                    state, _id_cover(origin, last, floor), covering, urgent=urgent and not state.pending
                )
                await asyncio.shield(cover)
            state.last = last
            if last[0] > state.mark.horizon - ID_HORIZON_S // 2 and not state.pending:
                self._renew(origin, state)
            return issued

    async def prepare_ids(self, origin: bytes, now_epoch_s: int) -> None:
        """Read ``origin``'s mark and commit a window of ids now, at start, while nothing else is
        queued: the first id asked within :data:`ID_HORIZON_S` is then issued from memory. Without
        it the first id waited for that read and a commit behind whatever the store was writing (a
        responder's SOS right after a restart waited 33-247 ms behind its backlog's writes). One id
        is taken here and never issued (ids only need to be unique). A write refused (a full
        disk) is logged, not raised: the node still starts, and its first id asks again."""
        try:
            await self.next_bundle_ids(origin, now_epoch_s, 1)
        except StoreFullError as exc:
            log.warning("store: no window of ids committed at start (%s); the first send commits one", exc)
            return
        if self._ids[origin].pending:  # the window's renewal, queued to ride with the next write
            await self._submit(_nothing)  # after it, in its lane: done when the renewal is

    def _renew(self, origin: bytes, state: _Ids) -> None:
        """Queue the next window, not awaited. The writer is not woken: the renewal commits with the
        bundle put right after the id, and a writer woken before it would start that commit on the
        store's thread while the loop seals and sends the bundle's frame (the thread contends for
        the GIL)."""
        created = state.last[0]
        # an earlier run's window still ahead: its seconds' ids start at its floor, so room above it
        # (its floor alone made the next second's first id wait for a commit after each renewal)
        earlier = state.prior.floor if created + 1 <= state.prior.horizon else 0
        floor = min(earlier + ID_BLOCK, MAX_SEQ + 1)
        renewing = _IdMark(max(state.mark.last, (created, -1)), created + ID_HORIZON_S, floor)
        self._id_op(state, _id_renew(origin, created, floor), renewing, wake=False)

    def _id_op(
        self,
        state: _Ids,
        op: Callable[[sqlite3.Connection], _IdMark],
        covering: _IdMark,
        *,
        wake: bool = True,
        urgent: bool = False,
    ) -> asyncio.Future[_IdMark]:
        """Queue an op that rewrites an origin's mark. Until it commits, an id is issued from memory
        only if ``covering`` (what the op's row covers at least) covers it too: the op may lower
        the floor, and whether it commits is not known yet. ``urgent``: in the alarm lane."""
        future: asyncio.Future[_IdMark] = asyncio.get_running_loop().create_future()
        pending = _Pending(op, future)
        if urgent:
            self._alarm(pending)
        elif wake:
            self._put(pending)
        else:
            self._queue.append(pending)
            self._queued_in += 1
        state.pending.append(covering)
        future.add_done_callback(functools.partial(state.committed, covering))
        return future

    async def enqueue_delivery(self, bundle_id: BundleId) -> None:
        """Put a held bundle in the app inbox; a no-op if this id was ever queued for the app."""

        def op(db: sqlite3.Connection) -> None:
            key = bundle_id.key()
            row = db.execute(
                "SELECT priority, size, data, delivered FROM seen "
                "WHERE settled AND id = ? AND data IS NOT NULL",
                (key,),
            ).fetchone()
            if row is None:
                raise UnknownBundleError(f"bundle {bundle_id} is not held here, so it cannot be delivered")
            priority, size, data, delivered = row
            if not delivered:
                make_room(  # may refuse; nothing written yet
                    db, self._budget, Priority.FLASH, int(size), for_what="a delivery to this node's apps"
                )
                db.execute("UPDATE seen SET delivered = 1 WHERE settled AND id = ?", (key,))
                db.execute(
                    "INSERT INTO inbox (id, priority, size, data) VALUES (?, ?, ?, ?)",
                    (key, priority, size, data),
                )
                self._budget.used += int(size)

        await self._submit(op)

    async def ack_delivery(self, bundle_id: BundleId) -> None:
        """The app has durably taken the bundle: remove it from the inbox for good."""
        await self.ack_deliveries([bundle_id.key()])

    async def ack_deliveries(self, keys: Sequence[bytes]) -> None:
        """:meth:`ack_delivery` for several bundles, named by their ids' keys (those bundles and
        deliveries keep: not packed again), in one op: a sum and a delete per :data:`IN_CHUNK` ids,
        not a query and a delete per id (a command post acks every bundle).
        An id put with ``app_has`` is marked delivered, so the next open keeps it as seen: by rowid
        while its row is unsettled (:class:`RecentIds`), on the id index once settled. Those have no
        inbox copy: with the inbox empty (a command post's, taking a backlog) its two statements,
        which find nothing, are not run."""
        keys = list(dict.fromkeys(keys))  # once each

        def op(db: sqlite3.Connection) -> None:
            recent = self._recent.rows
            inbox = db.execute("SELECT EXISTS (SELECT 1 FROM inbox)").fetchone()[0]
            for start in range(0, len(keys), IN_CHUNK):
                chunk = keys[start : start + IN_CHUNK]
                where = f"WHERE id IN ({', '.join('?' * len(chunk))})"
                size = 0
                if inbox:
                    (size,) = db.execute(
                        f"SELECT COALESCE(SUM(size), 0) FROM inbox {where}", chunk
                    ).fetchone()
                    db.execute(f"DELETE FROM inbox {where}", chunk)
                rowids = [rowid for key in chunk if (rowid := recent.get(key)) is not None]
                awaiting = f"AND delivered = {AWAITING_APP}"
                if rowids:  # RecentIds forgets a row when it is deleted: its rowid is that row's
                    marks = ", ".join("?" * len(rowids))
                    db.execute(f"UPDATE seen SET delivered = 1 WHERE rowid IN ({marks}) {awaiting}", rowids)
                if len(rowids) < len(chunk):
                    db.execute(f"UPDATE seen SET delivered = 1 {where} AND settled {awaiting}", chunk)
                self._budget.used -= int(size)

        await self._submit(op)

    async def mark_forwarded(
        self, bundle_id: BundleId, neighbour: bytes, link: str, state: str, now: float
    ) -> None:
        """Record the state of this bundle with a neighbour on a link (e.g. "sent", "custody")."""
        params = (bundle_id.key(), neighbour, link, state, now)
        sql = (
            "INSERT INTO forwarding (id, neighbour, link, state, at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (id, neighbour, link) DO UPDATE SET state = excluded.state, at = excluded.at"
        )

        def op(db: sqlite3.Connection) -> None:
            db.execute(sql, params)
            self._forwarding_rows = True

        await self._submit(op)

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, bundle_id: BundleId) -> Bundle | None:
        """The held bundle with this id, or None."""
        rows = await self._read(
            "SELECT data FROM seen WHERE settled AND id = ? AND data IS NOT NULL", (bundle_id.key(),)
        )
        return _decode(rows[0][0]) if rows else None

    async def load_all(self) -> list[StoredBundle]:
        """Every held bundle, highest class first and oldest first within a class."""
        rows = await self._read(HELD_IN_ORDER, ())
        return [
            StoredBundle(_decode(data), float(received_at), bool(local)) for data, received_at, local in rows
        ]

    async def pending_deliveries(
        self, limit: int | None = None, *, damaged: Callable[[BundleId, str], None] | None = None
    ) -> list[Bundle]:
        """Bundles in the app inbox not yet acknowledged, highest class first, then in arrival order.
        A copy that does not decode (the file is damaged) is told to ``damaged`` with why and
        skipped, so one bad row does not keep the node from starting; with no ``damaged``, it
        raises :class:`StoreError`."""
        rows = await self._read(
            "SELECT id, data FROM inbox ORDER BY priority, seq LIMIT ?", (-1 if limit is None else limit,)
        )
        if damaged is None:
            return [_decode(data) for _, data in rows]
        bundles = []
        for key, data in rows:
            try:
                bundles.append(decode_full(data))
            except BundleDecodeError as exc:
                damaged(BundleId.from_key(key), str(exc))
        return bundles

    async def inbox_from_held(self, bundle_ids: Sequence[BundleId]) -> list[Bundle]:
        """Write the inbox copies of ``bundle_ids``, which do not decode, again from their held
        copies where one is held and decodes (a group's bundle is delivered here and kept to pass
        on), in one transaction; the bundles so written."""
        keys = [bundle_id.key() for bundle_id in bundle_ids]

        def op(db: sqlite3.Connection) -> list[Bundle]:
            written = []
            for key in keys:
                row = db.execute(
                    "SELECT data FROM seen WHERE settled AND id = ? AND data IS NOT NULL", (key,)
                ).fetchone()
                if row is None:
                    continue
                try:
                    bundle = decode_full(row[0])
                except BundleDecodeError:
                    continue  # damaged too: start-up drops it as a damaged held bundle
                db.execute("UPDATE inbox SET data = ? WHERE id = ?", (row[0], key))
                written.append(bundle)
            return written

        return await self._submit(op)

    async def forwarding(self, bundle_id: BundleId) -> list[tuple[bytes, str, str, float]]:
        """What is recorded about this bundle per neighbour and link, oldest first."""
        rows = await self._read(
            "SELECT neighbour, link, state, at FROM forwarding WHERE id = ? ORDER BY at", (bundle_id.key(),)
        )
        return [(bytes(n), str(link), str(state), float(at)) for n, link, state, at in rows]

    async def custody_records(self) -> dict[BundleId, list[tuple[bytes, str, float]]]:
        """Every custody ACK recorded, per bundle: (neighbour, link, at), oldest first (start-up
        reads them in one query, not one per held bundle)."""
        rows = await self._read(
            "SELECT id, neighbour, link, at FROM forwarding WHERE state = 'custody' ORDER BY at", ()
        )
        records: dict[BundleId, list[tuple[bytes, str, float]]] = {}
        for key, neighbour, link, at in rows:
            records.setdefault(BundleId.from_key(key), []).append((bytes(neighbour), str(link), float(at)))
        return records

    async def stats(self) -> StoreStats:
        """Counts per class, inbox and seen sizes, bytes used against the quota, high-water mark."""

        def op(db: sqlite3.Connection) -> tuple[list[Any], int, int]:
            per_class = db.execute(
                "SELECT priority, COUNT(*) FROM seen WHERE data IS NOT NULL GROUP BY priority"
            ).fetchall()
            inbox = db.execute("SELECT COUNT(*) FROM inbox").fetchone()[0]
            seen = db.execute("SELECT COUNT(*) FROM seen").fetchone()[0]
            return per_class, int(inbox), int(seen)

        if self._closed:
            raise StoreClosedError("the store is closed")
        per_class, inbox, seen = await self._call(op)
        held = {priority: 0 for priority in Priority}
        held.update({Priority(p): int(n) for p, n in per_class})
        return StoreStats(held, inbox, seen, self._budget.used, self._budget.quota, self._budget.high_water)

    def drain_evicted(self) -> list[Eviction]:
        """Bundles evicted for space since the last call, with why (committed evictions only)."""
        evicted, self._evicted = self._evicted, []
        return evicted

    # -- internals -----------------------------------------------------------------------------

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(db)`` on the store's thread (the connection's place but for :meth:`_lone`
        puts); tracked until it finishes there, even if the caller is cancelled. Through the loop's
        ``run_in_executor``, which the simulator's loop runs inline (relay/sim/loop.py): there it
        is called here, without the future, the shield and the tracking (3,200 calls a run)."""
        if self._nothing_ready is not None:  # the simulator's loop
            return fn(self._db)
        token = object()
        self._on_thread.add(token)

        def tracked(db: sqlite3.Connection) -> T:
            try:
                return fn(db)
            finally:
                self._on_thread.discard(token)  # set operations are atomic; the loop only reads it

        work = asyncio.get_running_loop().run_in_executor(self._thread, tracked, self._db)
        return await asyncio.shield(work)  # a cancelled caller leaves queued work to run (and untrack)

    async def _read(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        if self._closed:
            raise StoreClosedError("the store is closed")
        return await self._call(lambda db: db.execute(sql, params).fetchall())

    async def _submit(self, op: Callable[[sqlite3.Connection], T]) -> T:
        return cast(T, await self._enqueue(op))

    async def _enqueue(self, work: _Op | _Puts, *, overlap: bool = False) -> Any:
        if self._closed:
            raise StoreClosedError("the store is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if isinstance(work, tuple):
            for request in work:
                for bundle in request.bundles:
                    expires = bundle.created + bundle.lifetime
                    if expires < self._first_expiry:
                        self._first_expiry = expires
        pending = _Pending(work, future, overlap)
        if self._writer_next_alone():
            await self._write([pending])  # never suspends here: the loop runs _call inline
        elif isinstance(work, tuple) and _alarms_only(work):
            self._alarm(pending)
        else:
            self._put(pending)
        return await future

    def _writer_next_alone(self) -> bool:
        """Whether the writer, woken now, would run next and take only the op being queued: it
        waits with nothing queued and the loop has no other callback ready. Asked only on a loop
        that runs blocking calls inline (the simulator's, relay/sim/loop.py): there, committing
        the op in its caller's turn makes the same transaction without two turns of the loop
        (4,700 a reference run). Elsewhere the store's thread keeps the loop free meanwhile."""
        if self._nothing_ready is None or self._queue or self._alarms:
            return False
        wake = self._wake
        return wake is not None and not wake.done() and self._nothing_ready()

    def _put(self, item: _Pending | None) -> None:
        self._queue.append(item)
        self._queued_in += 1
        self._wake_writer()

    def _alarm(self, item: _Pending) -> None:
        self._alarms.append((item, self._queued_in))
        self._wake_writer()

    def _wake_writer(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def _run_writer(self) -> None:
        """Group commit: everything queued while the last COMMIT ran goes into the next transaction;
        the alarm lane's first (see the module docstring). While both lanes hold work they take
        turns, the other lane giving only what was queued before the first alarm waiting."""
        queue, alarms = self._queue, self._alarms
        last_alarms = False
        while True:
            while not queue and not alarms:
                self._wake = asyncio.get_running_loop().create_future()
                await self._wake
            room = self._max_batch
            if alarms:
                room = min(room, alarms[0][1] - self._queued_out)  # queued before the first alarm
                if room <= 0 or not last_alarms:
                    last_alarms = True
                    await self._write(self._alarm_batch())
                    continue
            last_alarms = False
            batch: list[_Pending] = []
            while len(batch) < room and queue:
                item = queue.popleft()
                self._queued_out += 1
                if item is None:  # stop, once the writes queued before it are done
                    if batch:
                        await self._write(batch)
                    while alarms:
                        await self._write(self._alarm_batch())
                    return
                batch.append(item)
            await self._write(batch)

    def _alarm_batch(self) -> list[_Pending]:
        """The alarm lane's next transaction: up to ``max_batch`` of its writes, oldest first."""
        alarms = self._alarms
        return [alarms.popleft()[0] for _ in range(min(len(alarms), self._max_batch))]

    async def _write(self, batch: list[_Pending]) -> None:
        """Commit ``batch``; on a full disk give up the reserve and retry it with FLASH puts only."""
        if self.disk_full is not None and self._reserve.restore():
            log.warning("store: disk space is back; the FLASH reserve is held again")
            self.disk_full = None
        if self.disk_full is not None:
            batch = self._flash_only(batch, DiskFullError(self.disk_full))
        error = await self._commit(batch) if batch else None
        if isinstance(error, DiskFullError) and self._reserve.release():
            log.warning(
                "store: %s; gave up the %d-byte reserve, only FLASH is taken until space is freed",
                error,
                self._reserve.size,
            )
            batch = self._flash_only(batch, error)
            error = await self._commit(batch) if batch else None
        if error is not None:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)

    @staticmethod
    def _flash_only(batch: list[_Pending], error: StoreError) -> list[_Pending]:
        """Refuse the puts of ``batch`` that hold anything but FLASH; the rest is returned."""
        kept = []
        for item in batch:
            work = item.work
            if isinstance(work, tuple) and any(
                b.priority is not Priority.FLASH for request in work for b in request.bundles
            ):
                if not item.future.done():
                    item.future.set_exception(error)
            else:
                kept.append(item)
        return kept

    async def _commit(self, batch: list[_Pending]) -> StoreError | None:
        """Run ``batch`` in one transaction on the store's thread, then resolve its futures here (on
        the event loop); the error if it was rolled back."""
        if self._lone(batch):
            outcome = self._transaction(batch, self._db, settle=False)  # here: see the module docstring
        else:
            outcome = await self._call(functools.partial(self._transaction, batch))
        if isinstance(outcome, StoreError):
            return outcome
        self._evicted.extend(self._budget.batch_evicted)  # here, not on the thread: drain_evicted swaps it
        self.evictions += len(self._budget.batch_evicted)
        for item, value, refusal in outcome:
            if item.future.done():  # the caller was cancelled; the write stands
                continue
            if refusal is None:
                item.future.set_result(value)
            else:
                item.future.set_exception(refusal)
        return None

    def _lone(self, batch: list[_Pending]) -> bool:
        """A put of one bundle, with nothing running or waiting on the store's thread (no read can
        see its transaction uncommitted: the loop is busy with it until COMMIT), whose caller has
        nothing for the loop to do meanwhile. Not when every unsettled id must be settled (a node
        whose every write is a lone put would never settle them otherwise)."""
        if len(batch) != 1 or self._on_thread or batch[0].overlap or self._recent.full():
            return False
        work = batch[0].work
        return isinstance(work, tuple) and len(work) == 1 and len(work[0].bundles) == 1

    def _transaction(
        self, batch: list[_Pending], db: sqlite3.Connection, *, settle: bool = True
    ) -> list[_Result] | StoreError:
        """The batch's whole work, on the store's thread (or the loop, :meth:`_lone`): BEGIN,
        every op, COMMIT. ``settle``: settle unsettled ids if due (not on the loop: thousands of
        rows would hold it for milliseconds; the next transaction on the thread does)."""
        results: list[_Result] = []
        self._budget.batch_evicted = []
        try:
            self._control.execute("BEGIN IMMEDIATE")
            if len(batch) == 1:  # most transactions (a frame's put, an ACK's record): no grouping
                results = self._run(db, batch)
            else:
                for _, run in groupby(batch, key=lambda item: isinstance(item.work, tuple)):
                    results += self._run(db, list(run))
            if self._budget.used > self._budget.high_water:
                db.execute("UPDATE meta SET value = ? WHERE key = 'high_water_bytes'", (self._budget.used,))
            if settle:
                self._recent.settle(db)
            self._control.execute("COMMIT")
        except Exception as exc:
            self._rollback(db)
            if _is_disk_full(exc):
                self.disk_full = f"disk full: SQLite could not write {self.path} ({exc})"
                return DiskFullError(f"{self.disk_full}; free space on that filesystem")
            return StoreError(
                f"store write failed and was rolled back ({exc}); check disk space and the file"
            )
        if self._budget.used > self._budget.high_water:  # not max(): a call that parses its arguments
            self._budget.high_water = self._budget.used
        self._recent.committed()
        return results

    def _run(self, db: sqlite3.Connection, items: list[_Pending]) -> list[_Result]:
        """Run consecutive ops; consecutive puts are merged unless one needs eviction, then each
        request is admitted on its own (and may be refused on its own)."""
        works = [item.work for item in items if isinstance(item.work, tuple)]
        puts = [request for work in works for request in work]
        if len(puts) > 1:
            try:
                flags = iter(admit(db, self._budget, self._recent, puts, allow_eviction=False))
                return [
                    (item, [next(flags) for _ in work], None) for item, work in zip(items, works, strict=True)
                ]
            except SplitNeeded:
                pass
        results: list[_Result] = []
        for item in items:
            work = item.work
            if not isinstance(work, tuple):
                try:  # a refusal is raised before the op wrote anything (or after rolling it back)
                    results.append((item, work(db), None))
                except StoreError as exc:
                    results.append((item, None, exc))
                continue
            outcomes: list[_PutResult] = []
            for request in work:
                try:
                    outcomes += admit(db, self._budget, self._recent, [request], allow_eviction=True)
                except StoreError as exc:
                    outcomes.append(exc)
            results.append((item, outcomes, None))
        return results

    def _rollback(self, db: sqlite3.Connection) -> None:
        try:
            self._control.execute("ROLLBACK")
        except Exception as exc:  # no transaction open (BEGIN itself failed)
            log.debug("rollback: %s", exc)
        self._recent.rolled_back()
        self._budget.used = _count_used(db)
        self._forwarding_rows = True  # the rows a delete took may be back


def _first_expiry(db: sqlite3.Connection) -> float:
    """When the first seen id expires (infinity: none is seen), on the ``seen_expiry`` index."""
    first = db.execute("SELECT MIN(expires) FROM seen").fetchone()[0]
    return math.inf if first is None else float(first)


_BELOW_ALL = (0, -1)  # a mark no id is at or below


@dataclass(frozen=True, slots=True)
class _IdMark:
    """What the file says of an origin's ids: none above ``last`` was issued, except ids dated at most
    ``horizon`` (-1: none) with a seq below ``floor``."""

    last: tuple[int, int]
    horizon: int
    floor: int

    def covers(self, created: int, seq: int) -> bool:
        return (created, seq) <= self.last or (created <= self.horizon and seq < self.floor)

    def next_after(self, last: tuple[int, int], now_epoch_s: int) -> tuple[int, int]:
        """The id after ``last`` at ``now_epoch_s``, outside this mark's window: an id of a run the
        mark was read at the open of may lie below the floor of any second up to the horizon."""
        created, seq = (now_epoch_s, 0) if now_epoch_s > last[0] else (last[0], last[1] + 1)
        while True:
            if created <= self.horizon:
                seq = max(seq, self.floor)
            if seq <= MAX_SEQ:
                return created, seq
            created, seq = created + 1, 0


@dataclass(slots=True)
class _Ids:
    """One origin's ids in this run."""

    last: tuple[int, int]  # the last id issued (the file's mark before the first)
    mark: _IdMark  # the last committed: every id issued is covered
    prior: _IdMark  # the mark at open: ids of earlier runs are all covered by it
    pending: list[_IdMark] = field(default_factory=list)  # what queued ops' rows cover at least

    def issuable(self, issued: tuple[int, int]) -> bool:
        """Covered by the committed mark and by every row queued to replace it."""
        if not self.mark.covers(*issued):
            return False
        return not self.pending or all(mark.covers(*issued) for mark in self.pending)

    def floor_at(self, created: int, floor: int) -> int:
        """``floor``, or an earlier run's if its window reaches ``created``."""
        return max(floor, self.prior.floor) if created <= self.prior.horizon else floor

    def committed(self, covering: _IdMark, future: asyncio.Future[_IdMark]) -> None:
        """An op of :meth:`Store._id_op` finished (in queue order): its row is the file's."""
        self.pending.remove(covering)
        if not future.cancelled() and future.exception() is None:
            self.mark = future.result()

    def closing(self) -> _IdMark:
        """What a clean close records: the last id, and an earlier run's window if ids of that run
        may lie above it."""
        if self.last >= (self.prior.horizon, self.prior.floor - 1):
            return _IdMark(self.last, -1, 0)
        return _IdMark(self.last, self.prior.horizon, self.prior.floor)


def _nothing(db: sqlite3.Connection) -> None:
    """An op that writes nothing: done once the ops queued before it are."""


def _id_read(db: sqlite3.Connection, origin: bytes) -> _IdMark:
    row = db.execute(
        "SELECT created, seq, horizon, floor FROM origin_seq WHERE origin = ?", (origin,)
    ).fetchone()
    if row is None:
        return _IdMark(_BELOW_ALL, -1, 0)
    if row[2] is None:  # written before schema 3, or by a clean close
        return _IdMark((int(row[0]), int(row[1])), -1, 0)
    return _IdMark((int(row[0]), int(row[1])), int(row[2]), int(row[3]))


def _id_write(origin: bytes, mark: _IdMark) -> Callable[[sqlite3.Connection], _IdMark]:
    """The op recording ``mark`` as ``origin``'s."""

    def op(db: sqlite3.Connection) -> _IdMark:
        horizon = None if mark.horizon < 0 else mark.horizon
        db.execute(
            "INSERT OR REPLACE INTO origin_seq (origin, created, seq, horizon, floor) VALUES (?, ?, ?, ?, ?)",
            (origin, *mark.last, horizon, None if horizon is None else mark.floor),
        )
        return mark

    return op


def _id_cover(origin: bytes, last: tuple[int, int], floor: int) -> Callable[[sqlite3.Connection], _IdMark]:
    """The op making ``origin``'s mark cover every id up to ``last``, the last issued: ids of earlier
    seconds go under the mark, ids of ``last``'s second under ``floor``, which applies up to the
    horizon (a new one past it). ``floor`` may be lower than the file's: no id after ``last`` was
    issued, and it keeps an earlier run's floor while that run's window is ahead."""

    def op(db: sqlite3.Connection) -> _IdMark:
        mark = _id_read(db, origin)
        created = last[0]
        horizon = mark.horizon if created <= mark.horizon else created + ID_HORIZON_S
        return _id_write(origin, _IdMark(max(mark.last, (created - 1, MAX_SEQ)), horizon, floor))(db)

    return op


def _id_renew(origin: bytes, created: int, floor: int) -> Callable[[sqlite3.Connection], _IdMark]:
    """The op moving ``origin``'s window to ``created`` + :data:`ID_HORIZON_S`, ``created`` the last
    id's second: every id up to that second is at most (created, floor - 1) or under the mark, so
    the floor of later seconds starts again at ``floor``."""

    def op(db: sqlite3.Connection) -> _IdMark:
        mark = _id_read(db, origin)
        last = max(mark.last, (created, mark.floor - 1))
        return _id_write(origin, _IdMark(last, max(mark.horizon, created + ID_HORIZON_S), floor))(db)

    return op


def _count_used(db: sqlite3.Connection) -> int:
    held = db.execute("SELECT COALESCE(SUM(size), 0) FROM seen").fetchone()[0]  # NULL when not held
    inbox = db.execute("SELECT COALESCE(SUM(size), 0) FROM inbox").fetchone()[0]
    return int(held) + int(inbox)


def _any_forwarding(db: sqlite3.Connection) -> bool:
    found: int = db.execute("SELECT EXISTS (SELECT 1 FROM forwarding)").fetchone()[0]
    return found == 1


def _is_disk_full(exc: BaseException) -> bool:
    """SQLITE_FULL (SQLite turns ENOSPC into it), or ENOSPC itself."""
    if isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return True
    return "database or disk is full" in str(exc) or getattr(exc, "errno", None) == errno.ENOSPC


def _decode(data: bytes) -> Bundle:
    try:
        return decode_full(data)
    except BundleDecodeError as exc:
        raise StoreError(f"a stored bundle is corrupt ({exc}); the store file is damaged") from None
