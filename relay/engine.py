"""``NodeEngine``: the relay core wired to the durable store and to crypto, with no clock and no links.

Time is always passed in (seconds since the Mesh112 epoch), and frames are pushed in and pulled
out by the caller, so the same engine runs under the asyncio node (real clock, real links) and
under the simulator (virtual time). The engine seals what applications send (compact pairwise seal
for small bundles that may cross LoRa, standard HPKE seal for big ones, group key for groups), opens
what arrives for this node, stores before acknowledging, and drops bundles whose origin this node
does not trust.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from crypto.certificate import Certificate
from crypto.errors import CryptoError, SealError
from crypto.group import GroupKeyring, open_group, seal_group
from crypto.identity import Identity
from crypto.seal import SealContext
from relay.bundle import (
    SHORT_ID_LEN,
    Bundle,
    BundleId,
    Destination,
    DestKind,
    Kind,
    Priority,
    compact_lifetime,
)
from relay.core.actions import Action, DeliverLocal, Drop, MarkForwarded, Persist, StatusChanged
from relay.core.machine import RelayCore, UnknownLinkError
from relay.core.receipts import BundleStatus, ForgedReceiptError, Receipt, ReceiptDecodeError
from relay.kinds import KindRegistry
from relay.links.base import LinkProfile
from relay.store import Store, StoreError, StoreFullError, UnknownBundleError
from relay.trust import TrustStore

log = logging.getLogger(__name__)

COMPACT_SEAL_MAX = 180  # plaintexts up to this size get the 16-byte compact seal (fits one LoRa frame)
STORE_EXPIRE_EVERY_S = 60.0
ALL_GROUP = "all"  # the group key that seals bundles for everyone

StatusCallback = Callable[[BundleId, BundleStatus], None]


class SendError(Exception):
    """A bundle could not be sent; the message says what the application or operator can fix."""


class StorageFullError(SendError):
    """The store cannot take the bundle: its quota is held by classes it may not evict, or the disk
    is full (the API answers 507)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One bundle for this node's applications, opened."""

    bundle_id: BundleId
    origin: bytes
    destination: Destination
    kind: int
    priority: Priority
    created: int
    payload: bytes


