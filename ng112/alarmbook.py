"""The command post's book of building alarms: dedup, Update/Cancel ordering, acknowledgements (pure).

Records arrive over the mesh in any order, more than once. The book keeps every distinct record
(identity ``(key id, seq, sent)``) under the alarm it belongs to, following ``reference`` chains. An
alarm's current state is the record with the latest ``sent`` in its chain (a Cancel there means
cancelled), so the state does not depend on arrival order. An Update or Cancel whose reference is
unknown (its Alert was lost, or is still on its way) is raised as an alarm of its own, marked with
``orphan_of``, so an operator sees it at once; if the record it names arrives later, that alarm is
merged into the original's (:class:`AlarmMerged`) and ``merged`` remembers where it went.

A new alarm yields a :class:`SendAck` with the automatic receipt; :meth:`AlarmBook.acknowledge`
makes the operator's acknowledgement. Both go back to the building as compact Ack records.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ng112.acks import parse_action
from ng112.canonical import ack_record
from ng112.record import AckCode, AlarmRecord

AlarmKey = tuple[int, int]  # (key id, seq) of the alarm's first record


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
    orphan_of: AlarmKey | None = None  # the record this Update/Cancel names, not received here (yet)

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
class AlarmMerged:
    """The alarm raised for an Update/Cancel of an alert not received (``key``) is now part of
    ``view``, the alarm of the record it names, which arrived."""

    key: AlarmKey
    view: AlarmView


@dataclass(frozen=True, slots=True)
class SendAck:
    ack: AlarmRecord


Event = AlarmRaised | AlarmChanged | AlarmMerged | Duplicate | SendAck


@dataclass
class AlarmBook:
    alarms: dict[AlarmKey, AlarmView] = field(default_factory=dict)
    merged: dict[AlarmKey, AlarmKey] = field(default_factory=dict)  # orphan alarm -> alarm it joined
    _root: dict[AlarmKey, AlarmKey] = field(default_factory=dict)  # any record's (key id, seq) -> alarm
    _seen: set[tuple[int, int, int]] = field(default_factory=set)
    _orphans: dict[AlarmKey, list[AlarmKey]] = field(default_factory=dict)  # missing record -> orphans

    def apply(self, record: AlarmRecord, now: float) -> list[Event]:
        """Take one Alert/Update/Cancel record from the mesh; returns what happened."""
        if record.msg_type in ("Ack", "Error"):
            raise ValueError("Ack/Error records are for the building, not the alarm book")
        if record.identity in self._seen:
            return [Duplicate(record)]
        self._seen.add(record.identity)
        own = (record.key_id, record.seq)
        reference = None if record.reference == own else record.reference
        root = self._root.get(reference) if reference is not None else None
        if root is None:
            events = self._raise(own, record, now, reference)
            root = own
        else:
            events = self._change(root, record)
            self._root[own] = root
        return events + self._adopt(own, root)

    def _raise(
        self, key: AlarmKey, record: AlarmRecord, now: float, orphan_of: AlarmKey | None
    ) -> list[Event]:
        view = AlarmView(
            key, record, record, (record,), now, max(0.0, now - record.sent), orphan_of=orphan_of
        )
        receipt = ack_record(record, AckCode.RECEIVED, "", now)
        view = replace(view, receipt=receipt)
        self.alarms[key] = view
        self._root[key] = key
        if orphan_of is not None:
            self._orphans.setdefault(orphan_of, []).append(key)
        return [AlarmRaised(view), SendAck(receipt)]

    def _change(self, root: AlarmKey, record: AlarmRecord) -> list[Event]:
        view = self.alarms[root]
        history = (*view.history, record)
        current = max(history, key=lambda r: (r.sent, r.msg_type == "Cancel"))
        view = replace(view, history=history, current=current)
        self.alarms[root] = view
        return [AlarmChanged(view, record)]

    def _adopt(self, arrived: AlarmKey, root: AlarmKey) -> list[Event]:
        """Merge the alarms raised for Updates/Cancels naming ``arrived`` into its alarm ``root``."""
        events: list[Event] = []
        for orphan in self._orphans.pop(arrived, []):
            if orphan == root:  # records naming each other in a ring: the ring is one alarm
                self.alarms[root] = replace(self.alarms[root], orphan_of=None)
                continue
            for record in self.alarms.pop(orphan).history:
                self._root[(record.key_id, record.seq)] = root
                events += self._change(root, record)
            self.merged[orphan] = root
            for earlier, into in self.merged.items():
                if into == orphan:
                    self.merged[earlier] = root
            events.append(AlarmMerged(orphan, self.alarms[root]))
        return events

    def resolve(self, key: AlarmKey) -> AlarmKey:
        """The alarm ``key`` is shown under now (an orphan alarm merged into its original)."""
        return self.merged.get(key, key)

    def acknowledge(self, key: AlarmKey, operator: str, action: str, now: float) -> AlarmRecord:
        """The operator's acknowledgement of alarm ``key``: an Ack record to send to the building.

        ``action`` is an action code or free text (:func:`ng112.acks.parse_action`); a code's record
        carries the operator's name, a free text's record the text."""
        key = self.resolve(key)
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
