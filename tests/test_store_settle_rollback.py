"""Store schema 4: a transaction rolled back after an expiry leaves the unsettled ids in memory as
committed (relay/store_accept.py, RecentIds), and the writer goes on."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from relay.bundle import Bundle, Destination, Priority
from relay.store import Store, StoreError

ORIGIN = bytes(range(16))


def make(seq: int, lifetime: int) -> Bundle:
    return Bundle(
        ORIGIN, Destination.to_node(bytes(16)), 1000, seq, lifetime, Priority.ROUTINE, 40, b"x" * 60
    )


async def test_a_rollback_after_an_expiry_restores_only_the_ids_committed_before(tmp_path: Path) -> None:
    """One transaction puts ``new`` (not held), expires it and the committed ``old``, puts ``old``
    again (a caller's earlier clock), then fails: ``old`` is still seen, ``new`` is not."""
    store = await Store.open(tmp_path / "s.db")
    old, new = make(1, 10), make(2, 10)  # both expire at 1010
    kept = {old.id, new.id}  # an application keeps them: no inbox copy, the id alone
    assert await store.put_each([(old, True, False)], now=1000, app_has=kept) == [True]

    def failing(db: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("disk I/O error")  # the batch is rolled back

    results = await asyncio.wait_for(
        asyncio.gather(
            store.put_each([(new, True, False)], now=1005, app_has=kept),
            store.expire(1010),
            store.put_each([(old, True, False)], now=1005, app_has=kept),
            store._submit(failing),
            return_exceptions=True,
        ),
        10,
    )
    assert all(isinstance(result, StoreError) for result in results), results
    again = store.put_each([(old, True, False), (new, True, False)], now=1005, app_has=kept)
    assert await asyncio.wait_for(again, 10) == [False, True]
    await store.close()


async def test_a_rollback_after_an_expiry_forgets_the_origins_tops_read_meanwhile(tmp_path: Path) -> None:
    """An origin's highest settled key, read in a transaction after its expiry deleted it, is too low
    once the transaction is rolled back: a later duplicate of that key must still be refused."""
    store = await Store.open(tmp_path / "s.db")
    settled, later = make(1, 10), make(2, 3600)  # ``settled`` held: on the id index; expires at 1010
    assert await store.put(settled, now=1000) is True

    def failing(db: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    results = await asyncio.wait_for(
        asyncio.gather(
            store.expire(1010),  # deletes ``settled``: the origin has no key on the index meanwhile
            store.put_each([(later, True, False)], now=1005),  # reads the origin's top after that
            store._submit(failing),
            return_exceptions=True,
        ),
        10,
    )
    assert all(isinstance(result, StoreError) for result in results), results
    again = store.put_each([(settled, True, False)], now=1005)  # a caller's clock behind the expiry's
    assert await asyncio.wait_for(again, 10) == [False]
    await store.close()
