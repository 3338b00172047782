"""``NodeEngine``: the relay core wired to the durable store and to crypto, with no clock and no links.

Time is always passed in (seconds since the Mesh112 epoch), and frames are pushed in and pulled
out by the caller, so the same engine runs under the asyncio node (real clock, real links) and
under the simulator (virtual time). The engine seals what applications send (compact pairwise seal
for every bundle to a node, behind a mode byte above LoRa's size; signed HPKE for big FLASH and
IMMEDIATE ones, which must be provable later; group key for groups), opens
what arrives for this node, stores before acknowledging, and drops bundles whose origin this node
does not trust.

Revocations are bundles too: the signed revocation list, FLASH, to everyone, its payload not sealed
(the authority's signature proves it and a revocation list is no secret). Every node that receives
one, relay or not, applies it at once (:meth:`NodeEngine.apply_revocations`) and keeps carrying it.
The group keys rotated after a revocation arrive as ``GROUP_KEY`` bundles, one per member, each the
new key sealed to that member and signed by the authority; the engine takes them into its keyring.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence, Set
from dataclasses import dataclass, field, replace
from pathlib import Path

from crypto.certificate import Certificate, RevocationList
from crypto.errors import CryptoError, SealError, StaleEpochError
from crypto.group import GroupKey, GroupKeyring, open_group, seal_group, unwrap_group_key
from crypto.identity import Identity, PublicIdentity, display_id
from crypto.ids import SeqPermutation
from crypto.seal import COMPACT_OVERHEAD, SealContext
from relay.bundle import (
    SHORT_ID_LEN,
    Bundle,
    BundleId,
    Destination,
    DestKind,
    Kind,
    Priority,
    compact_lifetime,
    encode_full,
)
from relay.core.actions import Action, DeliverLocal, Drop, MarkForwarded, Persist, Replace, StatusChanged
from relay.core.certs import CertificateExchange
from relay.core.machine import RelayCore, UnknownLinkError
from relay.core.receipts import (
    BundleStatus,
    ForgedReceiptError,
    Receipt,
    ReceiptBatch,
    ReceiptDecodeError,
    receipts_for,
)
from relay.kinds import KindError, KindRegistry
from relay.links.base import LinkProfile
from relay.store import Store, StoreError, StoreFullError
from relay.store_reader import StoreReader
from relay.trust import TrustStore

log = logging.getLogger(__name__)
# module aliases: an enum member read costs more (Python 3.11); these are read once per frame or bundle
_FLASH = Priority.FLASH
_NODE, _ALL, _REVOCATION = DestKind.NODE, DestKind.ALL, Kind.REVOCATION

# Plaintexts up to this size get the 24-byte compact seal, told apart by length alone: frame type 1 +
# header 16 + seal 24 + 172 = 213 bytes. With LoRa's 12-byte hop tag one frame (219) holds plaintexts
# up to 166; the 6 bytes above that are fragmented. The NG112 record (<= 158) fits. Above it the
# compact seal carries a mode byte (25 bytes), or a FLASH/IMMEDIATE one the signed standard seal.
COMPACT_SEAL_MAX = 172
STORE_EXPIRE_EVERY_S = 60.0
DEFAULT_MAX_CLOCK_SKEW_S = 300.0  # a bundle created further ahead of this node's clock is refused
ALL_GROUP = "all"  # the group key that seals bundles for everyone

REVOCATION_LIFETIME_S = 68 * 3600  # the longest the compact header carries
ENGINE_KINDS = frozenset({Kind.REVOCATION, Kind.GROUP_KEY, Kind.RECEIPT, Kind.RECEIPTS})  # not for apps
StatusCallback = Callable[[BundleId, BundleStatus], None]
RevocationCallback = Callable[[RevocationList], object]  # what it returns is ignored
GroupKeyCallback = Callable[[GroupKey, bytes], object]  # the key and its wrapped form, to keep


class SendError(Exception):
    """A bundle could not be sent; the message says what the application or operator can fix."""


class StorageFullError(SendError):
    """The store cannot take the bundle: its quota is held by classes it may not evict, or the disk
    is full (the API answers 507)."""


def _not_stored(outcome: bool | StoreError) -> SendError:
    """Why the store did not take a bundle this node originated, for the application."""
    if isinstance(outcome, StoreFullError):
        return StorageFullError(f"store is full, bundle not accepted: {outcome}")
    if isinstance(outcome, StoreError):
        return SendError(f"store write failed, bundle not accepted: {outcome}")
    return SendError("the store took this bundle's fresh id as seen; send it again")


class RevocationError(CryptoError):
    """A revocation list that is not this deployment's, or older than the one this node holds."""


@dataclass
class SecurityCounters:
    """What hostile or revoked peers tried, for operators (the API exports these as metrics)."""

    revoked_frames: int = 0  # frames from a revoked neighbour, dropped before the core
    forged_receipts: int = 0  # receipts not sealed pairwise by the bundle's destination
    stale_epochs: int = 0  # group seals under an epoch the group rotated away from
    bad_revocations: int = 0  # revocation bundles that did not verify against the authority
    revocations_applied: int = 0  # newer revocation lists taken
    bad_group_keys: int = 0  # GROUP_KEY bundles that were not a key the authority sealed to this node
    future_bundles: int = 0  # bundles created further ahead than max_clock_skew_s, refused
    unopenable: int = 0  # bundles addressed to this node that did not open: forged ids, refused unseen
    unknown_origins_refused: int = 0  # frames of origins with no certificate here, beyond the waiting room
    unknown_origins_expired: int = 0  # frames that waited in vain for their origin's certificate
    bad_certificates: int = 0  # certificates a neighbour answered that did not verify here
    certificate_requests_limited: int = 0  # certificate requests from a neighbour past its rate

    def count(self, what: str) -> int:
        """Add one to ``what``; returns the new count (log lines carry it)."""
        value: int = getattr(self, what) + 1
        setattr(self, what, value)
        return value