class NodeEngine:
    def __init__(
        self,
        identity: Identity,
        certificate: Certificate,
        trust: TrustStore,
        store: Store,
        keyring: GroupKeyring,
        groups: frozenset[str],
    ) -> None:
        """Use :meth:`open`."""
        self.identity = identity
        self.certificate = certificate
        self.trust = trust
        self.store = store
        self.keyring = keyring
        self.node_id = identity.node_id
        self.kinds = KindRegistry()
        self.core = RelayCore(self.node_id, certificate.roles | groups, context=trust.compact_context())
        self.refused_frames = 0
        self.refused_bundles = 0
        self._seal = SealContext(identity)
        self._inbox: asyncio.Queue[Delivery] = asyncio.Queue()
        self._callbacks: list[StatusCallback] = []
        self._next_store_expiry = 0.0

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
    ) -> NodeEngine:
        """Open the store and reload everything it holds; ``groups``: incident groups joined."""
        if certificate.public != identity.public:
            raise CryptoError("the certificate belongs to another identity; enrol this node again")
        store = await Store.open(Path(store_path), quota_bytes)
        engine = cls(identity, certificate, trust, store, keyring or GroupKeyring(), groups)
        for stored in await store.load_all():
            records = await store.forwarding(stored.bundle.id)
            custody = [(peer, link, at) for peer, link, state, at in records if state == "custody"]
            engine.core.restore(stored.bundle, stored.local, now, custody)
        for bundle in await store.pending_deliveries():
            await engine._deliver(bundle, now)
        return engine

    async def close(self) -> None:
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
        (the LoRa header's unit), from 1 minute to 68 h 15 min; others are rounded into that range."""
        self.kinds.validate(kind, payload)
        try:
            bundle_id = await self.store.next_bundle_id(self.node_id, int(now))
        except StoreFullError as exc:  # the disk is full
            raise StorageFullError(f"store is full, bundle not accepted: {exc}") from None
        header = Bundle(
            self.node_id,
            destination,
            bundle_id.created,
            bundle_id.seq,
            compact_lifetime(lifetime),
            Priority(priority),
            kind,
            b"",
        )
        bundle = Bundle(
            header.origin,
            header.destination,
            header.created,
            header.seq,
            header.lifetime,
            header.priority,
            header.kind,
            self._seal_payload(header, payload),
        )
        for_me = destination.kind is DestKind.NODE and destination.node == self.node_id
        try:
            await self.store.put(bundle, now=now, local=True, deliver=for_me, hold=not for_me)
        except StoreFullError as exc:
            raise StorageFullError(f"store is full, bundle not accepted: {exc}") from None
        await self._apply(self._evictions(now) + self.core.originate(bundle, now), now)
        return bundle.id

    async def receive(self) -> list[Delivery]:
        """Wait for deliveries; each is returned again after a restart until :meth:`ack`."""
        first = await self._inbox.get()
        out = [first]
        while not self._inbox.empty():
            out.append(self._inbox.get_nowait())
        return out

    async def ack(self, bundle_id: BundleId) -> None:
        await self.store.ack_delivery(bundle_id)

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

    # -- link side -------------------------------------------------------------------------------

    async def link_up(self, profile: LinkProfile, peer: bytes, now: float) -> None:
        self.core.link_up(profile, peer, now)

    async def link_down(self, link: str, peer: bytes, now: float) -> None:
        self.core.link_down(link, peer, now)

    async def frame_received(self, link: str, peer: bytes, frame: bytes, now: float) -> None:
        try:
            actions = self.core.frame(link, peer, frame, now)
        except (ValueError, UnknownLinkError) as exc:  # FrameDecodeError, FragmentError: hostile neighbour
            self.refused_frames += 1
            log.warning("frame from %s on %s refused: %s", peer.hex()[:8], link, exc)
            return
        await self._apply(actions, now)

    def next_frame(self, link: str, now: float) -> tuple[bytes, bytes] | None:
        return self.core.next_frame(link, now)

    async def on_timer(self, now: float) -> None:
        await self._apply(self.core.timer(now), now)
        if now >= self._next_store_expiry:
            self._next_store_expiry = now + STORE_EXPIRE_EVERY_S
            await self.store.expire(now)

    def next_deadline(self) -> float | None:
        return self.core.next_deadline()

    # -- actions ---------------------------------------------------------------------------------

    async def _apply(self, actions: list[Action], now: float) -> None:
        """Carry out the core's actions. Bookkeeping writes (drops, forwarding records) run
        concurrently so one ACK of many ids costs one group commit, not one commit per id."""
        pending = list(actions)
        bookkeeping: list[Coroutine[Any, Any, None]] = []
        while pending:
            action = pending.pop(0)
            if isinstance(action, Persist):
                pending += await self._persist(action, now)
            elif isinstance(action, DeliverLocal):
                await self._deliver(action.bundle, now)
            elif isinstance(action, Drop):
                bookkeeping.append(self._delete(action))
            elif isinstance(action, MarkForwarded):
                bookkeeping.append(
                    self.store.mark_forwarded(action.bundle_id, action.peer, action.link, "custody", now)
                )
            elif isinstance(action, StatusChanged):
                status = self._named(action.status)
                for callback in self._callbacks:
                    callback(action.bundle_id, status)
        await asyncio.gather(*bookkeeping)

    async def _delete(self, action: Drop) -> None:
        with contextlib.suppress(UnknownBundleError):
            await self.store.delete(action.bundle_id, action.reason)

    async def _persist(self, action: Persist, now: float) -> list[Action]:
        bundle = action.bundle
        try:
            self.trust.check(bundle.origin, now)
        except CryptoError as exc:
            self.refused_bundles += 1
            self.core.refused(bundle.id)
            log.warning("bundle %s dropped: origin not trusted: %s", bundle.id, exc)
            return []
        try:
            fresh = await self.store.put(bundle, now=now, deliver=action.deliver, hold=action.hold)
        except StoreError as exc:
            self.refused_bundles += 1
            self.core.refused(bundle.id)
            log.warning("bundle %s not accepted: %s", bundle.id, exc)
            return []
        evicted = self._evictions(now)
        if fresh:
            return evicted + self.core.persisted([bundle.id], [], now)
        return evicted + self.core.persisted([], [bundle.id], now)

    def _evictions(self, now: float) -> list[Action]:
        """What the store evicted for space: the core stops sending it, and a bundle originated
        here reads "evicted" with the store's reason."""
        actions: list[Action] = []
        for eviction in self.store.drain_evicted():
            log.info("bundle %s evicted: %s", eviction.bundle_id, eviction.reason)
            actions += self.core.evicted(eviction.bundle_id, eviction.reason, now)
        return actions

    async def _deliver(self, bundle: Bundle, now: float) -> None:
        """Open a bundle from the store's inbox and hand it to the app (receipts are ours)."""
        try:
            plaintext = self._open_payload(bundle, now)
        except CryptoError as exc:
            log.warning("bundle %s for this node does not open, discarded: %s", bundle.id, exc)
            await self.store.ack_delivery(bundle.id)
            return
        if bundle.kind == Kind.RECEIPT:
            await self.store.ack_delivery(bundle.id)
            try:
                receipt = Receipt.decode(plaintext)
            except ReceiptDecodeError as exc:
                log.warning("receipt %s refused: %s", bundle.id, exc)
                return
            if receipt.subject.origin != self.node_id:
                return
            try:
                actions = self.core.receipt(receipt.subject, now, bundle.origin, receipt.hops, receipt.path)
            except ForgedReceiptError as exc:
                log.warning("receipt %s refused: %s", bundle.id, exc)
                return
            await self._apply(actions, now)
            return
        dest = bundle.destination
        if dest.kind is DestKind.NODE and bundle.origin != self.node_id:
            await self._send_receipt(bundle, now)
        self._inbox.put_nowait(
            Delivery(bundle.id, bundle.origin, dest, bundle.kind, bundle.priority, bundle.created, plaintext)
        )

    async def _send_receipt(self, bundle: Bundle, now: float) -> None:
        try:
            await self.send(
                Destination.to_node(bundle.origin),
                Receipt.for_bundle(bundle, int(now)).encode(),
                kind=Kind.RECEIPT,
                priority=bundle.priority,
                lifetime=max(60, bundle.expires - int(now)),
                now=now,
            )
        except (CryptoError, SendError) as exc:
            log.warning("no receipt for %s: %s", bundle.id, exc)

    # -- sealing ---------------------------------------------------------------------------------

    def _seal_payload(self, header: Bundle, plaintext: bytes) -> bytes:
        dest = header.destination
        nonce_input, aad = header.id.key(), header.aad()
        if dest.kind is DestKind.NODE and dest.node is not None:
            if dest.node == self.node_id:
                recipient = self.identity.public
            else:
                recipient = self.trust.check(dest.node, header.created)
            if len(plaintext) <= COMPACT_SEAL_MAX:
                return self._seal.seal_compact(recipient, nonce_input, aad, plaintext)
            return self._seal.seal_standard(
                recipient, aad, plaintext, sign=header.priority <= Priority.IMMEDIATE
            )
        group = dest.name if dest.name is not None else ALL_GROUP
        key = self.keyring.latest(group)
        if key is None:
            raise SealError(f"this node holds no key for group {group!r}; it cannot send to {dest}")
        return seal_group(key, nonce_input, aad, plaintext)

    def _open_payload(self, bundle: Bundle, now: float) -> bytes:
        dest = bundle.destination
        nonce_input, aad = bundle.id.key(), bundle.aad()
        if dest.kind is DestKind.NODE:
            sender = (
                self.identity.public
                if bundle.origin == self.node_id
                else self.trust.check(bundle.origin, now)
            )
            if len(bundle.payload) <= COMPACT_SEAL_MAX + 16:
                return self._seal.open_compact(sender, nonce_input, aad, bundle.payload)
            return self._seal.open_standard(sender, aad, bundle.payload)
        group = dest.name if dest.name is not None else ALL_GROUP
        return open_group(self.keyring, group, nonce_input, aad, bundle.payload)
