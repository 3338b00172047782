"""The simulated world: many real ``NodeEngine``\\ s in one process on a simulated clock.

A discrete-event loop: an event heap ordered by (time, sequence number). Every handler awaits the
engine calls it makes before the next event is taken, so a run is deterministic although each
engine's store is a real SQLite file served by aiosqlite's thread. Nothing here reads a clock.

On a LoRa link with ``radio_arq``, a unicast frame goes through the radio's ARQ (:mod:`relay.sim.arq`):
the receiver's radio ACKs it, the sender's radio retries it, and the sender's link takes its next
frame only once the radio answered; a frame the radio gave up on is, as on the real link, an error
the node only logs. Without it a lost frame is lost, and the custody timer recovers it.

A crash drops a node's engine without closing it (what was committed stays in its SQLite file,
nothing else survives); a restart opens a new engine on the same file.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import itertools
import random
import tempfile
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay.bundle import BundleId, Priority
from relay.engine import Delivery, NodeEngine, SendError
from relay.errors import Mesh112Error
from relay.links.base import BROADCAST
from relay.links.lora_phy import FLASH_ALONGSIDE
from relay.sim.arq import (
    ACK_DATA_LEN,
    RELIABLE_TRANSMISSIONS,
    channel_utilisation,
    contention_delay,
    retransmit_timeout,
)
from relay.sim.deployment import Deployment, collect_crashed
from relay.sim.links import Contact, SimLinkSpec, Transmitter
from relay.sim.loop import InlineExecutorLoop
from relay.sim.probe import FlashProbe
from relay.sim.report import Report, SentRecord, build_report, link_figures
from relay.sim.scenario import Scenario
from relay.sim.topology import build_contacts, build_oracle
from relay.sim.traffic import PlannedSend, plan_traffic, serial_of

_FLASH, _BULK = Priority.FLASH, Priority.BULK
START_EPOCH = 90_000_000.0  # simulated time 0, in seconds since the Mesh112 epoch (late 2026)
MAX_EVENTS = 20_000_000
CLOCK_STEP_S = 1e-6
CLOCK_STEPS = 3  # steps tried when a deadline is still due after its timer ran
OVERDUE_POLL_S = 1.0  # after those, an engine whose deadline stays in the past is polled at this period


class SimulationError(Mesh112Error):
    """The simulated engines did something the simulator cannot continue from."""


@dataclass(slots=True)
class _Node:
    name: str
    engine: NodeEngine | None = None
    incarnation: int = 0
    timer_at: float | None = None
    last_timer: float = -1.0
    overdue_timers: int = 0  # timers in a row after which the deadline was still due
    overdue_polls: int = 0  # timers the engine needed because its deadline stayed in the past
    transmitters: dict[str, Transmitter] = field(default_factory=dict)
    contacts: list[Contact] = field(default_factory=list)
    peers_up: dict[str, set[str]] = field(default_factory=dict)  # per link: peers this engine was told of
    app: asyncio.Task[None] | None = None  # the node's application: records and acks deliveries
    app_idle: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(slots=True)
class _Reliable:
    """A unicast LoRa frame the sender's radio is still trying to get acknowledged."""

    packet_id: int
    sender: str
    incarnation: int
    link: SimLinkSpec
    contact: Contact | None  # None: the peer is not in contact (every transmission goes unheard)
    frame: bytes
    transmissions_left: int = RELIABLE_TRANSMISSIONS - 1
    attempt: int = 0
    done: bool = False


@dataclass(slots=True)
class _ContactState:
    up: bool = False
    generation: int = 0  # counts up transitions, so a frame can tell its contact went down meanwhile
    up_since: float = 0.0


