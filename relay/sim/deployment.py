"""The simulated deployment: an authority, one enrolled identity per node, one store file per node.

Node keys are derived from the scenario seed and the node's name, so node ids (and with them every
id-dependent choice an engine makes) are the same in every run of a seed. The authority's own key
is fresh each run; it only signs, and signatures do not steer routing.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import shutil
from pathlib import Path
from typing import Any

from crypto.certificate import Authority, Certificate
from crypto.identity import Identity
from relay import sqlite
from relay.bundle import SHORT_ID_LEN, Destination, Kind, Priority, from_epoch
from relay.core.frames import DataFrame, FrameDecodeError, decode_frame
from relay.engine import NodeEngine
from relay.sim.scenario import Scenario
from relay.store import Store
from relay.store_schema import migrate
from relay.trust import TrustStore

CERTIFICATE_VALIDITY_S = 90 * 24 * 3600
FLASH_KEYS_KEPT = 4096  # frames whose flash_bundle answer is kept (then forgotten all at once)


class Deployment:
    def __init__(
        self,
        scenario: Scenario,
        directory: Path,
        authority: Authority,
        identities: dict[str, Identity],
        certificates: dict[str, Certificate],
    ) -> None:
        """Use :meth:`create`."""
        self.scenario = scenario
        self.directory = directory
        self.authority = authority
        self.identities = identities
        self.certificates = certificates
        self.kind = int(Kind.TEXT)
        self._ids = {name: identity.node_id for name, identity in identities.items()}
        self._roster = TrustStore(authority.public, certificates.values(), authority.revocations)
        self.compact_context = self._roster.compact_context()
        # flash_bundle's answers by frame: of 2,547 FLASH-class frames a reference run sends, 371
        # differ (a FLASH repeat, a resend, the same ACK again); each was decoded every time
        self._flash_keys: dict[bytes, bytes | None] = {}

    @classmethod
    def create(cls, scenario: Scenario, directory: Path, start_epoch: float) -> Deployment:
        issued = int(from_epoch(start_epoch))
        authority = Authority.generate(now=issued)
        identities: dict[str, Identity] = {}
        certificates: dict[str, Certificate] = {}
        shorts: set[bytes] = set()
        for node in scenario.nodes:
            identity = _derive_identity(scenario.seed, node.name, shorts)
            shorts.add(identity.node_id[:SHORT_ID_LEN])
            identities[node.name] = identity
            certificates[node.name] = authority.issue(
                identity.public,
                frozenset({node.role}),
                node.name,
                issued + int(scenario.end_s) + CERTIFICATE_VALIDITY_S,
                now=issued,
            )
        directory.mkdir(parents=True, exist_ok=True)
        return cls(scenario, directory, authority, identities, certificates)

    def node_id(self, name: str) -> bytes:
        return self._ids[name]

    def destination(self, name: str) -> Destination:
        return Destination.to_node(self._ids[name])

    def trust(self) -> TrustStore:
        """What every node believes: the authority and the whole roster (each node gets its own)."""
        return self._roster.copy()

    def store_path(self, name: str) -> Path:
        return self.directory / f"{name}.sqlite"

    async def open_engine(self, name: str, now: float) -> NodeEngine:
        path = self.store_path(name)
        if not path.exists():
            shutil.copyfile(self._fresh_store(), path)
        return await NodeEngine.open(
            self.identities[name],
            self.certificates[name],
            self.trust(),
            path,
            quota_bytes=self.scenario.node(name).quota_bytes,
            now=now,
        )

    def _fresh_store(self) -> Path:
        """An empty store file at the current schema, which each node's store starts as a copy of:
        the schema's migrations took half of a store's opening (a 1,000-node field opens 1,000)."""
        fresh = self.directory / "fresh-store.template"
        if not fresh.exists():
            db = sqlite.connect_sync(fresh, autocommit=True)
            try:
                migrate(db)
            finally:
                db.close()  # the last connection: its write-ahead log goes into the file
        return fresh

    async def store_high_water(self, name: str, engine: NodeEngine | None) -> int:
        """The most bytes the node's store ever held (kept in the store file, across restarts)."""
        if engine is not None:
            return (await engine.store.stats()).high_water_bytes
        store = await Store.open(self.store_path(name))
        try:
            return (await store.stats()).high_water_bytes
        finally:
            await store.close()

    def flash_bundle(self, frame: bytes) -> bytes | None:
        """The id key of the FLASH bundle a DATA frame carries, or None (any other frame)."""
        if frame in self._flash_keys:
            return self._flash_keys[frame]
        if len(self._flash_keys) >= FLASH_KEYS_KEPT:
            self._flash_keys.clear()
        key = None
        try:
            decoded = decode_frame(frame, self.compact_context)
        except FrameDecodeError:
            pass
        else:
            if isinstance(decoded, DataFrame) and decoded.bundle.priority is Priority.FLASH:
                key = decoded.bundle.id.key()
        self._flash_keys[frame] = key
        return key


async def collect_crashed(store_path: Path) -> None:
    """Free a dropped engine now, as the death of its process would: its SQLite connection closes
    without a commit. Its store writer task dies with it; that one expected complaint is silenced."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        task = context.get("task")
        if isinstance(task, asyncio.Task) and task.get_name() == f"store-writer:{store_path}":
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    try:
        await asyncio.sleep(0)  # wake-ups already queued for the dead store run first
        gc.collect()
    finally:
        loop.set_exception_handler(previous)


def _derive_identity(seed: int, name: str, taken: set[bytes]) -> Identity:
    for attempt in range(1000):
        material = hashlib.sha512(f"mesh112-sim:{seed}:{name}:{attempt}".encode()).digest()
        identity = Identity.from_private_bytes(material)
        if identity.node_id[:SHORT_ID_LEN] not in taken:
            return identity
    raise RuntimeError("could not derive a node identity with a free short id")  # pragma: no cover
