"""What the responder's screens show, as plain data driven by node events: no Kivy, no I/O.

The SOS moves only through :data:`SOS_TRANSITIONS` (one table, as ``relay.core.status`` does for
bundles)::

    idle --confirm--> confirmed --durable--> queued --custody--> forwarded --receipt--> delivered
    queued | forwarded --receipt--> delivered --ack--> acknowledged
    confirmed | queued | forwarded | delivered | acknowledged --cancel--> cancelled
    queued | forwarded --lost--> failed (expired or evicted: the screen says so, the user may raise again)

``confirmed`` follows the confirm button once the SOS is in the app's own table (fsynced): from
there a crash loses nothing, the app sends it again on start if the node never stored it. The
screen says "sent" from ``queued`` on, when the bundle is durable in the node's store. Any change
calls the listeners with the name of what changed (``"sos"``, ``"messages"``, ``"alarms"``,
``"units"``, ``"links"``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum

from relay.bundle import Priority


class SosPhase(Enum):
    IDLE = "idle"
    CONFIRMED = "confirmed"
    QUEUED = "queued"
    FORWARDED = "forwarded"
    DELIVERED = "delivered"
    ACKNOWLEDGED = "acknowledged"
    CANCELLED = "cancelled"
    FAILED = "failed"


class SosEvent(Enum):
    CONFIRM = "confirm"  # the user confirmed; stored in the app's table
    DURABLE = "durable"  # the node stored the bundle
    CUSTODY = "custody"  # a neighbour took custody
    RECEIPT = "receipt"  # the command post's end-to-end receipt
    ACK = "ack"  # a person at the command post acknowledged it
    CANCEL = "cancel"  # the user cancelled it with the PIN
    LOST = "lost"  # expired or evicted before delivery


_LIVE = (SosPhase.CONFIRMED, SosPhase.QUEUED, SosPhase.FORWARDED, SosPhase.DELIVERED, SosPhase.ACKNOWLEDGED)

SOS_TRANSITIONS: Mapping[tuple[SosPhase, SosEvent], SosPhase] = {
    (SosPhase.IDLE, SosEvent.CONFIRM): SosPhase.CONFIRMED,
    (SosPhase.CANCELLED, SosEvent.CONFIRM): SosPhase.CONFIRMED,
    (SosPhase.FAILED, SosEvent.CONFIRM): SosPhase.CONFIRMED,
    (SosPhase.ACKNOWLEDGED, SosEvent.CONFIRM): SosPhase.CONFIRMED,
    (SosPhase.CONFIRMED, SosEvent.DURABLE): SosPhase.QUEUED,
    (SosPhase.QUEUED, SosEvent.CUSTODY): SosPhase.FORWARDED,
    (SosPhase.FORWARDED, SosEvent.CUSTODY): SosPhase.FORWARDED,
    (SosPhase.QUEUED, SosEvent.RECEIPT): SosPhase.DELIVERED,
    (SosPhase.FORWARDED, SosEvent.RECEIPT): SosPhase.DELIVERED,
    (SosPhase.FAILED, SosEvent.RECEIPT): SosPhase.DELIVERED,
    (SosPhase.QUEUED, SosEvent.ACK): SosPhase.ACKNOWLEDGED,  # the ack overtook the receipt
    (SosPhase.FORWARDED, SosEvent.ACK): SosPhase.ACKNOWLEDGED,
    (SosPhase.DELIVERED, SosEvent.ACK): SosPhase.ACKNOWLEDGED,
    (SosPhase.QUEUED, SosEvent.LOST): SosPhase.FAILED,
    (SosPhase.FORWARDED, SosEvent.LOST): SosPhase.FAILED,
    **{(phase, SosEvent.CANCEL): SosPhase.CANCELLED for phase in _LIVE},
}

# Late or repeated news that changes nothing (a custody ACK after the receipt, a second ack).
SOS_IGNORED = frozenset(
    {
        (SosPhase.DELIVERED, SosEvent.CUSTODY),
        (SosPhase.DELIVERED, SosEvent.RECEIPT),
        (SosPhase.ACKNOWLEDGED, SosEvent.CUSTODY),
        (SosPhase.ACKNOWLEDGED, SosEvent.RECEIPT),
        (SosPhase.ACKNOWLEDGED, SosEvent.ACK),
        (SosPhase.DELIVERED, SosEvent.LOST),
        (SosPhase.ACKNOWLEDGED, SosEvent.LOST),
        *((SosPhase.CANCELLED, event) for event in SosEvent if event is not SosEvent.CONFIRM),
    }
)


class IllegalSosTransitionError(RuntimeError):
    """An SOS event that makes no sense in its phase (e.g. a cancel with no SOS raised)."""


def next_phase(phase: SosPhase, event: SosEvent) -> SosPhase:
    if (phase, event) in SOS_IGNORED:
        return phase
    try:
        return SOS_TRANSITIONS[(phase, event)]
    except KeyError:
        raise IllegalSosTransitionError(f"SOS event {event.value!r} in phase {phase.value!r}") from None


@dataclass(frozen=True, slots=True)
class Sos:
    number: int
    phase: SosPhase
    raised: float  # unix seconds
    lat: float | None = None
    lon: float | None = None
    bundle: str = ""  # the raise bundle's id key (hex), once durable
    ack: str = ""  # what the command post said
    durable_ms: float | None = None  # confirm -> durable in the node's store

    @property
    def live(self) -> bool:
        return self.phase in _LIVE


class Delivery(Enum):
    """Where one of my messages is, as the screen says it."""

    QUEUED = "queued"
    FORWARDED = "forwarded"
    DELIVERED = "delivered"
    FAILED = "failed"
    RECEIVED = "received"  # a message to me


@dataclass(frozen=True, slots=True)
class Message:
    bundle: str  # id key, hex
    outgoing: bool
    peer: str  # who it is from or to, as a person reads it
    text: str
    at: float
    state: Delivery
    priority: Priority = Priority.PRIORITY


@dataclass(frozen=True, slots=True)
class IncidentAlarm:
    """An alarm or detection for my incident or role."""

    key: str
    priority: Priority
    title: str  # the event as the source wrote it, or the detection class
    detail: str  # the instruction or description: what the crew acts on
    at: float  # unix seconds
    lat: float | None = None
    lon: float | None = None
    source: str = ""
    hazard: str = ""  # ng112.hazards.Hazard name (fire, gas, ...), shown in the app's language
    zone: str = ""
    floor: int | None = None


@dataclass(frozen=True, slots=True)
class Unit:
    name: str
    lat: float
    lon: float
    at: float


@dataclass(frozen=True, slots=True)
class LinkRow:
    name: str
    kind: str
    neighbours: int
    queued: Mapping[str, int]  # priority name -> bundles waiting
    airtime_left_s: float | None = None  # LoRa only: transmit time left in this hour's duty cycle


Listener = Callable[[str], None]


@dataclass
class AppState:
    """Everything the screens read; mutate only through the methods, which notify listeners."""

    me: str = ""
    sos: Sos | None = None
    messages: list[Message] = field(default_factory=list)
    alarms: dict[str, IncidentAlarm] = field(default_factory=dict)
    units: dict[str, Unit] = field(default_factory=dict)
    links: list[LinkRow] = field(default_factory=list)
    last_post_contact: float | None = None
    position: tuple[float, float] | None = None
    _listeners: list[Listener] = field(default_factory=list)

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _changed(self, what: str) -> None:
        for listener in list(self._listeners):
            listener(what)

    # -- SOS ---------------------------------------------------------------------------------------

    def sos_event(self, event: SosEvent, **changes: object) -> Sos:
        """Apply ``event`` to the current SOS (``changes`` set its other fields) and return it."""
        if self.sos is None:
            raise IllegalSosTransitionError(f"SOS event {event.value!r} with no SOS raised")
        phase = next_phase(self.sos.phase, event)
        self.sos = replace(self.sos, phase=phase, **changes)  # type: ignore[arg-type]
        self._changed("sos")
        return self.sos

    def sos_confirmed(self, sos: Sos) -> None:
        if self.sos is not None:
            next_phase(self.sos.phase, SosEvent.CONFIRM)  # raises while one is live
        self.sos = replace(sos, phase=SosPhase.CONFIRMED)
        self._changed("sos")

    def sos_restored(self, sos: Sos | None) -> None:
        self.sos = sos
        self._changed("sos")

    # -- messages ----------------------------------------------------------------------------------

    def message(self, message: Message) -> None:
        self.messages = [m for m in self.messages if m.bundle != message.bundle] + [message]
        self.messages.sort(key=lambda m: m.at)
        self._changed("messages")

    def message_state(self, bundle: str, state: Delivery) -> bool:
        for index, message in enumerate(self.messages):
            if message.bundle == bundle:
                if message.state is Delivery.DELIVERED and state is not Delivery.DELIVERED:
                    return False  # a late custody ACK does not undo a receipt
                self.messages[index] = replace(message, state=state)
                self._changed("messages")
                return True
        return False

    # -- incident, units, links --------------------------------------------------------------------

    def alarm(self, alarm: IncidentAlarm) -> None:
        self.alarms[alarm.key] = alarm
        self._changed("alarms")

    def alarms_by_priority(self) -> list[IncidentAlarm]:
        return sorted(self.alarms.values(), key=lambda a: (a.priority, -a.at))

    def unit(self, unit: Unit) -> None:
        self.units[unit.name] = unit
        self._changed("units")

    def own_position(self, lat: float, lon: float) -> None:
        self.position = (lat, lon)
        self._changed("units")

    def post_heard(self, at: float) -> None:
        self.last_post_contact = max(at, self.last_post_contact or 0.0)
        self._changed("links")

    def link_rows(self, rows: list[LinkRow]) -> None:
        if rows != self.links:
            self.links = rows
            self._changed("links")
