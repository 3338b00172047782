"""``Node``: the thin asyncio runner around a :class:`NodeEngine`: real clock, real links.

One task per link pulls a frame from the engine whenever the link is idle (that is what lets a
FLASH bundle overtake everything queued: it waits at most for the frame already being sent; on
LoRa, not for that frame's radio ACK, see :meth:`Node._run_link`), one
task feeds link events to the engine in arrival order, the frames in batches (every frame queued
while the previous batch was being stored, up to :data:`MAX_BATCH_FRAMES`: one store commit, no
task per frame; a FLASH frame goes ahead of the frames waiting, in a batch of its own), and one task
runs the engine's timers.
Applications use :meth:`send`, ``async for delivery in node.inbox()``, :meth:`ack` and
:meth:`status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.registry import Collector

from crypto.certificate import RevocationList
from relay.bundle import Bundle, BundleId, Destination, Priority, to_epoch
from relay.core.frames import goes_ahead
from relay.core.receipts import BundleStatus
from relay.engine import Delivery, NodeEngine, Outgoing, SecurityCounters, SendError, StatusCallback
from relay.kinds import KindRegistry
from relay.links.base import Link, LinkError

log = logging.getLogger(__name__)
_FLASH, _BULK = Priority.FLASH, Priority.BULK

# An idle loop looks again at least this often: the store's expiry runs once a minute. Every timer
# the loops wait for is in the engine's next deadline, so a shorter look only woke an idle phone
# (every 5 s was 12 wake-ups a minute beside one beacon exchange; issue 17).
IDLE_WAKE_S = 60.0
MAX_BATCH_FRAMES = 256  # frames admitted as one batch (one store commit); FLASH goes ahead of them
MAX_BATCHES_IN_FLIGHT = 2  # one batch is taken in while the previous one commits (FLASH: one more)
# frames of one neighbour that may wait ahead of the others at once: an honest one sends a few
# alarms; a flood of FLASH frames from one keeps the arrival order beyond this
MAX_AHEAD_PER_PEER = 16
# A link hands frames over without waiting while its window has room, so a link draining a batch
# held the loop for all of it (250 frames: the batch's own answer, its commit done meanwhile, came
# only after them). It lets the loop's other work in every this many frames.
YIELD_EVERY_FRAMES = 16


@dataclass(slots=True)  # not frozen: one per frame overheard, and a frozen init costs 1.06 µs, not 0.15
class _LinkEvent:
    what: str  # "up" | "down" | "overheard" (a frame to another neighbour: an implicit ACK)
    link: str
    peer: bytes
    frame: bytes = b""


class _Frames(list[tuple[str, bytes, bytes]]):
    """Frames received one after another, as (link, peer, frame): one entry in the event queue for
    all of them. A link hands over a record's frames in one go (an IP record carries about 20), and
    an event and a queue put and get per frame cost about 1.5 µs each. ``flash`` counts the FLASH
    frames put at its front, ahead of the frames that were waiting (:meth:`Node.frame_received`)."""

    flash = 0


class Node:
    def __init__(
        self, engine: NodeEngine, links: Sequence[Link], clock: Callable[[], float] = time.time
    ) -> None:
        names = [link.profile.name for link in links]
        if len(set(names)) != len(names):
            raise ValueError(f"link names must be unique on a node, got {names}")
        self.engine = engine
        self.links = {link.profile.name: link for link in links}
        self._clock = clock
        # link events and frames not yet taken by the events task, in arrival order (a FLASH frame
        # excepted); ``_queued`` is set when an entry is added
        self._events: deque[_LinkEvent | _Frames] = deque()
        self._queued = asyncio.Event()
        # the last entry of ``_events`` while it is a batch of frames not yet taken: the frames that
        # come next join it, in order, as no other link event came between
        self._receiving: _Frames | None = None
        self._wakes: dict[str, asyncio.Event] = {name: asyncio.Event() for name in [*self.links, ""]}
        self._tasks: list[asyncio.Task[None]] = []
        self._handlers: set[asyncio.Task[None]] = set()  # batches of frames being handled (stored, acked)
        self._room = asyncio.Event()  # set when a batch is handled or a frame goes ahead (_run_events)
        # per link with ``flash_alongside`` (LoRa): its sends still running (awaiting a radio ACK)
        self._sending: dict[str, set[asyncio.Task[None]]] = {name: set() for name in self.links}
        # frames that went ahead of the frames waiting, per neighbour (at most MAX_AHEAD_PER_PEER)
        self._ahead: dict[bytes, int] = {}
        # frames waiting for room a stalled peer's queue lacks, per (link, peer, FLASH or not): later
        # ones of the same kind to that peer wait behind them, and the link goes on with the others
        self._waiting: dict[tuple[str, bytes, bool], set[asyncio.Task[None]]] = {}
        # per link, the peers with an ordinary frame waiting for room: the core holds back their
        # other frames (FLASH excepted) and gives the link those of the other peers
        self._busy: dict[str, set[bytes]] = {name: set() for name in self.links}
        # Prometheus collectors of the applications riding on this node, scraped with the node's own.
        self.collectors: list[Collector] = []
        engine.on_revocations(self._revoked)
        engine.on_frames_ready(self._wake)  # ACKs before a batch's receipts; a bundle sent, before its commit

    @property
    def node_id(self) -> bytes:
        return self.engine.node_id

    @property
    def kinds(self) -> KindRegistry:
        return self.engine.kinds

    def now(self) -> float:
        return to_epoch(self._clock())

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._run_events(), name="node-events"))
        self._tasks.append(asyncio.create_task(self._run_timers(), name="node-timers"))
        for name, link in self.links.items():
            self._tasks.append(asyncio.create_task(self._run_link(name, link), name=f"node-link-{name}"))
            await link.start(self)

    async def stop(self) -> None:
        """Stop links and tasks and close the engine (the store is left consistent)."""
        for link in self.links.values():
            with contextlib.suppress(LinkError):
                await link.stop()
        sending = [task for link_sends in self._sending.values() for task in link_sends]
        sending += [task for waiting in self._waiting.values() for task in waiting]
        tasks = [*self._tasks, *self._handlers, *sending]  # a cancelled frame is simply not acknowledged
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._handlers.clear()
        for link_sends in self._sending.values():
            link_sends.clear()
        await self.engine.close()

    # -- application API -------------------------------------------------------------------------

    async def send(
        self,
        destination: Destination,
        payload: bytes,
        *,
        kind: int,
        priority: Priority = Priority.PRIORITY,
        lifetime: int = 3600,
    ) -> BundleId:
        """Returns the bundle id once the bundle is durable in this node's store; its frame may have
        left meanwhile (:meth:`relay.engine.NodeEngine.send`)."""
        return await self.engine.send(  # the engine woke the links as soon as the frame was queued
            destination, payload, kind=kind, priority=priority, lifetime=lifetime, now=self.now()
        )

    async def send_many(self, messages: Sequence[Outgoing]) -> list[BundleId | SendError]:
        """:meth:`send` for a batch: per message its durable id or why it was not sent; one store
        commit and one wake-up of the links for the lot (:meth:`relay.engine.NodeEngine.send_many`)."""
        results = await self.engine.send_many(messages, self.now())
        self._wake()
        return results

    async def hand_over(self, bundle: Bundle) -> bool:
        """Take custody of a bundle a trusted local application brings whole (see
        :meth:`relay.engine.NodeEngine.hand_over`); False if it was already here."""
        taken = await self.engine.hand_over(bundle, self.now())
        self._wake()
        return taken

    def held_for(self, nodes: Collection[bytes]) -> list[Bundle]:
        """The bundles held here for one of ``nodes`` (see :meth:`relay.core.machine.RelayCore.held_for`)."""
        return self.engine.core.held_for(nodes)

    async def inbox(self) -> AsyncIterator[Delivery]:
        """Deliveries for this node; acknowledge each with :meth:`ack` once handled."""
        async for deliveries in self.inbox_batches():
            for delivery in deliveries:
                yield delivery

    async def inbox_batches(self, *, idempotent: bool = False) -> AsyncIterator[list[Delivery]]:
        """Deliveries as lists of all that arrived since the last one, for an application that
        records a burst in one write and acknowledges it with one :meth:`ack_many`.

        ``idempotent=True`` is a promise: the application keeps what it records once per bundle id
        however often a bundle comes, across its restarts (the command post's journal: a message
        per bundle id). It then gets each bundle as it arrives, while this node commits it, not
        after; it may see a bundle again after a failed commit or a crash (docs/relay-core.md,
        "Delivering while committing"). Without it, a bundle comes once its commit is done."""
        self.engine.deliver_before_commit = idempotent
        while True:
            yield await self.engine.receive()

    async def ack(self, bundle_id: BundleId) -> None:
        await self.engine.ack_many([bundle_id], self.now())

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """:meth:`ack` for several deliveries, in one store write. With ``inbox_batches(idempotent=
        True)`` an ack also says the application keeps them: their custody ACKs and receipts wait for it."""
        bundle_ids = [delivery.bundle_id for delivery in deliveries]
        await self.engine.ack_many(bundle_ids, self.now(), [delivery.key for delivery in deliveries])

    def status(self, bundle_id: BundleId) -> BundleStatus:
        return self.engine.status(bundle_id)

    def on_status(self, callback: StatusCallback) -> None:
        self.engine.on_status(callback)

    async def publish_revocations(self, revocations: RevocationList) -> BundleId:
        """Apply a signed revocation list here and flood it to every node (FLASH)."""
        bundle_id = await self.engine.publish_revocations(revocations, self.now())
        self._wake()
        return bundle_id

    @property
    def security(self) -> SecurityCounters:
        return self.engine.security

    def _revoked(self, revocations: RevocationList) -> None:
        for link in self.links.values():
            link.revoked(revocations)

    def health_problems(self) -> list[str]:
        """What keeps this node from doing all it should (for ``/healthz``); empty when healthy."""
        disk_full = self.engine.store.disk_full
        return [disk_full] if disk_full else []

    def link_info(self) -> list[dict[str, Any]]:
        """One row per neighbour on each link, for operators (the API's links view)."""
        core = self.engine.core
        return [
            {
                "link": name,
                "kind": link.profile.kind,
                "peer": peer.hex(),
                "up": True,
                "queued": core.queued(name),
                "detail": f"mtu {link.profile.mtu} B, {link.profile.bitrate:.0f} B/s",
            }
            for name, link in self.links.items()
            for peer in core.neighbours(name)
        ]

    # -- LinkEvents (called by links) ------------------------------------------------------------

    def link_up(self, link: str, peer: bytes) -> None:
        self._queue(_LinkEvent("up", link, peer))

    def link_down(self, link: str, peer: bytes) -> None:
        # Frames waiting for that peer's room will not find it (a link's send to a peer gone may
        # wait for ever): they are dropped, and the core reroutes what it gave that peer.
        for flash in (False, True):
            for task in self._waiting.get((link, peer, flash), ()):
                task.cancel()
        self._queue(_LinkEvent("down", link, peer))

    def frame_received(self, link: str, peer: bytes, frame: bytes) -> None:
        if goes_ahead(frame) and self._ahead.get(peer, 0) < MAX_AHEAD_PER_PEER:
            # Frames may wait (a backlog read faster than it is stored: thousands over IP). A FLASH
            # frame (or a certificate one may need) goes ahead of them, behind those that went
            # ahead before it, so it joins the next batch; never ahead of a link event (a
            # neighbour's coming or going). A neighbour past its count keeps its frames' places.
            segment = self._ahead_segment()
            segment.insert(segment.flash, (link, peer, frame))
            segment.flash += 1
            self._ahead[peer] = self._ahead.get(peer, 0) + 1
            self._room.set()  # it may start a batch of its own beside those in flight
            return
        frames = self._receiving
        if frames is None:
            frames = self._receiving = _Frames()
            self._events.append(frames)
            self._queued.set()
        frames.append((link, peer, frame))

    def _ahead_segment(self) -> _Frames:
        """Where a frame that goes ahead is put, at the front: the frames queued after the last
        link event, or a new entry if none are."""
        events = self._events
        at = len(events)
        while at and type(events[at - 1]) is _Frames:
            at -= 1
        if at < len(events):
            segment = events[at]
            assert isinstance(segment, _Frames)
            return segment
        segment = self._receiving = _Frames()
        events.append(segment)
        self._queued.set()
        return segment

    def frame_overheard(self, link: str, peer: bytes, frame: bytes) -> None:
        self._queue(_LinkEvent("overheard", link, peer, frame))

    def _queue(self, event: _LinkEvent) -> None:
        self._receiving = None  # frames after it wait for it
        self._events.append(event)
        self._queued.set()

    # -- tasks -----------------------------------------------------------------------------------

    def _wake(self) -> None:
        for event in self._wakes.values():
            event.set()

    async def _sleep(self, name: str, deadline: float | None) -> bool:
        """Wait for a wake-up, ``deadline`` or :data:`IDLE_WAKE_S`; True if woken before them."""
        timeout = IDLE_WAKE_S if deadline is None else min(IDLE_WAKE_S, max(0.0, deadline - self.now()))
        wake = self._wakes[name]
        # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancellation that races
        # with the wake-up, and stop() would then wait for this loop forever.
        try:
            async with asyncio.timeout(timeout):
                await wake.wait()
        except TimeoutError:
            return False
        return True

    async def _run_events(self) -> None:
        """Frames go to the engine in batches: every frame queued by the time a batch may start
        (at most :data:`MAX_BATCHES_IN_FLIGHT` at once) joins it, so a burst costs one store commit
        per batch. A neighbour coming or going waits until the frames before it are handled."""
        in_flight = self._handlers
        events = self._events
        while True:
            while not events:
                self._queued.clear()
                await self._queued.wait()
            event = events[0]
            if isinstance(event, _LinkEvent):
                events.popleft()
                await asyncio.gather(*in_flight)
                await self._link_event(event)
                continue
            # FLASH frames that went ahead start their batch beside a full pipeline (one more in
            # flight): its put takes the store's alarm lane (relay/store.py), so it waits for the
            # commit running and not for the batches before it (up to 95 ms a hop behind a backlog)
            while len(in_flight) >= (MAX_BATCHES_IN_FLIGHT + 1 if event.flash else MAX_BATCHES_IN_FLIGHT):
                self._room.clear()
                await self._room.wait()
            frames = self._next_batch()
            task = asyncio.create_task(self._frames(frames))
            in_flight.add(task)
            task.add_done_callback(self._handled)

    def _handled(self, task: asyncio.Task[None]) -> None:
        """A batch is done: the events task may start the next."""
        self._handlers.discard(task)
        self._room.set()

    def _next_batch(self) -> list[tuple[str, bytes, bytes]]:
        """The next batch, from the front of the queue: the FLASH frames that went ahead, alone (a
        batch of one quick commit, not of 256 frames), else up to :data:`MAX_BATCH_FRAMES` frames
        in arrival order."""
        events = self._events
        head = events[0]
        assert isinstance(head, _Frames)
        if head.flash:
            take = min(head.flash, MAX_BATCH_FRAMES)
            frames = head[:take]
            del head[:take]
            head.flash -= take
            if not head:
                if head is self._receiving:
                    self._receiving = None
                events.popleft()
            ahead = self._ahead
            for _, peer, _ in frames:
                if ahead[peer] > 1:
                    ahead[peer] -= 1
                else:
                    del ahead[peer]
            return frames
        frames = []
        while events and isinstance(head := events[0], _Frames) and not head.flash:
            if head is self._receiving:
                self._receiving = None  # frames from now on go in the next batch
            room = MAX_BATCH_FRAMES - len(frames)
            if len(head) > room:  # the rest start the next batch
                frames += head[:room]
                del head[:room]
                break
            frames += head
            events.popleft()
        return frames

    async def _link_event(self, event: _LinkEvent) -> None:
        now = self.now()
        try:
            if event.what == "up":
                link = self.links[event.link]
                await self.engine.link_up(link.profile, event.peer, now, link.pace(event.peer))
            elif event.what == "overheard":
                await self.engine.frame_overheard(event.link, event.peer, event.frame, now)
            else:
                await self.engine.link_down(event.link, event.peer, now)
        except Exception:
            log.exception("link event %s on %s failed", event.what, event.link)
        self._wake()

    async def _frames(self, frames: list[tuple[str, bytes, bytes]]) -> None:
        try:
            await self.engine.frames_received(frames, self.now())
        except Exception:  # not acknowledged: the senders send them again
            log.exception("a batch of %d frame(s) could not be handled", len(frames))
        self._wake()

    async def _run_timers(self) -> None:
        """The engine's timers when one is due, and at least every :data:`IDLE_WAKE_S` (the store's
        expiry). A wake-up (a bundle sent or stored) only reads the next deadline again: running
        the timers on each one put their work between a new bundle and the link and application
        tasks woken with it (about 0.1 ms on each side of a hop)."""
        while True:
            self._wakes[""].clear()
            await self.engine.on_timer(self.now())
            self._wake_links()
            idle_until = self.now() + IDLE_WAKE_S
            while await self._sleep("", self._timer_deadline(idle_until)):
                self._wakes[""].clear()

    def _timer_deadline(self, idle_until: float) -> float:
        deadline = self.engine.next_deadline()
        return idle_until if deadline is None else min(deadline, idle_until)

    def _wake_links(self) -> None:
        for name, event in self._wakes.items():
            if name:
                event.set()

    async def _run_link(self, name: str, link: Link) -> None:
        """Hands the link a frame whenever it is idle. A link with ``flash_alongside`` (LoRa, whose
        send lasts until the radio's ACK) runs each send as a task and meanwhile takes FLASH frames
        only, so no alarm waits for another frame's ACK (docs/lora.md)."""
        sent = 0
        sending = self._sending[name]
        while True:
            self._wakes[name].clear()
            out = None
            if len(sending) <= link.flash_alongside and self._link_known(name):
                out = self.engine.next_frame(name, self.now(), _FLASH if sending else _BULK, self._busy[name])
            if out is None:
                deadline = self.engine.next_deadline()
                if deadline is not None and deadline <= self.now():
                    # Due, and no frame: the timers' work (a copy's timeout set by a frame taken since
                    # they slept, a damaged stored bundle's drop). They run now and wake the links
                    # after; sleeping on a deadline already past, this loop asked again and again.
                    self._wakes[""].set()
                    deadline = None
                await self._sleep(name, deadline)
                continue
            peer, frame = out
            acks = self.engine.core.take_implicit_acks(name) if link.profile.implicit_ack else ()
            if link.flash_alongside:
                task = asyncio.create_task(self._alongside(name, link, peer, frame, acks))
                sending.add(task)
                task.add_done_callback(sending.discard)
                task.add_done_callback(lambda _: self._wakes[name].set())
                continue
            try:
                if acks:
                    await link.send_acknowledging(peer, frame, acks)
                elif goes_ahead(frame):
                    await self._send_ahead(name, link, peer, frame)
                else:
                    taken = link.try_send(peer, frame)
                    if taken is None:
                        await link.send(peer, frame)
                    elif not taken:
                        self._send_later(name, link, peer, frame, flash=False)
            except LinkError as exc:
                self._lost(name, peer, frame, exc)
            sent += 1
            if sent % YIELD_EVERY_FRAMES == 0:
                await asyncio.sleep(0)

    async def _send_ahead(self, name: str, link: Link, peer: bytes, frame: bytes) -> None:
        """A FLASH frame (or a certificate frame one may need), ahead of the frames the link holds
        for its peer. Where the link has no room even for it (a stalled peer's queue holds a
        window of such frames) it waits in a task of its own, behind that peer's other waiting
        ones, and the link task goes on with the other peers."""
        if not self._waiting.get((name, peer, True)):
            taken = link.try_send(peer, frame, flash=True)
            if taken is None:
                await link.send_flash(peer, frame)
                return
            if taken:
                return
        self._send_later(name, link, peer, frame, flash=True)

    def _send_later(self, name: str, link: Link, peer: bytes, frame: bytes, flash: bool) -> None:
        """Hand ``frame`` over once ``peer`` has room for it, in a task of its own behind that peer's
        frames of the same kind already waiting. An ordinary frame makes the peer busy: the core
        holds its other frames back until the frame went, and the link task goes on with the other
        peers' (one slow or paused peer held every frame of the link back, docs/ip-link.md)."""
        key = (name, peer, flash)
        waiting = self._waiting.setdefault(key, set())
        task = asyncio.create_task(self._send_when_room(key, link, frame, tuple(waiting)))
        waiting.add(task)
        if not flash:
            self._busy[name].add(peer)

    async def _send_when_room(
        self, key: tuple[str, bytes, bool], link: Link, frame: bytes, before: tuple[asyncio.Task[None], ...]
    ) -> None:
        name, peer, flash = key
        try:
            await asyncio.gather(*before, return_exceptions=True)  # that peer's earlier ones first
            await (link.send_flash(peer, frame) if flash else link.send(peer, frame))
        except LinkError as exc:
            self._lost(name, peer, frame, exc)
        except Exception:  # a task of its own: nobody else would see it (the custody timer resends)
            log.exception("link %s failed sending to %s", name, peer.hex()[:8])
        finally:
            waiting = self._waiting[key]
            waiting.discard(asyncio.current_task())
            if not waiting:
                del self._waiting[key]
                if not flash:
                    self._busy[name].discard(peer)
                    self._wakes[name].set()  # its frames may go again

    async def _alongside(
        self, name: str, link: Link, peer: bytes, frame: bytes, acks: tuple[bytes, ...]
    ) -> None:
        """One frame's send on a link with ``flash_alongside``, as a task of its own."""
        try:
            await (link.send_acknowledging(peer, frame, acks) if acks else link.send(peer, frame))
        except LinkError as exc:
            self._lost(name, peer, frame, exc)
        except Exception:  # a task of its own: nobody else would see it (the custody timer resends)
            log.exception("link %s failed sending to %s", name, peer.hex()[:8])

    def _lost(self, name: str, peer: bytes, frame: bytes, exc: LinkError) -> None:
        log.warning("link %s could not send to %s: %s", name, peer.hex()[:8], exc)
        self.engine.core.frame_lost(name, peer, frame, self.now())
        self._wakes[""].set()  # the timers: the copy may be due sooner now

    def _link_known(self, name: str) -> bool:
        return self.engine.core.has_link(name)
