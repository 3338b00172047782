"""What the command post's feed writes to the journal for a burst of deliveries: each text message with
its origin, destination and class as text, each unit once with its newest position, and the live
events of a subscriber."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

from relay.api.hub import EventHub
from relay.bundle import BundleId, Destination, Kind, Priority, from_epoch, to_epoch
from relay.command_post import CommandPostFeed
from relay.engine import Delivery
from relay.journal import Journal
from relay.position import Position, encode_position

ALICE, BOB = bytes(range(16)), bytes(range(16, 32))
POST = bytes(range(32, 48))


def _feed(journal: Journal, hub: EventHub) -> CommandPostFeed:
    names = {ALICE: SimpleNamespace(name="Alice", roles=frozenset({"medic", "unit"}))}
    trust = SimpleNamespace(certificate=names.get)  # Bob has no certificate here: named by his id
    node = SimpleNamespace(engine=SimpleNamespace(trust=trust), links={})
    return CommandPostFeed(node, journal, SimpleNamespace(hub=hub), [])  # type: ignore[arg-type]


def _delivery(
    origin: bytes, seq: int, destination: Destination, kind: int, priority: Priority, payload: bytes
) -> Delivery:
    created = int(to_epoch(time.time())) - 10
    bundle_id = BundleId(origin, created, seq)
    return Delivery(bundle_id, origin, destination, kind, priority, created, payload, bundle_id.key())


async def test_a_mixed_burst_is_written_as_each_delivery_says(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "journal.sqlite")
    hub = EventHub()
    events = hub.subscribe()
    try:
        to_post, to_medics = Destination.to_node(POST), Destination.to_role("medic")
        fixed = int(time.time()) - 5
        burst = [
            _delivery(ALICE, 1, to_post, Kind.TEXT, Priority.PRIORITY, b"one"),
            _delivery(BOB, 2, to_post, Kind.TEXT, Priority.FLASH, b"two \xff"),
            _delivery(ALICE, 3, to_medics, Kind.TEXT, Priority.BULK, b"three"),
            _delivery(
                ALICE,
                4,
                to_post,
                Kind.POSITION,
                Priority.PRIORITY,
                encode_position(Position(1.5, 2.5, fixed - 60)),
            ),
            _delivery(ALICE, 5, Destination.to_node(POST), Kind.TEXT, Priority.IMMEDIATE, b"four"),
            _delivery(
                ALICE,
                6,
                to_post,
                Kind.POSITION,
                Priority.PRIORITY,
                encode_position(Position(3.5, 4.5, fixed)),
            ),
        ]
        await _feed(journal, hub).record(burst)
        messages = sorted(await journal.messages(), key=lambda message: message.seq)
        assert [
            (m.bundle_id, m.origin, m.destination, m.kind, m.priority, m.created, m.text) for m in messages
        ] == [
            (
                d.bundle_id.key().hex(),
                d.origin.hex(),
                str(d.destination),
                Kind.TEXT,
                d.priority.name,
                from_epoch(d.created),
                d.payload.decode("utf-8", errors="replace"),
            )
            for d in burst
            if d.kind == Kind.TEXT
        ]
        units = {unit.node_id: unit for unit in await journal.units()}
        assert units.keys() == {ALICE.hex(), BOB.hex()}
        alice, bob = units[ALICE.hex()], units[BOB.hex()]
        assert (alice.name, alice.roles, alice.lat, alice.lon, alice.fixed) == (
            "Alice",
            ["medic", "unit"],
            3.5,
            4.5,
            fixed,
        )
        assert (bob.name, bob.roles, bob.lat) == (BOB.hex()[:8], [], None)
        published = [events.get_nowait() for _ in range(events.qsize())]
        assert [event["type"] for event in published] == ["unit", "unit", "position", "position"] + [
            "message"
        ] * 4
        assert [event["text"] for event in published[4:]] == [m.text for m in messages]
    finally:
        await journal.close()
