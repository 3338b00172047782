"""The journal as the console reads it: one cursor over messages, records and units; an open queue
by priority and age that newer traffic never pushes out; group keys sealed to each demo node."""

from __future__ import annotations

from pathlib import Path

from crypto.keystore import load_identity
from field.deployment import INCIDENT, create_demo_deployment
from relay.enrolment import held_groups, joined_groups, load_keyring
from relay.journal import Journal, MessageEntry, RecordEntry

T0 = 1_800_000_000.0


def _record(record_id: str, priority: str, created: float, type: str = "alarm") -> RecordEntry:
    return RecordEntry(record_id, type, "aa", priority, created, created + 1, {"summary": record_id})


async def test_changes_after_a_cursor_miss_nothing_written_in_the_same_instant(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        for index in range(50):  # one received time for all: a time window would split them
            message = MessageEntry(f"b{index}", "aa", "all", 1, "PRIORITY", T0, T0, f"text {index}")
            assert (await journal.add_message(message)) is not None
        assert (
            await journal.add_message(MessageEntry("b0", "aa", "all", 1, "PRIORITY", T0, T0, "dup")) is None
        )
        await journal.heard("aa", name="Responder 1", roles=["responder"], at=T0)
        await journal.put_record(_record("r1", "FLASH", T0))
        seen: list[int] = []
        cursor = 0
        while changes := await journal.changes(cursor, limit=7):
            seen += [change.seq for change in changes]
            cursor = changes[-1].seq
        assert seen == sorted(seen) and len(seen) == 52
        assert cursor == journal.cursor
        [page] = [await journal.messages(limit=10)]
        older = await journal.messages(before=page[-1].seq, limit=100)
        assert len(page) + len(older) == 50 and page[0].text == "text 49"

        acked = await journal.add_ack("r1", {"operator": "op", "action": "received", "at": T0 + 5})
        [change] = await journal.changes(cursor)
        assert change.type == "record" and change.seq == acked.seq and change.event()["item"]["acks"]
    finally:
        await journal.close()

    reopened = await Journal.open(tmp_path / "journal.sqlite3")  # the cursor survives a restart
    try:
        assert reopened.cursor == acked.seq
    finally:
        await reopened.close()


async def test_the_open_queue_keeps_every_unclosed_record_by_priority_then_age(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        await journal.put_record(_record("old-routine", "ROUTINE", T0))
        await journal.put_record(_record("flash-late", "FLASH", T0 + 30))
        await journal.put_record(_record("flash-early", "FLASH", T0 + 10))
        for index in range(300):  # newer traffic
            await journal.put_record(_record(f"det-{index}", "IMMEDIATE", T0 + 100 + index, "detection"))
        await journal.put_record(_record("flash-early", "BULK", T0 + 10))  # its follow-up, sent at BULK
        alarms = await journal.open_records(type="alarm")
        assert [r.record_id for r in alarms] == ["flash-early", "flash-late", "old-routine"]
        await journal.add_ack("flash-early", {"operator": "op", "action": "received", "at": T0 + 40})
        assert len(await journal.open_records(type="alarm")) == 3  # acknowledged, not closed
        await journal.add_ack(
            "flash-early", {"operator": "op", "action": "false_alarm", "at": T0 + 50}, close=True
        )
        assert [r.record_id for r in await journal.open_records(type="alarm")] == [
            "flash-late",
            "old-routine",
        ]
        assert (await journal.record("flash-early")).closed == T0 + 50
    finally:
        await journal.close()


def test_demo_nodes_hold_sealed_group_keys_for_all_their_roles_and_the_incident(tmp_path: Path) -> None:
    deployment = create_demo_deployment(tmp_path)
    post = deployment.node("Command Post")
    responder = deployment.node("Responder 1")
    building = deployment.node("Building Gateway")
    assert {"all", "responder", "building", "camera", "relay", INCIDENT} <= set(held_groups(post.directory))
    assert held_groups(responder.directory) == sorted({"all", "responder", INCIDENT})
    assert held_groups(building.directory) == ["all", "building"]
    assert joined_groups(responder.directory) == [INCIDENT] and joined_groups(building.directory) == []
    for node in (post, responder):
        keyring = load_keyring(node.directory, load_identity(node.directory), deployment.authority.public)
        assert keyring.latest("all") is not None
    post_ring = load_keyring(post.directory, load_identity(post.directory), deployment.authority.public)
    responder_ring = load_keyring(
        responder.directory, load_identity(responder.directory), deployment.authority.public
    )
    assert post_ring.latest("responder") == responder_ring.latest("responder")
    again = create_demo_deployment(tmp_path)  # idempotent: the same keys, nothing re-issued
    assert held_groups(again.node("Command Post").directory) == held_groups(post.directory)
