"""Between a command post's journal and the backbone: local changes out, the region's folded state in.

The bridge reads the journal by its cursor (:meth:`relay.journal.Journal.changes`) and turns what
this post changed (a record arrived or its body changed, an operator acknowledged or closed it) into
events, folds them into its table and publishes them. It reads the events of the region from
JetStream, folds them in, and writes each record whose state changed back into the journal, whole
(:meth:`relay.journal.Journal.merge_records`), so the console shows the region's state. A change the
bridge wrote itself folds to nothing new, so nothing echoes back. Event ids come from content
(``<post>:<record>:raised``, a body's hash, an acknowledgement's operator, action and time), so a
restart that reads the journal again republishes nothing JetStream or the fold would not drop.

An acknowledgement made at another post for a record this post raised (a building that reports
here) goes to the owning application's hook once, which carries it back to the building over the
mesh; the journal keeps the bundle id with the acknowledgement, so a restart does not send it twice.

Bundles this post's node holds for a node another post heard last go to that post
(:mod:`relay.backbone.handover`); a bundle handed to this post goes to its node as custodian.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from nats.errors import Error as NatsError

from crypto.errors import CryptoError
from relay.api.app import ApiContext
from relay.backbone.config import BackboneSection
from relay.backbone.fold import EventKind, RecordEvent, RecordState, RecordTable
from relay.backbone.handover import Handover, HandoverPlan, Sightings
from relay.backbone.nats_link import BackboneError, NatsBackbone
from relay.backbone.shared import Shared, SharedError, shared_message, shared_unit
from relay.bundle import Bundle, BundleId
from relay.journal import Change, JournalBackend, MessageEntry, RecordEntry, UnknownRecordError
from relay.node import Node

log = logging.getLogger("mesh112.backbone")

POLL_S = 0.1  # how often the journal's cursor is read for local changes
BATCH = 2000  # events folded and written to the journal in one commit
REVIVE_S = 2.0  # how often the region's sources are checked for a link that came back
HANDOVER_S = 1.0  # how often the node's held bundles are checked for one to hand to another post
_LATER_S = 0.001  # a local update of a record orders at least this long after the body it replaces

AckHook = Callable[[str, dict[str, Any]], Awaitable[BundleId | None]]


class Custodian(Protocol):
    """The post's relay node, as the bridge sees it (a :class:`relay.node.Node`)."""

    @property
    def node_id(self) -> bytes: ...

    async def hand_over(self, bundle: Bundle) -> bool: ...

    def held_for(self, nodes: Collection[bytes]) -> list[Bundle]: ...


def ack_event_id(record_id: str, ack: Mapping[str, Any]) -> str:
    """An acknowledgement's event id, from what the operator did: the same at every post."""
    core = json.dumps([str(ack.get("operator", "")), str(ack.get("action", "")), float(ack["at"])])
    return f"{record_id}:ack:{hashlib.sha256(core.encode()).hexdigest()[:20]}"


def entry_content(entry: RecordEntry) -> dict[str, Any]:
    """A journal record's content as :meth:`relay.backbone.fold.RecordState.content` writes it, so a
    post's journal hashes like its folded table (:func:`relay.backbone.fold.table_hash`)."""
    return {
        "record_id": entry.record_id,
        "type": entry.type,
        "origin": entry.origin,
        "priority": entry.priority,
        "created": entry.created,
        "body": entry.body,
        "acks": [
            {
                "event_id": str(ack.get("event_id") or ack_event_id(entry.record_id, ack)),
                "at": float(ack["at"]),
                "post": str(ack.get("post", "")),
                "code": str(ack.get("action", "")),
                "operator": str(ack.get("operator", "")),
            }
            for ack in entry.acks
        ],
        "closed": entry.closed,
    }


def _body_hash(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:20]


@dataclass
class BridgeStats:
    published: int = 0  # events this post published
    applied: int = 0  # events from the backbone that changed a record here
    duplicates: int = 0  # events read again (replays, echoes of our own): dropped by the fold
    hooks: int = 0  # acknowledgements from other posts carried back to the mesh
    revived: int = 0  # sources restarted when their link came back
    handed_over: int = 0  # bundles published for another post's node
    taken: int = 0  # bundles another post handed here, taken into the node's custody