@dataclass(slots=True)
class _Batch:
    """What one call of :meth:`NodeEngine._apply` gathers to do once at its end."""

    opened: dict[BundleId, bytes] = field(default_factory=dict)  # plaintexts opened at admission
    consumed: list[bytes] = field(default_factory=list)  # keys of inbox entries the engine took itself
    receipted: list[Bundle] = field(default_factory=list)  # delivered bundles whose origin gets a receipt
    early: set[BundleId] = field(default_factory=set)  # handed to the application before their commit
    # origins checked against the trust store in this batch (at its one ``now``), and the revocation
    # list they were checked under: a batch's bundles mostly share a few origins
    trusted: dict[bytes, PublicIdentity] = field(default_factory=dict)
    revocations: RevocationList | None = None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message of a batch an application sends (:meth:`NodeEngine.send_many`)."""

    destination: Destination
    payload: bytes
    kind: int
    priority: Priority = Priority.PRIORITY
    lifetime: int = 3600  # seconds, rounded as :meth:`NodeEngine.send` does


@dataclass(slots=True)  # not frozen: one per bundle delivered, and a frozen init costs ~4x more
class Delivery:
    """One bundle for this node's applications, opened."""

    bundle_id: BundleId
    origin: bytes
    destination: Destination
    kind: int
    priority: Priority
    created: int
    payload: bytes
    key: bytes  # the bundle id's key as the bundle kept it: BundleId.key() packs anew (~2,000 instructions)


