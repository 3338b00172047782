"""A put kept by the application alone (``put_each(..., app_has=...)``, docs/store.md "Kept by the
application"): its id is recorded without an inbox copy or quota bytes, and the next open forgets it
unless the application acknowledged it, so the previous hop's resend is accepted again."""

from __future__ import annotations

from pathlib import Path

from test_store import make

from relay.bundle import encode_full
from relay.store import Store


async def test_an_id_kept_by_the_app_alone_is_forgotten_at_open_unless_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    kept, lost = make(1, size=10_000), make(2, size=10_000)
    store = await Store.open(path)
    results = await store.put_each(
        [(kept, True, False), (lost, True, False)], now=1000.0, app_has={kept.id, lost.id}
    )
    assert results == [True, True]
    stats = await store.stats()
    assert (stats.inbox, stats.bytes_used) == (0, 0), "no inbox copy, no quota bytes"
    assert await store.put_each([(kept, True, False)], now=1000.0) == [False], "a duplicate meanwhile"
    await store.ack_deliveries([kept.key])  # the application keeps it; `lost` never acked
    await store.close()

    store = await Store.open(path)
    try:
        again = await store.put_each([(kept, True, False), (lost, True, False)], now=1001.0)
        assert again == [False, True], "the acknowledged id stays seen; the other is taken again"
        assert [b.id for b in await store.pending_deliveries()] == [lost.id]
    finally:
        await store.close()


async def test_an_ack_reads_the_inbox_only_when_it_holds_copies(tmp_path: Path) -> None:
    """Acks of ids the application alone keeps (a command post's) find no inbox copy: with the inbox
    empty the ack marks them delivered without its sum and delete; with copies in it, an ack of both
    kinds removes the copies and gives back their quota bytes."""
    store = await Store.open(tmp_path / "store.sqlite3")
    statements: list[str] = []
    try:
        kept, copied = [make(i) for i in range(1, 4)], [make(i, size=500) for i in range(4, 6)]
        await store.put_each([(b, True, False) for b in kept], now=1000.0, app_has={b.id for b in kept})
        store._db.set_trace_callback(statements.append)
        await store.ack_deliveries([b.key for b in kept[:2]])
        assert not [sql for sql in statements if "FROM inbox" in sql and "EXISTS" not in sql]
        await store.put_each([(b, True, False) for b in copied], now=1000.0)
        assert (await store.stats()).inbox == 2
        statements.clear()
        await store.ack_deliveries([kept[2].key, copied[0].key])
        assert [sql.split()[0] for sql in statements if "FROM inbox WHERE id IN" in sql] == [
            "SELECT",
            "DELETE",
        ]
        stats = await store.stats()
        assert (stats.inbox, stats.bytes_used) == (1, len(encode_full(copied[1])))
        assert [b.id for b in await store.pending_deliveries()] == [copied[1].id]
    finally:
        await store.close()
    store = await Store.open(tmp_path / "store.sqlite3")
    try:  # every acked id stays seen after a reopen; the one never acked is still delivered
        assert await store.put_each([(b, True, False) for b in kept], now=1001.0) == [False] * 3
        assert [b.id for b in await store.pending_deliveries()] == [copied[1].id]
    finally:
        await store.close()


async def test_rows_not_held_are_written_as_rows_held_beside_them_are(tmp_path: Path) -> None:
    """A batch of rows none of which is held (a command post's) is written by statements that hold
    its NULLs, not bind them; a batch with a held row binds every column. Both write the same
    columns: the id a BLOB, size and data NULL and unsettled when not held. 150 rows: one
    statement of 100 rows and 50 of one row."""
    path = tmp_path / "store.sqlite3"
    store = await Store.open(path)
    try:
        alone = [make(i) for i in range(1, 151)]
        beside = [make(i) for i in range(151, 301)]
        held = make(301)
        assert (
            await store.put_each([(b, True, False) for b in alone], now=1000.0, app_has={b.id for b in alone})
            == [True] * 150
        )
        assert (
            await store.put_each(
                [(b, True, False) for b in beside] + [(held, False, True)],
                now=1000.0,
                app_has={b.id for b in beside},
            )
            == [True] * 151
        )
        assert await store.put_each([(b, True, False) for b in alone + beside], now=1000.0) == [False] * 300
        rows = await store._read(
            "SELECT id, typeof(id), delivered, size, data, settled, expires, priority, received_at, local "
            "FROM seen ORDER BY rowid",
            (),
        )
    finally:
        await store.close()
    expected = [
        (b.key, "blob", 2, None, None, 0, b.created + b.lifetime, int(b.priority), 1000.0, 0)
        for b in alone + beside
    ]
    data = encode_full(held)
    expires = held.created + held.lifetime
    expected.append((held.key, "blob", 0, len(data), data, 1, expires, int(held.priority), 1000.0, 0))
    assert [tuple(row) for row in rows] == expected