class PostBridge:
    def __init__(
        self,
        backbone: NatsBackbone,
        journal: JournalBackend,
        *,
        publish_change: Callable[[Change], None] = lambda change: None,
        ack_hooks: Mapping[str, AckHook] | None = None,
        custodian: Custodian | None = None,
    ) -> None:
        self.backbone, self.journal = backbone, journal
        self.post = backbone.config.domain
        self.table = RecordTable()
        self.stats = BridgeStats()
        self.caught_up = asyncio.Event()
        self._publish_change = publish_change
        self._hooks = dict(ack_hooks or {})
        self.custodian = custodian
        self.sightings = Sightings()  # which post heard each node last
        self._plan = HandoverPlan(self.post, custodian.node_id.hex() if custodian else "")
        self._incoming: asyncio.Queue[tuple[str, RecordEvent | Shared | Handover]] = asyncio.Queue()
        self._shared: set[str] = set()  # messages and sightings published or applied here
        self._cursor = 0
        self._carried: dict[str, dict[str, str]] = {}  # acknowledgement event -> its bundle, until written

    async def run(self) -> None:
        """Read the region's streams, then keep the journal and the backbone in step until cancelled."""
        targets = {stream: await self.backbone.last_seq(stream) for stream in self.backbone.read_streams()}
        reached = {stream: asyncio.Event() for stream in targets}
        readers = [
            asyncio.create_task(self._read(stream, target, reached[stream]), name=f"backbone-{stream}")
            for stream, target in targets.items()
        ]
        readers.append(asyncio.create_task(self._revive(), name="backbone-revive"))
        try:
            for event in reached.values():
                await event.wait()
            await self._apply_incoming()
            self.caught_up.set()
            next_handover = 0.0
            while True:
                await self._apply_incoming()
                more = self.backbone.config.role == "post" and await self._publish_local()
                if self.custodian is not None and time.monotonic() >= next_handover:
                    next_handover = time.monotonic() + HANDOVER_S
                    await self._hand_over(self.custodian)
                await asyncio.sleep(0 if more else POLL_S)
        finally:
            for reader in readers:
                reader.cancel()
            for reader in readers:
                with contextlib.suppress(asyncio.CancelledError):
                    await reader

    async def _revive(self) -> None:
        while True:
            await asyncio.sleep(REVIVE_S)
            try:
                restarted = await self.backbone.revive()
            except (TimeoutError, NatsError) as exc:
                log.warning("backbone: cannot check the region's sources: %s", exc)
                continue
            if restarted:
                self.stats.revived += len(restarted)
                log.info("backbone: the link is back; restarted %s", ", ".join(restarted))

    async def _read(self, stream: str, target: int, reached: asyncio.Event) -> None:
        if target == 0:
            reached.set()
        async for seq, post, event in self.backbone.events(stream):
            self._incoming.put_nowait((post, event))
            if seq >= target:
                reached.set()

    async def _apply_incoming(self) -> None:
        while not self._incoming.empty():
            changed: dict[str, RecordState] = {}
            remote_acks: list[tuple[str, RecordEvent]] = []
            while not self._incoming.empty() and len(changed) < BATCH:
                post, event = self._incoming.get_nowait()
                if isinstance(event, Handover):
                    self.sightings.home(event.by, post)  # its receipt goes back there
                    await self._take(event)
                    continue
                if isinstance(event, Shared):
                    if event.kind == "unit":  # our own included: they come back on our stream
                        self.sightings.heard(
                            str(event.item.get("node_id")), float(event.item.get("last_heard", 0)), post
                        )
                    await self._apply_shared(event)
                    continue
                state = self.table.apply(event)
                if state is None:
                    self.stats.duplicates += 1
                    continue
                self.stats.applied += 1
                changed[event.record_id] = state
                if event.kind is EventKind.ACKNOWLEDGED and event.post != self.post:
                    remote_acks.append((event.record_id, event))
            await self._write(changed, remote_acks)

    async def _write(
        self, changed: dict[str, RecordState], remote_acks: list[tuple[str, RecordEvent]]
    ) -> None:
        for record_id, event in remote_acks:
            state = self.table.states[record_id]
            hook = self._hooks.get(state.type)
            if hook is None or not self.owns(record_id):
                continue  # not ours to carry back: the post that raised it does
            current = await self._current(record_id)
            done = event.event_id in self._carried or (
                any(a.get("event_id") == event.event_id and "state" in a for a in current.acks)
                if current
                else False
            )
            if done:
                continue  # carried back before a restart, or not yet written
            ack = {"operator": event.operator, "action": event.code, "at": event.at}
            try:
                bundle = await hook(record_id, ack)
            except (ValueError, LookupError) as exc:
                log.warning(
                    "acknowledgement of %s from post %s not carried back: %s", record_id, event.post, exc
                )
                continue
            self.stats.hooks += 1
            self._carried[event.event_id] = {
                "state": "sent",
                **({"bundle_id": bundle.key().hex()} if bundle else {}),
            }
        await self._settle(changed)

    async def _settle(self, changed: dict[str, RecordState], again: bool = True) -> None:
        """Write each changed record's folded state into the journal where it differs. A record
        written here meanwhile is not written over: a post's change it has not published yet is
        published first (:meth:`_publish_local` settles it then); one written between this read and
        the write (the journal refuses the merge) is read again once."""
        entries: list[RecordEntry] = []
        for record_id, state in changed.items():
            if state.body_from is None:
                continue  # only acknowledgements so far; written once the record itself arrives
            current = await self._current(record_id)
            if current is not None and self._unpublished(current):
                continue
            entry = self._entry(state, current, self._carried)
            if current is None or (entry.body, entry.acks, entry.closed) != (
                current.body,
                current.acks,
                current.closed,
            ):
                entries.append(entry)
        if not entries:
            return
        stored = await self.journal.merge_records(entries)
        for entry in stored:
            for ack in entry.acks:
                self._carried.pop(str(ack.get("event_id")), None)
            self._publish_change(Change(entry.seq, "record", entry))
        written = {entry.record_id for entry in stored}
        refused = {e.record_id: changed[e.record_id] for e in entries if e.record_id not in written}
        if refused and again:
            await self._settle(refused, again=False)

    def _unpublished(self, current: RecordEntry) -> bool:
        """Whether the journal holds a change of a record that this post has not published yet: its
        own folded state does not have it, and written over, it would be lost."""
        return self.backbone.config.role == "post" and current.seq > self._cursor

    async def _apply_shared(self, shared: Shared) -> None:
        """A message or unit sighting from the region into the journal (idempotent there)."""
        if shared.event_id in self._shared:
            self.stats.duplicates += 1
            return
        self._shared.add(shared.event_id)
        try:
            if shared.kind == "message":
                stored = await self.journal.add_message(shared.message())
                if stored is not None:
                    self._publish_change(Change(stored.seq, "message", stored))
                return
            unit, position = shared.sighting()
        except SharedError as exc:
            log.warning("backbone: %s (skipped)", exc)
            return
        heard = await self.journal.heard(
            unit.node_id, name=unit.name, roles=unit.roles, at=unit.last_heard, position=position
        )
        self._publish_change(Change(heard.seq, "unit", heard))

    async def _hand_over(self, custodian: Custodian) -> None:
        """Publish the bundles held here long enough for a node another post heard last."""
        held = custodian.held_for(self.sightings.elsewhere(self.post))
        due = self._plan.due(held, self.sightings, time.monotonic())
        if due:
            await self.backbone.publish(due)
            self.stats.handed_over += len(due)
            log.info("backbone: %d bundles handed to the posts that heard their nodes", len(due))

    async def _take(self, handover: Handover) -> None:
        """A bundle another post handed to this one: into the node's custody (once: the store and
        the node keep it by id and digest)."""
        if handover.to != self.post or self.custodian is None:
            return
        try:
            taken = await self.custodian.hand_over(handover.bundle)
        except CryptoError as exc:
            log.warning("bundle %s handed over by the backbone refused: %s", handover.bundle.id, exc)
            return
        if taken:
            self.stats.taken += 1

    def owns(self, record_id: str) -> bool:
        """Whether this post raised the record (it came here over the mesh): its applications carry
        acknowledgements back to where it came from."""
        state = self.table.states.get(record_id)
        return state is None or f"{self.post}:{record_id}:raised" in state.events

    def guard_hooks(self, hooks: dict[str, AckHook]) -> None:
        """Make the API's acknowledgement hooks skip records another post raised: the post that
        raised one carries the acknowledgement back when the backbone brings it there."""
        for record_type, hook in list(hooks.items()):
            hooks[record_type] = self._guarded(hook)

    def _guarded(self, hook: AckHook) -> AckHook:
        async def guarded(record_id: str, ack: dict[str, Any]) -> BundleId | None:
            return await hook(record_id, ack) if self.owns(record_id) else None

        return guarded

    async def _current(self, record_id: str) -> RecordEntry | None:
        try:
            return await self.journal.record(record_id)
        except UnknownRecordError:
            return None

    @staticmethod
    def _entry(
        state: RecordState, current: RecordEntry | None, sent: Mapping[str, dict[str, Any]]
    ) -> RecordEntry:
        local: dict[str, dict[str, Any]] = {}
        if current is not None:
            for ack in current.acks:
                key = ack.get("event_id") or ack_event_id(state.record_id, ack)
                local[str(key)] = ack
        acks = [
            {
                **local.get(a.event_id, {}),
                **sent.get(a.event_id, {}),
                "event_id": a.event_id,
                "operator": a.operator,
                "action": a.code,
                "at": a.at,
                "post": a.post,
            }
            for a in state.acks
        ]
        assert state.body_from is not None
        created = state.created if state.created is not None else state.body_from[0]
        received = current.received if current is not None else time.time()
        return RecordEntry(
            state.record_id,
            state.type,
            state.origin,
            state.priority,
            created,
            received,
            dict(state.body),
            acks,
            seq=current.seq if current is not None else 0,  # the version it replaces
            closed=state.closed,
        )

    async def _publish_local(self) -> bool:
        """Publish what one batch of journal changes did here; True if more may be waiting. One
        batch at a time, so a post under a steady load publishes as it goes."""
        found = await self.journal.changes(self._cursor, BATCH)
        if not found:
            return False
        self._cursor = found[-1].seq
        events = [e for c in found if isinstance(c.item, RecordEntry) for e in self._local_events(c.item)]
        shared = [
            s
            for c in found
            if not isinstance(c.item, RecordEntry)
            for s in [shared_message(c.item) if isinstance(c.item, MessageEntry) else shared_unit(c.item)]
            if s.event_id not in self._shared
        ]
        for event in events:
            self.table.apply(event)
        self._shared.update(s.event_id for s in shared)
        if events or shared:
            await self.backbone.publish([*events, *shared])
            self.stats.published += len(events) + len(shared)
        touched = {
            c.item.record_id: self.table.states[c.item.record_id]
            for c in found
            if isinstance(c.item, RecordEntry) and c.item.record_id in self.table.states
        }
        await self._settle(touched)  # e.g. a local close settled to an earlier one, or left by _settle
        return len(found) == BATCH

    def _local_events(self, entry: RecordEntry) -> list[RecordEvent]:
        """What this post did to ``entry`` that the region has not seen yet."""
        state = self.table.states.get(entry.record_id)
        events: list[RecordEvent] = []

        def written(kind: EventKind, event_id: str, at: float) -> RecordEvent:
            return RecordEvent(
                event_id,
                entry.record_id,
                kind,
                at,
                self.post,
                type=entry.type,
                origin=entry.origin,
                priority=entry.priority,
                body=entry.body,
            )

        if state is None or state.body_from is None:
            events.append(written(EventKind.RAISED, f"{self.post}:{entry.record_id}:raised", entry.created))
        elif dict(state.body) != entry.body:
            event_id = f"{self.post}:{entry.record_id}:body:{_body_hash(entry.body)}"
            # Ordered after the body it replaces, whatever the clocks: every version of a record
            # keeps its first arrival time, and at that time the versions were ordered by their ids'
            # hashes, so an older body folded in over the newer one (the raising post's journal too)
            at = max(time.time(), state.body_from[0] + _LATER_S)
            events.append(written(EventKind.UPDATED, event_id, at))
        seen = state.events if state is not None else frozenset()
        for ack in entry.acks:
            if "event_id" in ack:
                continue  # came from the backbone
            event_id = ack_event_id(entry.record_id, ack)
            if event_id not in seen:
                events.append(
                    RecordEvent(
                        event_id,
                        entry.record_id,
                        EventKind.ACKNOWLEDGED,
                        float(ack["at"]),
                        self.post,
                        code=str(ack.get("action", "")),
                        operator=str(ack.get("operator", "")),
                    )
                )
        if entry.closed is not None and (
            state is None or state.closed is None or entry.closed < state.closed
        ):
            event_id = f"{entry.record_id}:closed:{entry.closed!r}"
            events.append(RecordEvent(event_id, entry.record_id, EventKind.CLOSED, entry.closed, self.post))
        return events


