"""The start-up read of every held bundle (``StoreReader.held``): the store's ``load_all`` order
(class, then age, then arrival) over several chunks, from a sort of the rows' keys alone."""

from __future__ import annotations

from pathlib import Path

from test_store import make

from relay.bundle import Priority
from relay.store import Store
from relay.store_reader import CHUNK, StoreReader


async def test_held_gives_every_held_bundle_in_the_stores_order_across_chunks(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    store = await Store.open(path)
    count = 2 * CHUNK + 37
    bundles = [make(i, Priority(i % 5), created=1000 + (i * 7919) % 300) for i in range(count)]
    await store.put_many(bundles, now=1000.0)
    await store.delete_many([bundle.id for bundle in bundles[::7]], "forwarded")
    expected = [stored.bundle for stored in await store.load_all()]
    reader = StoreReader(path)
    try:
        held = list(reader.held())
        assert [stored.bundle for stored in held] == expected
        assert len(expected) == count - len(bundles[::7])
        assert {stored.received_at for stored in held} == {1000.0}
    finally:
        reader.close()
        await store.close()
