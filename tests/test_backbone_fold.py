"""The fold of record events: any order and any repetition of the same events, one state and hash."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.backbone.fold import (
    EventError,
    EventKind,
    RecordEvent,
    RecordState,
    RecordTable,
    fold,
    table_hash,
)

RECORDS = ["alarm/0001-1", "alarm/0002-7", "detection/9"]


@st.composite
def events(draw: st.DrawFn) -> list[RecordEvent]:
    count = draw(st.integers(1, 30))
    made = []
    for index in range(count):
        kind = draw(st.sampled_from(list(EventKind)))
        made.append(
            RecordEvent(
                event_id=f"ev-{index}",
                record_id=draw(st.sampled_from(RECORDS)),
                kind=kind,
                at=draw(st.sampled_from([100.0, 100.5, 101.0, 250.25])),  # ties on purpose
                post=draw(st.sampled_from(["A", "B", "C"])),
                type="alarm",
                origin="ab" * 16,
                priority=draw(st.sampled_from(["FLASH", "IMMEDIATE"])),
                body={"summary": draw(st.text(max_size=8)), "n": index},
                code=draw(st.sampled_from(["", "ACK-ON-WAY", "free text"])),
                operator=draw(st.sampled_from(["", "dispatcher B"])),
            )
        )
    return made


@settings(max_examples=300, deadline=None)
@given(events(), st.randoms(use_true_random=False), st.lists(st.integers(0, 29), max_size=20))
def test_any_order_and_duplicates_give_one_state(
    evs: list[RecordEvent], rnd: object, dup_indexes: list[int]
) -> None:
    reference = fold(evs)
    shuffled = [*evs, *(evs[i % len(evs)] for i in dup_indexes)]
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    again = fold(shuffled)
    assert {k: s.content() for k, s in again.items()} == {k: s.content() for k, s in reference.items()}
    assert {k: s.content_hash() for k, s in again.items()} == {
        k: s.content_hash() for k, s in reference.items()
    }
    assert table_hash(s.content() for s in again.values()) == table_hash(
        s.content() for s in reference.values()
    )


@settings(max_examples=200, deadline=None)
@given(events())
def test_encoding_round_trips_and_table_reports_duplicates(evs: list[RecordEvent]) -> None:
    table = RecordTable()
    for event in evs:
        decoded = RecordEvent.decode(event.encode())
        assert decoded == event
        assert table.apply(decoded) is not None
        assert table.apply(decoded) is None  # applied twice: nothing changes
    assert table.content_hash() == table_hash(s.content() for s in fold(evs).values())


def test_rules_latest_body_acks_in_order_earliest_close() -> None:
    def ev(event_id: str, kind: EventKind, at: float, **kw: object) -> RecordEvent:
        return RecordEvent(event_id, "alarm/1", kind, at, "A", type="alarm", **kw)  # type: ignore[arg-type]

    state = fold(
        [
            ev("u2", EventKind.UPDATED, 30.0, body={"v": 2}),
            ev("c2", EventKind.CLOSED, 50.0),
            ev("a2", EventKind.ACKNOWLEDGED, 40.0, code="ON-WAY"),
            ev("r", EventKind.RAISED, 10.0, body={"v": 0}),
            ev("a1", EventKind.ACKNOWLEDGED, 20.0, code="RECEIVED"),
            ev("u1", EventKind.UPDATED, 25.0, body={"v": 1}),
            ev("c1", EventKind.CLOSED, 45.0),
        ]
    )["alarm/1"]
    assert state.body == {"v": 2}
    assert state.created == 10.0
    assert [a.code for a in state.acks] == ["RECEIVED", "ON-WAY"]
    assert state.closed == 45.0


def test_bad_events_are_refused_with_a_reason() -> None:
    for raw in (
        b"\xff",
        b"[1]",
        b'{"event_id": "x"}',
        b'{"event_id":"x","record_id":"r","kind":"lost","at":1,"post":"A"}',
    ):
        try:
            RecordEvent.decode(raw)
        except EventError as exc:
            assert "not a record event" in str(exc)
        else:
            raise AssertionError(f"{raw!r} decoded")
    event = RecordEvent("e", "other", EventKind.CLOSED, 1.0, "A")
    try:
        RecordState("alarm/1").merge(event)
    except EventError as exc:
        assert "not alarm/1" in str(exc)
    else:
        raise AssertionError("an event for another record merged")