class World:
    """Build with :meth:`open`; :meth:`run` plays the scenario to its end and returns the report."""

    def __init__(self, scenario: Scenario, deployment: Deployment, directory: Path) -> None:
        self.scenario = scenario
        self.deployment = deployment
        self.directory = directory
        self.contacts = build_contacts(scenario)
        self.sends = plan_traffic(scenario)
        self.nodes = {spec.name: _Node(spec.name) for spec in scenario.nodes}
        self._contact_state = {c: _ContactState() for c in self.contacts}
        self._by_link_pair: dict[tuple[str, str, str], Contact] = {}
        for contact in self.contacts:
            for node, peer in ((contact.a, contact.b), (contact.b, contact.a)):
                state = self.nodes[node]
                state.contacts.append(contact)
                transmitter = state.transmitters.setdefault(
                    contact.link.name, Transmitter(node, contact.link)
                )
                transmitter.contacts.append(contact)
                self._by_link_pair[(contact.link.name, node, peer)] = contact
        self._names = {deployment.node_id(name): name for name in self.nodes}
        self._heap: list[tuple[float, int, Callable[[], Any], tuple[Any, ...]]] = []
        self._sequence = itertools.count()
        self._loss = {
            link.name: random.Random(f"{scenario.seed}:loss:{link.name}") for link in scenario.links
        }
        self._contention = {
            link.name: random.Random(f"{scenario.seed}:contention:{link.name}") for link in scenario.links
        }
        self._packet_ids = itertools.count(1)
        self.probe = FlashProbe()
        self.now = 0.0
        self._deliveries: dict[int, list[float]] = {}
        self.refused_sends = 0

    @classmethod
    def create(cls, scenario: Scenario, directory: Path) -> World:
        """Identities, certificates and one store path per node, all under ``directory``."""
        return cls(scenario, Deployment.create(scenario, directory, START_EPOCH), directory)

    # -- the event loop ---------------------------------------------------------------------

    def _at(self, t: float, handler: Callable[..., Any], *args: Any) -> None:
        heapq.heappush(self._heap, (t, next(self._sequence), handler, args))

    async def run(self) -> Report:
        # What lived before the run (modules, the scenario) stays out of the garbage collections
        # meanwhile: the full ones that free a crashed node's engine scanned it all, 2-3 % of a run.
        # The collector's own passes stop meanwhile: in a reference run its 76 young and 6 middle
        # ones found no garbage (2 % of the run). Cycles are freed where a run makes them, when a
        # crashed node's engine is dropped (collect_crashed) and at the end (_close_all).
        gc.freeze()
        enabled = gc.isenabled()
        gc.disable()
        try:
            return await self._play()
        finally:
            if enabled:
                gc.enable()
            gc.unfreeze()

    async def _play(self) -> Report:
        for name in self.nodes:
            await self._start(name)
        for contact in self.contacts:
            for start, end in contact.schedule.up:
                self._at(start, self._contact_up, contact)
                self._at(end, self._contact_down, contact)
        for send in self.sends:
            self._at(send.at_s, self._send, send)
        for crash in self.scenario.crashes:
            self._at(crash.at_s, self._crash, crash.node)
            if crash.restart_s is not None:
                self._at(crash.restart_s, self._restart, crash.node)
        end = self.scenario.end_s
        events = 0
        heap, pop = self._heap, heapq.heappop
        try:
            while heap and heap[0][0] < end:
                t, _, handler, args = pop(heap)
                self.now = t
                # A handler with nothing to await (a transmitter going idle, a superseded timer:
                # about half of the events) returns None, not a coroutine made only to be awaited.
                work = handler(*args)
                if work is not None:
                    await work
                events += 1
                if events > MAX_EVENTS:
                    raise SimulationError(
                        f"more than {MAX_EVENTS} events: the scenario or an engine runs away"
                    )
            self.now = end
            return await self._report()
        finally:
            await self._close_all()

    # -- nodes ------------------------------------------------------------------------------

    async def _start(self, name: str) -> None:
        node = self.nodes[name]
        node.incarnation += 1
        node.timer_at = None
        node.peers_up = {}
        for transmitter in node.transmitters.values():
            transmitter.reboot()
        node.engine = await self.deployment.open_engine(name, START_EPOCH + self.now)
        node.app_idle.clear()
        node.app = asyncio.create_task(self._application(node, node.engine), name=f"sim-app:{name}")
        if self._app_due(node):
            await self._app_turn(node)
        self._settle(node)

    async def _application(self, node: _Node, engine: NodeEngine) -> None:
        """The node's app: records each delivery at the simulated time it is handed over, then acks."""
        while True:
            node.app_idle.set()
            deliveries: list[Delivery] = await engine.receive()
            node.app_idle.clear()
            for delivery in deliveries:
                serial = serial_of(delivery.payload)
                if serial is not None:
                    self._deliveries.setdefault(serial, []).append(self.now)
                await engine.ack(delivery.bundle_id)

    async def _stop_application(self, node: _Node) -> None:
        if node.app is not None:
            node.app.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await node.app
            node.app = None

    async def _crash(self, name: str) -> None:
        node = self.nodes[name]
        if node.engine is None:
            return
        await self._stop_application(node)
        node.engine = None  # dropped, not closed: only what the store committed survives
        await collect_crashed(self.deployment.store_path(name))
        for contact in node.contacts:
            if self._contact_state[contact].up:
                await self._tell_down(contact.other(name), contact, name)

    async def _restart(self, name: str) -> None:
        await self._start(name)
        for contact in self.nodes[name].contacts:
            if self._contact_state[contact].up:
                await self._announce(contact)

    async def _close_all(self) -> None:
        for node in self.nodes.values():
            await self._stop_application(node)
            if node.engine is not None:
                engine, node.engine = node.engine, None
                await engine.close()
        gc.collect()

    @staticmethod
    def _app_due(node: _Node) -> bool:
        """After an engine call that may have queued deliveries (a frame arrived, the app sent, the
        engine reopened its store): whether the app has a turn to take, at this simulated time.
        Other calls (timers, links going up or down, pulling frames) never deliver, so they skip
        it. A plain check, not a coroutine: most frames deliver nothing."""
        engine = node.engine
        return engine is not None and (not node.app_idle.is_set() or engine.deliveries_waiting())

    @staticmethod
    async def _app_turn(node: _Node) -> None:
        """The app takes the deliveries waiting (:meth:`_app_due`)."""
        await asyncio.sleep(0)  # the app task runs: the call queued a delivery
        await node.app_idle.wait()

    def _settle(self, node: _Node, *, called: bool = True) -> None:
        """After an engine call: idle transmitters start, the timer re-arms. ``called=False``: a
        transmitter only went idle; unless a link takes a frame, the engine's deadline stands."""
        engine = node.engine
        if engine is None:
            return
        now, peers_up, core = self.now, node.peers_up, engine.core
        # A link takes a frame when its medium is free, at most FLASH_ALONGSIDE frames await the
        # radio's answer (then FLASH only, see _transmit) and something is queued (most often not:
        # 32,000 of 52,000 checks a reference run); checked inline, as it is after every event.
        for link, transmitter in node.transmitters.items():
            if (
                now >= transmitter.busy_until
                and transmitter.awaiting_ack <= FLASH_ALONGSIDE
                and peers_up.get(link)
                and (core.queued(link) or engine.certificates.queued(link))
            ):
                called = self._transmit(node, engine, transmitter) or called
        if not called:
            return  # every link that asked had nothing queued: the engine did not change
        deadline = engine.core.next_deadline()  # NodeEngine.next_deadline asks it: one call less
        if deadline is not None:
            deadline -= START_EPOCH
            if deadline < now:  # max() without the builtin's call: asked after every event
                deadline = now
            if deadline == self.now and node.last_timer == self.now:
                # Still due right after its timer ran (float rounding of epoch-sized times): a real
                # clock would have moved on, so the simulated one does too.
                node.overdue_timers += 1
                if node.overdue_timers <= CLOCK_STEPS:
                    deadline = self.now + CLOCK_STEP_S
                else:  # an engine bug, reported as overdue_polls: poll so the run goes on
                    node.overdue_polls += 1
                    deadline = self.now + OVERDUE_POLL_S
            elif deadline > self.now:
                node.overdue_timers = 0
            if deadline != node.timer_at:
                node.timer_at = deadline
                self._at(deadline, self._timer, node.name, node.incarnation, deadline)

    def _timer(self, name: str, incarnation: int, at: float) -> Coroutine[Any, Any, None] | None:
        node = self.nodes[name]
        if node.engine is None or node.incarnation != incarnation or node.timer_at != at:
            return None  # superseded
        node.last_timer = at
        node.timer_at = None
        return self._timer_due(node, node.engine)

    async def _timer_due(self, node: _Node, engine: NodeEngine) -> None:
        await engine.on_timer(START_EPOCH + self.now)
        self._settle(node)

    async def _send(self, send: PlannedSend) -> None:
        node = self.nodes[send.src]
        if node.engine is None:
            return  # the sending device is down: the app could not hand the bundle over
        try:
            await node.engine.send(
                self.deployment.destination(send.dst),
                send.payload(),
                kind=self.deployment.kind,
                priority=send.priority,
                lifetime=send.lifetime_s,
                now=START_EPOCH + self.now,
            )
        except SendError:
            self.refused_sends += 1  # the store is full: the app was told, the bundle never existed
            return
        if self._app_due(node):
            await self._app_turn(node)
        self._settle(node)

    # -- links ------------------------------------------------------------------------------

    async def _contact_up(self, contact: Contact) -> None:
        state = self._contact_state[contact]
        state.up, state.up_since = True, self.now
        state.generation += 1
        await self._announce(contact)

    async def _announce(self, contact: Contact) -> None:
        a, b = self.nodes[contact.a], self.nodes[contact.b]
        if a.engine is None or b.engine is None:
            return
        for node, peer in ((a, b), (b, a)):
            if node.engine is not None:
                node.peers_up.setdefault(contact.link.name, set()).add(peer.name)
                await node.engine.link_up(
                    contact.link.profile, self.deployment.node_id(peer.name), self._epoch()
                )
        for node in (a, b):
            self._settle(node)

    async def _contact_down(self, contact: Contact) -> None:
        state = self._contact_state[contact]
        if not state.up:
            return
        state.up = False
        if self.nodes[contact.a].engine is None or self.nodes[contact.b].engine is None:
            return  # a crashed end already made the other see the link go
        await self._tell_down(contact.a, contact, contact.b)
        await self._tell_down(contact.b, contact, contact.a)

    async def _tell_down(self, name: str, contact: Contact, peer: str) -> None:
        node = self.nodes[name]
        if node.engine is not None:
            node.peers_up.get(contact.link.name, set()).discard(peer)
            await node.engine.link_down(contact.link.name, self.deployment.node_id(peer), self._epoch())
            self._settle(node)

    def _transmit(self, node: _Node, engine: NodeEngine, transmitter: Transmitter) -> bool:
        """Hand the link, which has frames queued, the engine's next frame; whether the engine's
        state may have changed (a frame taken, or one held back by the link's budget)."""
        link = transmitter.link
        name = link.name
        core = engine.core
        # while frames await the radio's answer, the link takes FLASH only (relay.node, flash_alongside)
        lowest = _FLASH if transmitter.awaiting_ack else _BULK
        pulled = engine.next_frame(name, START_EPOCH + self.now, lowest)
        if pulled is None:
            return core.queued(name) > 0
        peer_id, frame = pulled
        if len(frame) > link.profile.mtu:
            raise SimulationError(
                f"node {node.name} sent a {len(frame)}-byte frame on {link.name} (MTU {link.profile.mtu})"
            )
        contact: Contact | None = None
        if peer_id == BROADCAST:
            receivers = [c for c in transmitter.contacts if self._contact_state[c].up]
        else:
            peer = self._names.get(peer_id)
            contact = self._by_link_pair.get((link.name, node.name, peer)) if peer else None
            receivers = [contact] if contact is not None and self._contact_state[contact].up else []
        start = transmitter.busy_until if transmitter.busy_until > self.now else self.now  # no max() call
        done = transmitter.start(len(frame), self.now)
        flash = core.last_frame_class(name) is _FLASH
        # A DATA frame rides at its bundle's class, so only FLASH traffic can carry a FLASH bundle:
        # the other frames (most of them) are not decoded.
        flash_key = self.deployment.flash_bundle(frame) if flash else None
        queued_at = None
        if flash_key is not None:
            routed_at = core.routed_at(BundleId.from_key(flash_key), peer_id)
            if routed_at is not None:
                up_since = min((self._contact_state[c].up_since for c in receivers), default=self.now)
                queued_at = max(routed_at - START_EPOCH, up_since)
        # a forward that is an implicit ACK goes as a broadcast: the radio neither ACKs nor retries it
        overheard = link.profile.implicit_ack and self._overhear(node, engine, link, frame, done)
        reliable = link.radio_arq and peer_id != BROADCAST and not overheard
        self.probe.frame_started(
            (node.name, link.name), node.incarnation, flash, flash_key, queued_at, start, done
        )
        if reliable:
            transmitter.awaiting_ack += 1
            packet = _Reliable(
                next(self._packet_ids),
                node.name,
                node.incarnation,
                link,
                contact,
                frame,
            )
            self._radio_sent(transmitter, packet, done)
            return True
        self._at(done, self._transmitter_idle, node.name, node.incarnation)
        for contact in receivers:
            if not self._heard(link, frame):
                continue
            peer = contact.other(node.name)
            generation = self._contact_state[contact].generation
            arrival = done + link.latency_s
            self._at(
                arrival,
                self._arrive,
                contact,
                generation,
                node.name,
                node.incarnation,
                peer,
                self.nodes[peer].incarnation,
                frame,
            )
        return True

    def _overhear(
        self, node: _Node, engine: NodeEngine, link: SimLinkSpec, frame: bytes, done: float
    ) -> bool:
        """The neighbours this frame acknowledges (an implicit custody ACK) hear it, each as any
        receiver does (loss drawn per receiver); the others' radios hear it too, but it holds
        nothing for them, so it is not drawn or delivered (the draws of a run without it stay).
        Whether it acknowledges any."""
        acks = engine.core.take_implicit_acks(link.name)
        for peer_id in acks:
            peer = self._names.get(peer_id)
            contact = self._by_link_pair.get((link.name, node.name, peer)) if peer else None
            if peer is None or contact is None or not self._contact_state[contact].up:
                continue
            if not self._heard(link, frame):
                continue
            self._at(
                done + link.latency_s,
                self._arrive,
                contact,
                self._contact_state[contact].generation,
                node.name,
                node.incarnation,
                peer,
                self.nodes[peer].incarnation,
                frame,
                True,
            )
        return bool(acks)

    def _heard(self, link: SimLinkSpec, frame: bytes | None) -> bool:
        """Whether the receiver decodes one transmission of ``frame`` (None: a radio ACK)."""
        return self._loss[link.name].random() >= link.loss

    # -- the LoRa radio's ARQ ---------------------------------------------------------------

    def _utilisation(self, transmitter: Transmitter) -> float:
        return channel_utilisation(transmitter.recent_airtime(self.now))

    def _radio_sent(self, transmitter: Transmitter, packet: _Reliable, done: float) -> None:
        """One transmission of ``packet`` ends at ``done``: it reaches the peer unless lost, and the
        retransmission timer starts when the last bit has left."""
        link = transmitter.link
        assert link.lora is not None
        contact = packet.contact
        up = contact is not None and self._contact_state[contact].up
        if contact is not None and up and self._heard(link, packet.frame):
            self._at(
                done + link.latency_s,
                self._reliable_arrive,
                packet,
                self._contact_state[contact].generation,
                self.nodes[contact.other(packet.sender)].incarnation,
            )
        airtime = link.frame_time(len(packet.frame))
        timeout = retransmit_timeout(airtime, self._utilisation(transmitter), link.lora)
        self._at(done + timeout, self._radio_timeout, packet, packet.attempt)

    async def _reliable_arrive(self, packet: _Reliable, generation: int, receiver_incarnation: int) -> None:
        contact = packet.contact
        assert contact is not None
        state = self._contact_state[contact]
        receiver = contact.other(packet.sender)
        node = self.nodes[receiver]
        if not state.up or state.generation != generation or node.engine is None:
            return
        if (
            node.incarnation != receiver_incarnation
            or self.nodes[packet.sender].incarnation != packet.incarnation
        ):
            return
        link = contact.link
        radio = node.transmitters[link.name]
        # The radio queues its ACK first (at the ACK's priority), before its client sees the frame.
        assert link.lora is not None
        delay = contention_delay(self._contention[link.name], self._utilisation(radio), link.lora)
        ack_done = radio.start_ack(self.now + delay, ACK_DATA_LEN)
        if self._heard(link, None):
            self._at(ack_done + link.latency_s, self._radio_acked, packet, generation)
        self._at(ack_done, self._transmitter_idle, node.name, node.incarnation)
        if packet.packet_id in radio.seen:
            return  # a retry of a frame whose ACK was lost: ACKed again, not handed over twice
        radio.seen.add(packet.packet_id)
        await node.engine.frame_received(
            link.name, self.deployment.node_id(packet.sender), packet.frame, self._epoch()
        )
        if self._app_due(node):
            await self._app_turn(node)
        self._settle(node)

    async def _radio_acked(self, packet: _Reliable, generation: int) -> None:
        assert packet.contact is not None
        state = self._contact_state[packet.contact]
        if packet.done or not state.up or state.generation != generation:
            return
        await self._radio_answered(packet, failed=False)

    async def _radio_timeout(self, packet: _Reliable, attempt: int) -> None:
        if packet.done or packet.attempt != attempt:
            return
        node = self.nodes[packet.sender]
        if node.incarnation != packet.incarnation or node.engine is None:
            packet.done = True
            return
        if packet.transmissions_left <= 0:
            await self._radio_answered(packet, failed=True)  # MAX_RETRANSMIT: the node logs it
            return
        packet.transmissions_left -= 1
        packet.attempt += 1
        link = packet.link
        assert link.lora is not None
        transmitter = node.transmitters[link.name]
        delay = contention_delay(self._contention[link.name], self._utilisation(transmitter), link.lora)
        transmitter.retries += 1
        done = transmitter.start(len(packet.frame), self.now + delay)
        self._radio_sent(transmitter, packet, done)

    async def _radio_answered(self, packet: _Reliable, *, failed: bool) -> None:
        """The radio ACKed the frame or gave up on it: the link takes its next frame."""
        packet.done = True
        node = self.nodes[packet.sender]
        if node.incarnation != packet.incarnation or node.engine is None:
            return
        transmitter = node.transmitters[packet.link.name]
        transmitter.awaiting_ack -= 1
        if failed:
            transmitter.max_retransmit += 1
        self._settle(node)

    def _transmitter_idle(self, name: str, incarnation: int) -> None:
        node = self.nodes[name]
        if node.engine is not None and node.incarnation == incarnation:
            self._settle(node, called=False)

    async def _arrive(
        self,
        contact: Contact,
        generation: int,
        sender: str,
        sender_incarnation: int,
        receiver: str,
        receiver_incarnation: int,
        frame: bytes,
        overheard: bool = False,
    ) -> None:
        state = self._contact_state[contact]
        node = self.nodes[receiver]
        if not state.up or state.generation != generation or node.engine is None:
            return  # the contact broke or the receiver crashed while the frame was in flight
        if node.incarnation != receiver_incarnation or self.nodes[sender].incarnation != sender_incarnation:
            return
        if overheard:  # a frame to another neighbour, our custody ACK (relay.core.machine.overheard)
            await node.engine.frame_overheard(
                contact.link.name, self.deployment.node_id(sender), frame, self._epoch()
            )
            self._settle(node)
            return
        await node.engine.frame_received(
            contact.link.name, self.deployment.node_id(sender), frame, self._epoch()
        )
        if self._app_due(node):
            await self._app_turn(node)
        self._settle(node)

    def _epoch(self) -> float:
        return START_EPOCH + self.now

    # -- the report -------------------------------------------------------------------------

    async def _report(self) -> Report:
        oracle = build_oracle(self.scenario, self.contacts)
        records = [
            SentRecord(
                s.serial,
                s.src,
                s.dst,
                s.priority,
                s.size,
                s.at_s,
                s.lifetime_s,
                oracle.earliest_arrival(s.src, s.dst, s.at_s, s.size),
            )
            for s in self.sends
        ]
        links = tuple(
            link_figures(t, self.probe) for node in self.nodes.values() for t in node.transmitters.values()
        )
        high_water = {
            node.name: await self.deployment.store_high_water(node.name, node.engine)
            for node in self.nodes.values()
        }
        return build_report(
            self.scenario,
            records,
            self._deliveries,
            links,
            high_water,
            self.refused_sends,
            {n.name: n.overdue_polls for n in self.nodes.values() if n.overdue_polls},
        )


def simulate(scenario: Scenario, directory: Path | None = None) -> Report:
    """:func:`run_scenario` on the simulator's own event loop, whose blocking calls (the stores'
    SQLite transactions) run inline rather than on a thread per store (:mod:`relay.sim.loop`)."""
    with asyncio.Runner(loop_factory=InlineExecutorLoop) as runner:
        return runner.run(run_scenario(scenario, directory))


async def run_scenario(scenario: Scenario, directory: Path | None = None) -> Report:
    """Play ``scenario`` on the running loop; the stores go in ``directory`` (kept) or in a
    temporary one (removed). Same report as :func:`simulate`, slower (a thread hop per commit)."""
    if directory is not None:
        return await World.create(scenario, directory).run()
    memory = Path("/dev/shm")  # stores in RAM: every commit fsyncs, which a simulation need not wait for
    parent = memory if memory.is_dir() else None
    with tempfile.TemporaryDirectory(prefix="mesh112-sim-", dir=parent) as tmp:
        return await World.create(scenario, Path(tmp)).run()