class NodeEngine:
    def __init__(
        self,
        identity: Identity,
        certificate: Certificate,
        trust: TrustStore,
        store: Store,
        keyring: GroupKeyring,
        groups: frozenset[str],
        max_clock_skew_s: float = DEFAULT_MAX_CLOCK_SKEW_S,
    ) -> None:
        """Use :meth:`open`."""
        self.identity = identity
        self.certificate = certificate
        self.trust = trust
        self.store = store
        self.keyring = keyring
        self.node_id = identity.node_id
        self.kinds = KindRegistry()
        # most held bundles stay in the store, read back when a link takes them (relay/core/held.py)
        self._reader = StoreReader(store.path)
        self.core = RelayCore(
            self.node_id,
            certificate.roles | groups,
            context=trust.compact_context(),
            load=self._load,
        )
        self.refused_frames = 0
        self.refused_bundles = 0
        self.damaged_inbox = 0  # inbox copies that did not decode at start-up, dropped (a metric)
        self.security = SecurityCounters()
        self.certificates = CertificateExchange(trust, certificate, self.security.count, self.core.neighbours)
        trust.on_learned(lambda _: self.trust_changed())  # short ids for the LoRa encoding
        self.max_clock_skew_s = max_clock_skew_s
        self._seal = SealContext(identity)
        self._seq = SeqPermutation(identity)
        # deliveries for the applications: a deque and an event, not an asyncio.Queue, whose put and
        # get cost about 0.4 µs more per bundle (receive takes everything waiting at once anyway)
        self._inbox: deque[Delivery] = deque()
        self._inbox_ready = asyncio.Event()
        self._callbacks: list[StatusCallback] = []
        self._revocation_callbacks: list[RevocationCallback] = []
        self._group_key_callbacks: list[GroupKeyCallback] = []
        self._ready_callbacks: list[Callable[[], object]] = []
        # sent here, frame queued, commit running: a link may build the frame before the store has it
        self._committing: dict[BundleId, Bundle] = {}
        self._next_store_expiry = 0.0
        # Set by an application that keeps what it records once per bundle id, across restarts:
        # it gets bundles before this node's commit (see _deliver_early).
        self.deliver_before_commit = False
        # Its deliveries the store keeps no copy of (not held for forwarding): what each still
        # awaits, its commit here and the application's ack (2, 1). Custody ACK and receipt after both.
        self._app_keeps: dict[BundleId, int] = {}

    @classmethod
    async def open(
        cls,
        identity: Identity,
        certificate: Certificate,
        trust: TrustStore,
        store_path: Path,
        *,
        quota_bytes: int = 256 << 20,
        now: float,
        keyring: GroupKeyring | None = None,
        groups: frozenset[str] = frozenset(),
        max_clock_skew_s: float = DEFAULT_MAX_CLOCK_SKEW_S,
    ) -> NodeEngine:
        """Open the store and reload everything it holds; ``groups``: incident groups joined;
        bundles created more than ``max_clock_skew_s`` ahead of ``now`` are refused."""
        if certificate.public != identity.public:
            raise CryptoError("the certificate belongs to another identity; enrol this node again")
        store = await Store.open(Path(store_path), quota_bytes)
        await store.prepare_ids(identity.node_id, int(now))  # an alarm's first id needs no commit
        engine = cls(identity, certificate, trust, store, keyring or GroupKeyring(), groups, max_clock_skew_s)
        custody = await store.custody_records()
        for stored in engine._reader.held(engine.core.damaged_in_store):  # dropped at the first timer
            engine.core.restore(stored.bundle, stored.local, now, custody.get(stored.bundle.id, []))
        damaged: list[tuple[BundleId, str]] = []
        inbox = await store.pending_deliveries(
            damaged=lambda bundle_id, error: damaged.append((bundle_id, error))
        )
        if damaged:
            inbox += await engine._damaged_inbox(damaged)
        await engine._apply([DeliverLocal(inbox)] if inbox else [], now)
        return engine

    async def _damaged_inbox(self, damaged: list[tuple[BundleId, str]]) -> list[Bundle]:
        """Inbox copies that do not decode: one also held to pass on (a group's bundle) is written
        again from that copy and returned, to be delivered; the others cannot be delivered: say
        which, and drop them, so the node opens with its other bundles and does not stop at them
        again at the next start."""
        written = await self.store.inbox_from_held([bundle_id for bundle_id, _ in damaged])
        restored = {bundle.id for bundle in written}
        for bundle_id, error in damaged:
            if bundle_id in restored:
                log.warning(
                    "bundle %s: its inbox copy in the store %s did not decode (%s) and was written "
                    "again from its held copy (the file is damaged: check the disk)",
                    bundle_id,
                    self.store.path,
                    error,
                )
                continue
            log.error(
                "bundle %s not delivered: its inbox copy in the store %s does not decode (%s); the "
                "file is damaged: restore it from a backup or move it aside (the copy is dropped, the "
                "node's other bundles go on)",
                bundle_id,
                self.store.path,
                error,
            )
        lost = [bundle_id for bundle_id, _ in damaged if bundle_id not in restored]
        self.damaged_inbox += len(lost)
        if lost:
            await self.store.ack_deliveries([bundle_id.key() for bundle_id in lost])
        return written

    async def close(self) -> None:
        self._reader.close()
        await self.store.close()

    # -- application side ------------------------------------------------------------------------

    async def send(
        self,
        destination: Destination,
        payload: bytes,
        *,
        kind: int,
        priority: Priority,
        lifetime: int,
        now: float,
    ) -> BundleId:
        """Seal and store a bundle; it is durable when this returns. Lifetimes are whole minutes
        (the LoRa header's unit), from 1 minute to 68 h 15 min; others are rounded into that range.

        A bundle for another node is queued for the links *while* its commit runs (the callbacks of
        :meth:`on_frames_ready` run then), so its frame may leave before it is durable here; this
        still returns only after the commit. If the commit fails, :class:`StorageFullError` is
        raised, the bundle is not sent again, and a frame that left may still be delivered: the
        application, told "not accepted", may send it again (at least once, as after a crash
        between the commit and the answer). Why: docs/relay-core.md, "Sending while committing"."""
        self.kinds.validate(kind, payload)
        for_me = destination.kind is DestKind.NODE and destination.node == self.node_id
        try:
            alarm = priority is Priority.FLASH
            counter = await self.store.next_bundle_id(self.node_id, int(now), urgent=alarm)
            bundle = self._sealed(Outgoing(destination, payload, kind, priority, lifetime), counter)
            if for_me:  # delivered here: into the inbox in the same commit, then to the application
                await self.store.put(bundle, now=now, local=True, deliver=True, hold=False)
            else:
                self._leave_while_committing([bundle], now)
                try:
                    await self.store.put(bundle, now=now, local=True, overlap=True)
                except StoreError:
                    self.core.not_stored(bundle.id)
                    raise
                finally:
                    del self._committing[bundle.id]
        except StoreFullError as exc:  # the disk or the quota; any other StoreError goes up as it is
            raise _not_stored(exc) from None
        actions = self._evictions(now)
        if for_me:
            actions += self.core.originate(bundle, now)
        await self._apply(actions, now)
        return bundle.id

    async def send_many(self, messages: Sequence[Outgoing], now: float) -> list[BundleId | SendError]:
        """:meth:`send` for a batch an application hands over at once: ids reserved together, every
        bundle stored in one commit and handed to the core in one step (no task, future or commit
        per message); as in :meth:`send`, the frames of bundles for other nodes may leave while the
        commit runs. Each message stands alone: its durable id, or the :class:`SendError` saying
        why it was not sent (nothing of it stored; the others are not held back by it)."""
        if not messages:
            return []
        try:
            counters = await self.store.next_bundle_ids(self.node_id, int(now), len(messages))
        except StoreFullError as exc:  # the disk is full
            return [StorageFullError(f"store is full, bundle not accepted: {exc}")] * len(messages)
        results: list[BundleId | SendError] = []
        items: list[tuple[Bundle, bool, bool]] = []
        for message, counter in zip(messages, counters, strict=True):
            try:
                self.kinds.validate(message.kind, message.payload)
                bundle = self._sealed(message, counter)
            except (KindError, CryptoError) as exc:
                results.append(SendError(str(exc)))
                continue
            dest = message.destination
            for_me = dest.kind is DestKind.NODE and dest.node == self.node_id
            items.append((bundle, for_me, not for_me))
            results.append(bundle.id)
        # As in send: bundles for other nodes are queued while the commit runs; those for this node
        # enter the inbox in the commit, and the core after it.
        leaving = [bundle for bundle, for_me, _ in items if not for_me]
        self._leave_while_committing(leaving, now)
        try:
            stored = (
                await self.store.put_each(items, now=now, local=True, overlap=bool(leaving)) if items else []
            )
        except StoreError as exc:  # the whole commit was refused
            stored = [exc] * len(items)
        finally:
            for bundle in leaving:
                del self._committing[bundle.id]
        actions = self._evictions(now)
        refused: dict[BundleId, SendError] = {}
        for (bundle, for_me, _), outcome in zip(items, stored, strict=True):
            if outcome is not True:
                refused[bundle.id] = _not_stored(outcome)
                if not for_me:
                    self.core.not_stored(bundle.id)
            elif for_me:
                actions += self.core.originate(bundle, now)
        await self._apply(actions, now)
        return [refused.get(result, result) if isinstance(result, BundleId) else result for result in results]

    def _leave_while_committing(self, bundles: list[Bundle], now: float) -> None:
        """Queue bundles for other nodes whose commit is about to run, and wake the links: their
        frames may leave meanwhile (docs/relay-core.md, "Sending while committing"). The caller
        drops them from ``_committing`` once the commit is done, and tells the core if it failed."""
        for bundle in bundles:
            self._committing[bundle.id] = bundle
            actions = self.core.originate(bundle, now)
            assert not actions, f"the core answered a bundle for another node with {actions}"
        if bundles:
            for ready in self._ready_callbacks:
                ready()

    def _sealed(self, message: Outgoing, counter: BundleId) -> Bundle:
        """The bundle for ``message`` under the store's fresh ``counter``, its payload sealed."""
        # The store's counter, unique across crashes, through a permutation only this node knows:
        # nobody can name this node's next id and pre-empt it (crypto/ids.py).
        seq = self._seq.seq(counter.created, counter.seq)
        header = Bundle(
            self.node_id,
            message.destination,
            counter.created,
            seq,
            compact_lifetime(message.lifetime),
            Priority(message.priority),
            message.kind,
            b"",
        )
        return Bundle(
            header.origin,
            header.destination,
            header.created,
            header.seq,
            header.lifetime,
            header.priority,
            header.kind,
            self._seal_payload(header, message.payload),
        )

    async def hand_over(self, bundle: Bundle, now: float) -> bool:
        """Take custody of a whole bundle a trusted local application hands over (a command post's
        backbone bridge brings one from another post) as if a neighbour had sent it: the origin is
        checked against the trust store, the store keeps it once by id and digest, and it is
        delivered here or routed on. False if this node holds it or saw it since it started (one
        seen before a restart the store keeps as a duplicate, neither stored nor delivered again); raises
        :class:`CryptoError` if the origin is not trusted here (unknown, expired or revoked)."""
        self.trust.check(bundle.origin, now)
        actions = self.core.handed_over(bundle, now)
        await self._apply(actions, now)
        return bool(actions)

    async def receive(self) -> list[Delivery]:
        """Wait for deliveries; each is returned again after a restart until :meth:`ack`."""
        while not self._inbox:
            self._inbox_ready.clear()
            await self._inbox_ready.wait()
        out = list(self._inbox)
        self._inbox.clear()
        return out

    def _to_applications(self, delivery: Delivery) -> None:
        self._inbox.append(delivery)
        self._inbox_ready.set()

    def deliveries_waiting(self) -> bool:
        """Whether deliveries wait for :meth:`receive` (the simulator's app takes a turn only then)."""
        return bool(self._inbox)

    async def ack(self, bundle_id: BundleId) -> None:
        """For an application that takes deliveries after their commit; one that takes them before
        (:attr:`deliver_before_commit`) acks with :meth:`ack_many`, which releases their custody ACKs."""
        await self.store.ack_delivery(bundle_id)

    async def ack_many(
        self, bundle_ids: Sequence[BundleId], now: float, keys: Sequence[bytes] | None = None
    ) -> None:
        """The application keeps these deliveries: the custody ACKs and receipts of those delivered
        before their commit, and kept by it alone, go now (or once their commit is done); then they
        leave the inbox. ``keys``: the ids' keys in order, if the caller holds them
        (:attr:`Delivery.key`; packing one costs about 2,000 instructions)."""
        kept: list[BundleId] = []
        for bundle_id in bundle_ids:
            waits = self._app_keeps.pop(bundle_id, 0)
            if waits == 2:
                self._app_keeps[bundle_id] = 1  # its commit here is still running (_persist)
            elif waits == 1:
                kept.append(bundle_id)
        if kept:
            await self._apply(self.core.persisted(kept, [], now), now, early=kept)
            for ready in self._ready_callbacks:
                ready()
        await self.store.ack_deliveries(keys if keys is not None else [i.key() for i in bundle_ids])

    def trust_changed(self) -> None:
        """Call after adding certificates or revocations to ``trust``: the LoRa encoding's short ids
        and name codes are rebuilt from it."""
        self.core.context = self.trust.compact_context()

    def status(self, bundle_id: BundleId) -> BundleStatus:
        return self._named(self.core.status(bundle_id))

    def _named(self, status: BundleStatus) -> BundleStatus:
        """The status with display names for its path, from the certificates this node holds."""
        if not status.path or self.core.context is None:
            return status
        names = []
        for short in status.path:
            node_id = self.core.context.nodes.get(short[:SHORT_ID_LEN], b"")
            certificate = self.trust.certificate(node_id) if node_id.startswith(short) else None
            names.append(certificate.name if certificate is not None else short.hex())
        return replace(status, names=tuple(names))

    def on_status(self, callback: StatusCallback) -> None:
        self._callbacks.append(callback)

    def on_frames_ready(self, callback: Callable[[], object]) -> None:
        """``callback()`` runs when frames were queued that the links need not wait longer for: a
        batch of incoming bundles' custody ACKs as soon as it is stored (before its deliveries and
        receipts), a bundle sent here as soon as it is sealed (before its commit, see :meth:`send`)."""
        self._ready_callbacks.append(callback)

    # -- revocation ------------------------------------------------------------------------------

    def on_revocations(self, callback: RevocationCallback) -> None:
        """``callback(list)`` runs each time a newer revocation list is applied (cut sessions, close
        streams, save it)."""
        self._revocation_callbacks.append(callback)

    def apply_revocations(self, revocations: RevocationList) -> bool:
        """Believe a newer signed list at once; False if this node already holds it or a newer one.
        Raises :class:`RevocationError` for a list the deployment authority did not sign."""
        try:
            taken = self.trust.update_revocations(revocations)
        except CryptoError as exc:
            raise RevocationError(f"revocation list serial {revocations.serial} refused: {exc}") from None
        if not taken:
            return False
        self.trust_changed()
        self.security.count("revocations_applied")
        names = [self._display(entry.node_id) for entry in revocations.entries]
        log.warning(
            "revocation list serial %d applied: %d node(s) revoked: %s",
            revocations.serial,
            len(names),
            ", ".join(names),
        )
        for callback in self._revocation_callbacks:
            callback(revocations)
        return True

    async def publish_revocations(self, revocations: RevocationList, now: float) -> BundleId:
        """Apply ``revocations`` here and send them to every node as a FLASH bundle."""
        if self.apply_revocations(revocations):
            await self._drop_revoked(revocations, now)
        held = self.trust.revocations
        if held is None or revocations.serial < held.serial:
            raise RevocationError(
                f"revocation list serial {revocations.serial} is older than the one this node holds"
            )
        return await self.send(
            Destination.everyone(),
            revocations.encode(),
            kind=Kind.REVOCATION,
            priority=Priority.FLASH,
            lifetime=REVOCATION_LIFETIME_S,
            now=now,
        )

    async def _drop_revoked(self, revocations: RevocationList, now: float) -> None:
        origins = frozenset(entry.node_id for entry in revocations.entries)
        actions = self.core.drop_origins(origins)
        if actions:
            log.warning("%d held bundle(s) of revoked nodes dropped", len(actions))
        await self._apply(actions, now)

    async def _revocation_arrived(self, bundle: Bundle, now: float) -> None:
        try:
            revocations = RevocationList.decode(bundle.payload)
            if self.apply_revocations(revocations):
                await self._drop_revoked(revocations, now)
        except CryptoError as exc:  # DecodeError or RevocationError
            count = self.security.count("bad_revocations")
            log.warning(
                "revocation bundle %s from %s refused (%d so far): %s",
                bundle.id,
                self._display(bundle.origin),
                count,
                exc,
            )

    def on_group_key(self, callback: GroupKeyCallback) -> None:
        """``callback(key, wrapped)`` runs for each new group key taken (to save it)."""
        self._group_key_callbacks.append(callback)

    def _group_key_arrived(self, bundle: Bundle, wrapped: bytes, now: float) -> None:
        try:
            key = unwrap_group_key(self._seal, self.trust.authority, wrapped)
        except CryptoError as exc:
            count = self.security.count("bad_group_keys")
            log.warning("group key bundle %s refused (%d so far): %s", bundle.id, count, exc)
            return
        if self.keyring.get(key.group, key.epoch) is not None:
            return
        self.keyring.add(key, now)
        log.warning(
            "group %r rotated: epoch %d taken (sent by %s)",
            key.group,
            key.epoch,
            self._display(bundle.origin),
        )
        for callback in self._group_key_callbacks:
            callback(key, wrapped)

    def _display(self, node_id: bytes) -> str:
        certificate = self.trust.certificate(node_id)
        label = display_id(node_id)
        return f"{certificate.name} ({label})" if certificate is not None else label

    # -- link side -------------------------------------------------------------------------------

    async def link_up(self, profile: LinkProfile, peer: bytes, now: float, pace: float | None = None) -> None:
        self.core.link_up(profile, peer, now, pace)

    async def link_down(self, link: str, peer: bytes, now: float) -> None:
        self.core.link_down(link, peer, now)

    async def frame_received(self, link: str, peer: bytes, frame: bytes, now: float) -> None:
        """One frame: :meth:`frames_received` without the batch (the simulator's every arrival)."""
        actions = self._frame_actions(link, peer, frame, now)
        if actions:  # most frames (beacons, summaries) leave nothing to carry out
            await self._apply(actions, now)

    async def frames_received(self, frames: Sequence[tuple[str, bytes, bytes]], now: float) -> None:
        """``(link, peer, frame)`` in arrival order: the core takes each, then the batch's bundles
        are stored in one group commit and acknowledged together (no task or future per frame)."""
        actions: list[Action] = []
        for link, peer, frame in frames:
            actions += self._frame_actions(link, peer, frame, now)
        await self._apply(actions, now)

    async def frame_overheard(self, link: str, peer: bytes, frame: bytes, now: float) -> None:
        """A frame ``peer`` sent to another neighbour, which the link heard and authenticated as
        ``peer``'s: the custody ACK of a bundle we gave it, if it forwards that bundle (an
        ``implicit_ack`` link; docs/relay-core.md, "Custody")."""
        revocations = self.trust.revocations
        if revocations is not None and revocations.is_revoked(peer):
            return
        try:
            actions = self.core.overheard(link, peer, frame, now)
        except (ValueError, UnknownLinkError) as exc:  # FrameDecodeError: hostile neighbour
            self.refused_frames += 1
            log.warning("frame overheard from %s on %s refused: %s", peer.hex()[:8], link, exc)
            return
        await self._apply(actions, now)

    def _frame_actions(self, link: str, peer: bytes, frame: bytes, now: float) -> list[Action]:
        revocations = self.trust.revocations
        if revocations is not None and revocations.is_revoked(peer):
            count = self.security.count("revoked_frames")
            if count & (count - 1) == 0:  # 1, 2, 4, 8...: visible without flooding the log
                log.warning(
                    "frame from revoked node %s on %s dropped (%d so far)", self._display(peer), link, count
                )
            return []
        try:
            released = self.certificates.frame_received(link, peer, frame, now)  # relay/core/certs.py
            actions = self.core.frame(link, peer, frame, now) if released is None else []
        except (ValueError, UnknownLinkError) as exc:  # FrameDecodeError, FragmentError: hostile neighbour
            self.refused_frames += 1
            log.warning("frame from %s on %s refused: %s", peer.hex()[:8], link, exc)
            return []
        for parked in released or ():  # their origin's certificate arrived: as if they came now
            actions += self._frame_actions(parked.link, parked.peer, parked.frame, now)
        return actions

    def next_frame(
        self, link: str, now: float, lowest: Priority = Priority.BULK, busy: Set[bytes] = frozenset()
    ) -> tuple[bytes, bytes] | None:
        """The next frame for ``link``: certificates first, then the core's; FLASH only when
        ``lowest`` is FLASH (certificate frames then wait, as other classes do); none but FLASH
        for the ``busy`` peers (their queue is full)."""
        certificate = self.certificates.next_frame(link) if lowest is not _FLASH else None
        return certificate or self.core.next_frame(link, now, lowest, busy)

    def _load(self, bundle_ids: Sequence[BundleId]) -> dict[BundleId, bytes]:
        """The core's read of held bundles' full encodings: from the store, or of the bundles still
        committing."""
        committing = {i: encode_full(self._committing[i]) for i in bundle_ids if i in self._committing}
        if len(committing) == len(bundle_ids):
            return committing
        return self._reader.get_many(bundle_ids) | committing

    async def on_timer(self, now: float) -> None:
        damaged = list(self.core.damaged.items())  # the timer drops these and forgets them
        actions = self.core.timer(now)
        for bundle_id, error in damaged:
            log.error(
                "bundle %s dropped: its copy in the store %s does not decode (%s); the file is "
                "damaged: restore it from a backup or move it aside (the node's other bundles go on)",
                bundle_id,
                self.store.path,
                error,
            )
        if actions:  # most timers leave nothing to carry out
            await self._apply(actions, now)
        if now >= self._next_store_expiry:
            self._next_store_expiry = now + STORE_EXPIRE_EVERY_S
            await self.store.expire(now)

    def next_deadline(self) -> float | None:
        return self.core.next_deadline()

    # -- actions ---------------------------------------------------------------------------------

    async def _apply(self, actions: list[Action], now: float, early: Sequence[BundleId] = ()) -> None:
        """Carry out the core's actions. Every Persist of a round is stored in one store call and
        handed back to the core at once; bookkeeping writes (drops, forwarding records, inbox entries
        the engine consumed) run concurrently, so they share group commits; the deliveries' receipts
        go out last, one per origin and path. ``early``: delivered before their commit (ack_many).

        The drops among ``actions`` (a batch's custody ACKs) are queued before its bundles are
        stored, so the store's group commit takes both in one transaction: one COMMIT and one
        sync of the log per batch, not two. They concern bundles held, hence stored, already."""
        if not actions:
            return  # most frames (beacons, summaries) and timers leave nothing to carry out
        batch = _Batch()
        batch.early.update(early)
        drops: dict[str, list[BundleId]] = {}
        pending: list[Action] = []
        for action in actions:
            if isinstance(action, Drop):  # one store op per reason (per custody ACK), not per bundle
                drops.setdefault(action.reason, []).extend(action.bundle_ids)
            else:
                pending.append(action)
        # tasks: they run once this one waits for its commit, and join that commit
        bookkeeping: list[Awaitable[None]] = [
            asyncio.ensure_future(self.store.delete_many(ids, reason)) for reason, ids in drops.items()
        ]
        drops = {}  # those that the receipts or deliveries below bring
        while pending:
            persists: list[Persist] = []
            rest: list[Action] = []
            for action in pending:  # one pass: two comprehensions tested each action twice
                if isinstance(action, Persist):
                    persists.append(action)
                else:
                    rest.append(action)
            pending = await self._persist(persists, now, batch) if persists else []
            if persists:
                for ready in self._ready_callbacks:
                    ready()
            for action in rest:
                if isinstance(action, DeliverLocal):
                    for bundle in action.bundles:
                        if bundle.id not in batch.early:
                            pending += await self._deliver(bundle, now, batch)
                        # the application has it (_deliver_early), and now it is durable: no coroutine
                        elif bundle.destination.kind is _NODE and bundle.origin != self.node_id:
                            batch.receipted.append(bundle)
                elif isinstance(action, Drop):  # one store op per reason (per custody ACK), not per bundle
                    drops.setdefault(action.reason, []).extend(action.bundle_ids)
                elif isinstance(action, MarkForwarded):
                    bookkeeping.append(
                        self.store.mark_forwarded(action.bundle_id, action.peer, action.link, "custody", now)
                    )
                elif isinstance(action, StatusChanged):
                    if self._callbacks:  # names only for a listener
                        status = self._named(action.status)
                        for callback in self._callbacks:
                            callback(action.bundle_id, status)
                elif isinstance(action, Replace):  # a neighbour's copy of a damaged row: rare, last
                    bookkeeping.append(self._replace(action.bundle))
        bookkeeping += [self.store.delete_many(ids, reason) for reason, ids in drops.items()]
        if batch.consumed:
            bookkeeping.append(self.store.ack_deliveries(batch.consumed))
        if len(bookkeeping) == 1:
            await bookkeeping[0]  # one store op: no task to run it beside nothing
        elif bookkeeping:
            await asyncio.gather(*bookkeeping)
        if batch.receipted:
            await self._send_receipts(batch.receipted, now)

    async def _replace(self, bundle: Bundle) -> None:
        """Store a neighbour's copy in place of a held copy that does not decode, then let the
        core acknowledge it (the links are woken for that ACK). Refused, no ACK goes: the
        neighbour keeps custody and its next copy tries again."""
        try:
            stored = await self.store.replace(bundle)
        except StoreError as exc:
            stored = False
            log.warning("bundle %s: a neighbour's copy could not replace its damaged one: %s", bundle.id, exc)
        else:
            log.warning(
                "bundle %s: its held copy in the store %s did not decode (the file is damaged: check "
                "the disk); %s",
                bundle.id,
                self.store.path,
                "a neighbour's copy took its place" if stored else "it is no longer held",
            )
        self.core.replaced(bundle.id, stored)
        for ready in self._ready_callbacks:
            ready()

    async def _persist(self, actions: list[Persist], now: float, batch: _Batch) -> list[Action]:
        """Check and store a round's incoming bundles in one store call, then tell the core."""
        admitted: list[Persist] = []
        for action in actions:
            bundle = action.bundle
            try:
                self._trusted(bundle.origin, now, batch)
            except CryptoError as exc:
                self.refused_bundles += 1
                self.core.refused(bundle.id)
                log.warning("bundle %s dropped: origin not trusted: %s", bundle.id, exc)
                continue
            refusal = self._admission_refusal(bundle, action.deliver, now, batch)
            if refusal is not None:
                self.refused_bundles += 1
                self.core.refused(
                    bundle.id, final=True
                )  # not seen: a real bundle with this id is still taken
                log.warning(
                    "bundle %s from %s refused (%s)", bundle.id, self._display(bundle.origin), refusal
                )
                continue
            admitted.append(action)
        if not admitted:
            return []
        if self.deliver_before_commit:
            self._deliver_early(admitted, now, batch)
        items = [(action.bundle, action.deliver, action.hold) for action in admitted]
        app_has = {
            action.bundle.id for action in admitted if not action.hold and action.bundle.id in batch.early
        }
        for bundle_id in app_has:
            self._app_keeps[bundle_id] = 2  # this commit, then the application's ack (ack_many)
        try:
            results = await self.store.put_each(items, now=now, app_has=app_has)
        except StoreError:  # the whole commit was refused (a full disk takes only FLASH): each alone
            results = list(await asyncio.gather(*(self._put_alone(item, now, app_has) for item in items)))
        accepted: list[BundleId] = []
        duplicates: list[BundleId] = []
        for action, result in zip(admitted, results, strict=True):
            bundle_id = action.bundle.id
            # an id is hashed even to look in an empty dict: most batches have no app-kept bundle
            waits = self._app_keeps.pop(bundle_id, 0) if self._app_keeps else 0
            if isinstance(result, StoreError):
                self.refused_bundles += 1
                self.core.refused(bundle_id)
                log.warning("bundle %s not accepted: %s", bundle_id, result)
            elif result and waits == 2:  # kept by the application alone, which has not acked it yet
                self._app_keeps[bundle_id] = 1
            else:
                (accepted if result else duplicates).append(bundle_id)
        return self._evictions(now) + self.core.persisted(accepted, duplicates, now)

    def _deliver_early(self, admitted: list[Persist], now: float, batch: _Batch) -> None:
        """Hand the application the batch's bundles for it before their commit, which runs meanwhile.

        Only for an application that keeps what it records once per bundle id across restarts
        (:attr:`deliver_before_commit`): if the commit then fails or the process dies first, no
        custody ACK went out, the previous hop sends the bundle again, and the application sees it
        a second time; so too a bundle this node took before a restart, whose ACK was lost. The
        store keeps only the id of one not held for forwarding, and forgets it at the next open
        unless the application acked it (:meth:`ack_many`), so a crash before that ack takes the
        resend again; a held one also gets its inbox copy. The engine's own kinds (receipts,
        revocations, group keys) and bundles that do not open wait for the commit (:meth:`_deliver`)."""
        waiting = len(self._inbox)
        for action in admitted:
            bundle = action.bundle
            if not action.deliver or bundle.kind in ENGINE_KINDS:
                continue
            plaintext = batch.opened.get(bundle.id)
            if plaintext is None:
                try:
                    plaintext = batch.opened[bundle.id] = self._open_payload(bundle, now, batch)
                except CryptoError:
                    continue  # counted and logged by _deliver after the commit
            self._inbox.append(  # as _to_applications does; the event is set once, below
                Delivery(
                    bundle.id,
                    bundle.origin,
                    bundle.destination,
                    bundle.kind,
                    bundle.priority,
                    bundle.created,
                    plaintext,
                    bundle.key,
                )
            )
            batch.early.add(bundle.id)
        if len(self._inbox) > waiting:
            self._inbox_ready.set()

    async def _put_alone(
        self, item: tuple[Bundle, bool, bool], now: float, app_has: set[BundleId]
    ) -> bool | StoreError:
        try:
            [result] = await self.store.put_each([item], now=now, app_has=app_has)
        except StoreError as exc:
            return exc
        return result

    def _admission_refusal(self, bundle: Bundle, deliver: bool, now: float, batch: _Batch) -> str | None:
        """Why a trusted origin's bundle is still refused, or None. Dated far ahead, it would outlive
        its lifetime; addressed to this node and not opening, it is forged (or damaged), and taking
        its id as seen would make the real bundle with that id a duplicate."""
        ahead = bundle.created - now
        if ahead > self.max_clock_skew_s:
            count = self.security.count("future_bundles")
            return (
                f"{count} so far: created {ahead:.0f} s ahead of this node's clock, more than "
                f"max_clock_skew_s = {self.max_clock_skew_s:g}"
            )
        dest = bundle.destination
        if bundle.kind == _REVOCATION and dest.kind is _ALL:
            try:  # checked before it is stored, so no relay carries a forged list (FLASH, never evicted)
                RevocationList.decode(bundle.payload).verify(self.trust.authority)
            except CryptoError as exc:
                count = self.security.count("bad_revocations")
                return f"{count} so far: a revocation list the authority did not sign: {exc}"
        if deliver and dest.kind is _NODE and dest.node == self.node_id:
            try:
                batch.opened[bundle.id] = self._open_payload(bundle, now, batch)
            except CryptoError as exc:
                count = self.security.count("unopenable")
                return f"{count} so far: addressed to this node but does not open: {exc}"
        return None

    def _evictions(self, now: float) -> list[Action]:
        """What the store evicted for space: the core stops sending it, and a bundle originated
        here reads "evicted" with the store's reason."""
        actions: list[Action] = []
        for eviction in self.store.drain_evicted():
            log.info("bundle %s evicted: %s", eviction.bundle_id, eviction.reason)
            actions += self.core.evicted(eviction.bundle_id, eviction.reason, now)
        return actions

    async def _deliver(self, bundle: Bundle, now: float, batch: _Batch) -> list[Action]:
        """Open a bundle from the store's inbox and hand it to the app. Receipts, revocations and
        group keys are the engine's own: their inbox entries are consumed at the end of the batch
        (a crash before that only delivers them again). Returns what a receipt makes the core do.
        Not for a bundle the application has already (:meth:`_deliver_early`): :meth:`_apply`."""
        if bundle.kind == _REVOCATION and bundle.destination.kind is _ALL:
            await self._revocation_arrived(bundle, now)
            batch.consumed.append(bundle.key)
            return []
        try:
            if bundle.origin != self.node_id:
                self._trusted(bundle.origin, now, batch)  # revoked since it was stored: not delivered
            plaintext = batch.opened.pop(bundle.id, None)
            if plaintext is None:
                plaintext = self._open_payload(bundle, now, batch)
        except StaleEpochError as exc:
            count = self.security.count("stale_epochs")
            log.warning("bundle %s refused (%d stale group epochs so far): %s", bundle.id, count, exc)
            batch.consumed.append(bundle.key)
            return []
        except CryptoError as exc:
            log.warning("bundle %s for this node does not open, discarded: %s", bundle.id, exc)
            batch.consumed.append(bundle.key)
            return []
        if bundle.kind == Kind.GROUP_KEY and bundle.destination == Destination.to_node(self.node_id):
            batch.consumed.append(bundle.key)
            self._group_key_arrived(bundle, plaintext, now)
            return []
        if bundle.kind in (Kind.RECEIPT, Kind.RECEIPTS):
            batch.consumed.append(bundle.key)
            return self._receipt_arrived(bundle, plaintext, now)
        dest = bundle.destination
        self._to_applications(
            Delivery(
                bundle.id,
                bundle.origin,
                dest,
                bundle.kind,
                bundle.priority,
                bundle.created,
                plaintext,
                bundle.key,
            )
        )
        if dest.kind is _NODE and bundle.origin != self.node_id:
            batch.receipted.append(bundle)
        return []

    def _receipt_arrived(self, bundle: Bundle, plaintext: bytes, now: float) -> list[Action]:
        """What a receipt (one subject or a batch) for bundles originated here changes; a subject
        the sealer was not the destination of is counted forged and changes nothing."""
        if bundle.destination != Destination.to_node(self.node_id):
            # Only a pairwise seal proves which node made a receipt; a group seal proves
            # membership, so any member could claim to be the destination.
            count = self.security.count("forged_receipts")
            log.warning(
                "receipt %s refused (%d so far): sent to %s, not sealed to this node alone",
                bundle.id,
                count,
                bundle.destination,
            )
            return []
        try:
            receipt = (
                ReceiptBatch.decode(plaintext, self.node_id)
                if bundle.kind == Kind.RECEIPTS
                else Receipt.decode(plaintext)
            )
        except ReceiptDecodeError as exc:
            log.warning("receipt %s refused: %s", bundle.id, exc)
            return []
        # a batch's subjects share its hops and path: no Receipt made and checked again per subject
        subjects = receipt.subjects if isinstance(receipt, ReceiptBatch) else (receipt.subject,)
        actions: list[Action] = []
        for subject in subjects:
            if subject.origin != self.node_id:
                continue
            try:
                actions += self.core.receipt(subject, now, bundle.origin, receipt.hops, receipt.path)
            except ForgedReceiptError as exc:
                count = self.security.count("forged_receipts")
                log.warning("receipt %s refused (%d so far): %s", bundle.id, count, exc)
        return actions

    async def _send_receipts(self, delivered: list[Bundle], now: float) -> None:
        """One receipt per origin and path for the bundles just delivered (relay.core.receipts), at
        the highest class among its subjects and as long-lived as the longest; all of them sent as
        one :meth:`send_many` (one id reservation, one commit, one core step)."""
        receipts = receipts_for(delivered, int(now))
        messages: list[Outgoing] = []
        for kind, receipt, subjects in receipts:
            first = subjects[0]
            priority, expires = first.priority, first.created + first.lifetime
            for subject in subjects:  # a loop, not min() and max() over two generators per receipt
                if subject.priority < priority:
                    priority = subject.priority
                if subject.created + subject.lifetime > expires:
                    expires = subject.created + subject.lifetime
            messages.append(
                Outgoing(
                    Destination.to_node(first.origin),
                    receipt.encode(),
                    kind,
                    priority,
                    max(60, expires - int(now)),
                )
            )
        results = await self.send_many(messages, now)
        for (_, _, subjects), result in zip(receipts, results, strict=True):
            if isinstance(result, SendError):
                log.warning(
                    "no receipt for %s: %s", ", ".join(str(subject.id) for subject in subjects), result
                )

    # -- sealing ---------------------------------------------------------------------------------

    def _seal_payload(self, header: Bundle, plaintext: bytes) -> bytes:
        dest = header.destination
        if header.kind == _REVOCATION and dest.kind is _ALL:
            return plaintext  # signed by the authority; see the module docstring
        nonce_input, aad = header.seal_inputs()
        if dest.kind is _NODE and dest.node is not None:
            if dest.node == self.node_id:
                recipient = self.identity.public
            else:
                recipient = self.trust.check(dest.node, header.created)
            if len(plaintext) <= COMPACT_SEAL_MAX:
                return self._seal.seal_compact(recipient, nonce_input, aad, plaintext)
            if header.priority <= Priority.IMMEDIATE:  # alarms, orders: provable later (signed HPKE)
                return self._seal.seal_standard(recipient, aad, plaintext, sign=True)
            return self._seal.seal_compact_tagged(recipient, nonce_input, aad, plaintext)
        group = dest.name if dest.name is not None else ALL_GROUP
        key = self.keyring.latest(group)
        if key is None:
            raise SealError(f"this node holds no key for group {group!r}; it cannot send to {dest}")
        return seal_group(key, nonce_input, aad, plaintext)

    def _trusted(self, origin: bytes, now: float, batch: _Batch) -> PublicIdentity:
        """``trust.check`` once per origin and batch: admission, opening and delivery each asked
        it (three certificate checks per bundle). A revocation list taken meanwhile, by this batch
        or another task during its commit, empties the batch's memory."""
        revocations = self.trust.revocations
        if batch.revocations is not revocations:
            batch.trusted.clear()
            batch.revocations = revocations
        public = batch.trusted.get(origin)
        if public is None:
            public = batch.trusted[origin] = self.trust.check(origin, now)
        return public

    def _open_payload(self, bundle: Bundle, now: float, batch: _Batch) -> bytes:
        dest = bundle.destination
        nonce_input, aad = bundle.seal_inputs()
        if dest.kind is _NODE:
            sender = (
                self.identity.public
                if bundle.origin == self.node_id
                else self._trusted(bundle.origin, now, batch)
            )
            if len(bundle.payload) <= COMPACT_SEAL_MAX + COMPACT_OVERHEAD:
                return self._seal.open_compact(sender, nonce_input, aad, bundle.payload)
            return self._seal.open_tagged(sender, nonce_input, aad, bundle.payload)
        group = dest.name if dest.name is not None else ALL_GROUP
        return open_group(self.keyring, group, nonce_input, aad, bundle.payload, now)
