"""The command post's book of building alarms: dedup, Update/Cancel ordering, acknowledgements (pure).

Records arrive over the mesh in any order, more than once. The book keeps every distinct record
(identity ``(key id, seq, sent)``) under the alarm it belongs to, following ``reference`` chains. An
alarm's current state is the record with the latest ``sent`` in its chain (a Cancel there means
cancelled), so the state does not depend on arrival order. A record whose reference is unknown waits
in ``pending`` until the alarm it names arrives (a Cancel before its Alert).

A new alarm yields a :class:`SendAck` with the automatic receipt; :meth:`AlarmBook.acknowledge`
makes the operator's acknowledgement. Both go back to the building as compact Ack records.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ng112.acks import parse_action
from ng112.canonical import ack_record
from ng112.record import AckCode, AlarmRecord

AlarmKey = tuple[int, int]  # (key id, seq) of the alarm's first record
MAX_PENDING = 1000


@dataclass(frozen=True, slots=True)
class AlarmView:
    key: AlarmKey
    first: AlarmRecord
    current: AlarmRecord  # latest by sent
    history: tuple[AlarmRecord, ...]  # arrival order
    received_at: float
    age_on_arrival: float  # seconds between sent and the first arrival here
    receipt: AlarmRecord | None = None
    operator_ack: AlarmRecord | None = None

    @property
    def cancelled(self) -> bool:
        return self.current.msg_type == "Cancel"

    @property
    def actual(self) -> bool:
        """False for Exercise/Test/System/Draft alarms, which must look visibly different."""
        return self.first.status == "Actual"


@dataclass(frozen=True, slots=True)
class AlarmRaised:
    view: AlarmView


@dataclass(frozen=True, slots=True)
class AlarmChanged:
    view: AlarmView
    record: AlarmRecord


@dataclass(frozen=True, slots=True)
class Duplicate:
    record: AlarmRecord


@dataclass(frozen=True, slots=True)
class Pending:
    record: AlarmRecord
    waiting_for: AlarmKey


@dataclass(frozen=True, slots=True)
class SendAck:
    ack: AlarmRecord


Event = AlarmRaised | AlarmChanged | Duplicate | Pending | SendAck


@dataclass
class AlarmBook:
    alarms: dict[AlarmKey, AlarmView] = field(default_factory=dict)
    pending: dict[AlarmKey, list[AlarmRecord]] = field(default_factory=dict)
    _root: dict[AlarmKey, AlarmKey] = field(default_factory=dict)  # any record's (key id, seq) -> alarm
    _seen: set[tuple[int, int, int]] = field(default_factory=set)

    def apply(self, record: AlarmRecord, now: float) -> list[Event]:
        """Take one Alert/Update/Cancel record from the mesh; returns what happened."""
        if record.msg_type in ("Ack", "Error"):
            raise ValueError("Ack/Error records are for the building, not the alarm book")
        if record.identity in self._seen:
            return [Duplicate(record)]
        self._seen.add(record.identity)
        own = (record.key_id, record.seq)
        if record.reference is None or record.reference == own:
            events = self._raise(own, record, now)
        else:
            root = self._root.get(record.reference)
            if root is None:
                if sum(len(v) for v in self.pending.values()) >= MAX_PENDING:
                    oldest = next(iter(self.pending))
                    for dropped in self.pending.pop(oldest):
                        self._seen.discard(dropped.identity)
                self.pending.setdefault(record.reference, []).append(record)
                return [Pending(record, record.reference)]
            events = self._change(root, record)
            self._root[own] = root
        return events + self._release(own, now)

    def _raise(self, key: AlarmKey, record: AlarmRecord, now: float) -> list[Event]:
        view = AlarmView(key, record, record, (record,), now, max(0.0, now - record.sent))
        receipt = ack_record(record, AckCode.RECEIVED, "", now)
        view = replace(view, receipt=receipt)
        self.alarms[key] = view
        self._root[key] = key
        return [AlarmRaised(view), SendAck(receipt)]

    def _change(self, root: AlarmKey, record: AlarmRecord) -> list[Event]:
        view = self.alarms[root]
        history = (*view.history, record)
        current = max(history, key=lambda r: (r.sent, r.msg_type == "Cancel"))
        view = replace(view, history=history, current=current)
        self.alarms[root] = view
        return [AlarmChanged(view, record)]

    def _release(self, key: AlarmKey, now: float) -> list[Event]:
        events: list[Event] = []
        for waiting in self.pending.pop(key, []):
            self._seen.discard(waiting.identity)
            events += self.apply(waiting, now)
        return events

    def acknowledge(self, key: AlarmKey, operator: str, action: str, now: float) -> AlarmRecord:
        """The operator's acknowledgement of alarm ``key``: an Ack record to send to the building.

        ``action`` is an action code or free text (:func:`ng112.acks.parse_action`); a code's record
        carries the operator's name, a free text's record the text."""
        view = self.alarms[key]
        code, text = parse_action(action)
        ack = ack_record(view.first, code, text or operator, now)
        self.alarms[key] = replace(view, operator_ack=ack)
        return ack

    def root_of(self, record: AlarmKey) -> AlarmKey | None:
        """The alarm a record (its key id and seq) belongs to, if that record arrived."""
        return self._root.get(record)

    def active(self) -> list[AlarmView]:
        return [v for v in self.alarms.values() if not v.cancelled]