def bridge_for_post(config: BackboneSection, journal: JournalBackend, ctx: ApiContext) -> PostBridge:
    """The bridge between a post's journal and the backbone, its changes on the API's live stream;
    from here on the API's acknowledgement hooks leave records raised at another post to that post.
    A post's relay node hands bundles to and takes them from other posts; the centre's does not."""
    bridge = PostBridge(
        NatsBackbone(config),
        journal,
        publish_change=lambda change: ctx.hub.publish(change.event()),
        ack_hooks=ctx.ack_hooks,
        custodian=ctx.node if isinstance(ctx.node, Node) and config.role == "post" else None,
    )
    bridge.guard_hooks(ctx.ack_hooks)
    return bridge


async def run_bridge(bridge: PostBridge, retry_s: float = 2.0) -> None:
    """Connect to the local nats-server (retrying: the post works alone until it answers), then keep
    the journal and the backbone in step until cancelled."""
    while True:
        try:
            await bridge.backbone.connect()
            break
        except BackboneError as exc:
            log.warning("%s; retrying in %.0f s (this post works alone meanwhile)", exc, retry_s)
            await asyncio.sleep(retry_s)
    log.info("backbone: %s joined as %s", bridge.post, bridge.backbone.config.role)
    try:
        await bridge.run()
    finally:
        await bridge.backbone.close()
