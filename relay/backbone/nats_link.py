"""The NATS JetStream side of the backbone: the streams, publishing, and reading the region.

A post owns one stream in its own JetStream domain, ``POST_<domain>``, on the subject
``<region>.<domain>.events``; every event is published with ``Nats-Msg-Id`` set to its event id, so
JetStream drops a republished duplicate. The centre's ``REGION`` stream (in the hub's domain) sources
every post's stream across the leaf connections; each post keeps a local ``REGION`` copy that
sources the centre's (a source rather than a mirror, so a stalled one can be restarted in place, see
:meth:`NatsBackbone.revive`). Sources are JetStream's own replication: when a leaf link comes back
they resume from where they stopped, so a post that was cut off loses nothing and the region gets
what it wrote meanwhile. A post reads its own stream and its copy; the centre reads ``REGION``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import ExternalStream, StorageType, StreamConfig, StreamSource
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError

from relay.backbone.config import BackboneSection
from relay.backbone.fold import EventError, RecordEvent
from relay.backbone.handover import Handover, HandoverError
from relay.backbone.shared import Shared, SharedError

log = logging.getLogger("mesh112.backbone")

REGION_STREAM = "REGION"
SUBJECTS: dict[type[RecordEvent | Shared | Handover], str] = {  # a post's subjects: <region>.<post>.<what>
    RecordEvent: "events",
    Shared: "shared",
    Handover: "bundles",
}
DUPLICATE_WINDOW_S = 24 * 3600.0  # a post republishing after a long cut still hits the dedup window
PUBLISH_WINDOW = 2000  # publishes awaiting their acknowledgement at once
STALLED_NS = 5_000_000_000  # a source silent this long (it heartbeats every second or so) is stalled


class BackboneError(RuntimeError):
    """The local nats-server refused or could not be reached."""


class NatsBackbone:
    """One connection to the local nats-server (the post's leaf node, or the hub for the centre)."""

    def __init__(self, config: BackboneSection) -> None:
        self.config = config
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise BackboneError("the backbone is not connected")
        return self._js

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise BackboneError("the backbone is not connected")
        return self._nc

    async def connect(self, timeout_s: float = 10.0) -> None:
        try:
            self._nc = await nats.connect(
                self.config.url,
                connect_timeout=timeout_s,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                allow_reconnect=True,
            )
        except (OSError, NatsError) as exc:
            raise BackboneError(f"cannot reach the local nats-server at {self.config.url}: {exc}") from exc
        self._js = self._nc.jetstream(domain=self.config.domain, timeout=timeout_s)
        await self._ensure_streams()

    async def close(self) -> None:
        """Drain the connection (what was published reaches the server), or just close it when the
        nats-server is gone: a post stopping while its server is down still stops cleanly."""
        if self._nc is not None:
            try:
                await self._nc.drain()
            except NatsError as exc:
                log.info("backbone: closing without draining: %s", exc)
                await self._nc.close()
            self._nc = None
            self._js = None

    async def _ensure_streams(self) -> None:
        config = self.config
        if config.role == "post":
            await self._stream(
                StreamConfig(
                    name=config.post_stream(config.domain),
                    subjects=[config.post_subject(config.domain, what) for what in SUBJECTS.values()],
                    storage=StorageType.FILE,
                    duplicate_window=DUPLICATE_WINDOW_S,
                )
            )
        await self._stream(
            StreamConfig(name=REGION_STREAM, storage=StorageType.FILE, sources=self._sources())
        )

    def _sources(self) -> list[StreamSource]:
        """A post's copy of the region sources the centre's; the centre's sources every post's stream."""
        if self.config.role == "post":
            hub = ExternalStream(api=f"$JS.{self.config.hub_domain}.API")
            return [StreamSource(name=REGION_STREAM, external=hub)]
        return [
            StreamSource(name=self.config.post_stream(post), external=ExternalStream(api=f"$JS.{post}.API"))
            for post in self.config.posts
        ]

    async def revive(self) -> list[str]:
        """Restart at once every source of this node's region stream that has been silent while its
        far side answers (a leaf link that came back): JetStream retries a failed source only after
        a backoff that grows with each failure, up to two minutes, which after a long cut would
        leave the region apart long after the link returned. Returns the sources restarted."""
        info = await self.js.stream_info(REGION_STREAM)
        config = info.config
        restarted = []
        for source in info.sources or []:
            if source.active is not None and 0 <= source.active < STALLED_NS and not source.error:
                continue
            domain = (
                self.config.hub_domain if self.config.role == "post" else source.name.removeprefix("POST_")
            )
            try:
                await self.nc.request(f"$JS.{domain}.API.INFO", b"", timeout=1.0)
            except (TimeoutError, NatsError):
                continue  # still cut off: JetStream's own retry will do
            keep = [s for s in config.sources or [] if s.name != source.name]
            await self.js.update_stream(replace(config, sources=keep))
            await self.js.update_stream(replace(config, sources=self._sources()))
            restarted.append(source.name)
        return restarted

    async def _stream(self, stream: StreamConfig) -> None:
        try:
            await self.js.add_stream(stream)
        except BadRequestError:
            await self.js.update_stream(stream)  # a changed configuration (e.g. a post added)

    async def publish(self, events: Sequence[RecordEvent | Shared | Handover]) -> None:
        """Publish to this post's stream; returns once JetStream stored every one (or had it)."""
        subjects = {
            kind: self.config.post_subject(self.config.domain, what) for kind, what in SUBJECTS.items()
        }
        for start in range(0, len(events), PUBLISH_WINDOW):
            futures = [
                await self.js.publish_async(
                    subjects[type(e)],
                    e.encode(),
                    headers={"Nats-Msg-Id": e.event_id},
                )
                for e in events[start : start + PUBLISH_WINDOW]
            ]
            await asyncio.gather(*futures)

    def read_streams(self) -> list[str]:
        """The streams this node folds: its own and its mirror of the region, or the region."""
        if self.config.role == "post":
            return [self.config.post_stream(self.config.domain), REGION_STREAM]
        return [REGION_STREAM]

    async def last_seq(self, stream: str) -> int:
        info = await self.js.stream_info(stream)
        return int(info.state.last_seq)

    async def events(self, stream: str) -> AsyncIterator[tuple[int, str, RecordEvent | Shared | Handover]]:
        """Every event in ``stream`` from its start, then live ones: ``(stream seq, the post that
        published it, event)``."""
        queue: asyncio.Queue[Msg] = asyncio.Queue()

        async def take(msg: Msg) -> None:
            queue.put_nowait(msg)

        sub = await self.js.subscribe(
            f"{self.config.region}.>", stream=stream, cb=take, ordered_consumer=True, idle_heartbeat=2.0
        )
        try:
            while True:
                msg = await queue.get()
                _, post, what = msg.subject.split(".")  # names hold no dots (config)
                try:
                    event: RecordEvent | Shared | Handover = (
                        Shared.decode(msg.data)
                        if what == "shared"
                        else Handover.decode(msg.data)
                        if what == "bundles"
                        else RecordEvent.decode(msg.data)
                    )
                except (EventError, SharedError, HandoverError) as exc:
                    log.warning("backbone stream %s: %s (skipped)", stream, exc)
                    continue
                yield int(msg.metadata.sequence.stream), post, event
        finally:
            await sub.unsubscribe()

    async def stream_messages(self, stream: str) -> int:
        info: Any = await self.js.stream_info(stream)
        return int(info.state.messages)
