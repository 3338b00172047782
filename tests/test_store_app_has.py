"""A put kept by the application alone (``put_each(..., app_has=...)``, docs/store.md "Kept by the
application"): its id is recorded without an inbox copy or quota bytes, and the next open forgets it
unless the application acknowledged it, so the previous hop's resend is accepted again."""

from __future__ import annotations

from pathlib import Path

from test_store import make

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
    await store.ack_deliveries([kept.id])  # the application keeps it; `lost` never acked
    await store.close()

    store = await Store.open(path)
    try:
        again = await store.put_each([(kept, True, False), (lost, True, False)], now=1001.0)
        assert again == [False, True], "the acknowledged id stays seen; the other is taken again"
        assert [b.id for b in await store.pending_deliveries()] == [lost.id]
    finally:
        await store.close()
