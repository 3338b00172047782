"""An in-process link: several nodes in one process exchange frames through asyncio queues.

For tests and demos that want real stores and real crypto without sockets. Every link attached to
one :class:`InprocHub` sees every other as a neighbour (like nodes sharing a radio channel or a
LAN). A frame larger than the profile's MTU is refused with :class:`LinkError`, as a real link would.
"""

from __future__ import annotations

import asyncio
import contextlib

from relay.links.base import BROADCAST, Link, LinkError, LinkEvents, LinkProfile

QUEUE_FRAMES = 1024  # per receiver; a full queue makes senders wait (back-pressure)


class InprocHub:
    def __init__(self) -> None:
        self._members: dict[bytes, InprocLink] = {}

    def join(self, link: InprocLink) -> list[InprocLink]:
        if link.node_id in self._members:
            raise LinkError(f"node {link.node_id.hex()[:8]} is already on this hub")
        others = list(self._members.values())
        self._members[link.node_id] = link
        return others

    def leave(self, link: InprocLink) -> list[InprocLink]:
        self._members.pop(link.node_id, None)
        return list(self._members.values())

    def member(self, node_id: bytes) -> InprocLink | None:
        return self._members.get(node_id)

    def others(self, node_id: bytes) -> list[InprocLink]:
        return [link for nid, link in self._members.items() if nid != node_id]


class InprocLink(Link):
    def __init__(self, hub: InprocHub, node_id: bytes, profile: LinkProfile) -> None:
        self.hub = hub
        self.node_id = node_id
        self.profile = profile
        self._events: LinkEvents | None = None
        self._queue: asyncio.Queue[tuple[bytes, bytes]] = asyncio.Queue(QUEUE_FRAMES)
        self._reader: asyncio.Task[None] | None = None

    async def start(self, events: LinkEvents) -> None:
        self._events = events
        self._reader = asyncio.create_task(self._read(), name=f"inproc-{self.profile.name}")
        for other in self.hub.join(self):
            events.link_up(self.profile.name, other.node_id)
            other._peer_up(self.node_id)

    async def send(self, peer: bytes, frame: bytes) -> None:
        self._check(frame)
        targets = self.hub.others(self.node_id) if peer == BROADCAST else [self._member(peer)]
        for target in targets:
            await target._queue.put((self.node_id, frame))

    def try_send(self, peer: bytes, frame: bytes, flash: bool = False) -> bool | None:
        if peer == BROADCAST:
            return None
        self._check(frame)
        queue = self._member(peer)._queue
        if queue.full():
            return False
        queue.put_nowait((self.node_id, frame))
        return True

    def _check(self, frame: bytes) -> None:
        if self._events is None:
            raise LinkError(f"link {self.profile.name} is not started")
        if len(frame) > self.profile.mtu:
            raise LinkError(f"frame of {len(frame)} bytes exceeds the {self.profile.mtu}-byte MTU")

    def _member(self, peer: bytes) -> InprocLink:
        target = self.hub.member(peer)
        if target is None:
            raise LinkError(f"peer {peer.hex()[:8]} is not on this link")
        return target

    async def stop(self) -> None:
        for other in self.hub.leave(self):
            other._peer_down(self.node_id)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        self._events = None

    def _peer_up(self, peer: bytes) -> None:
        if self._events is not None:
            self._events.link_up(self.profile.name, peer)

    def _peer_down(self, peer: bytes) -> None:
        if self._events is not None:
            self._events.link_down(self.profile.name, peer)

    async def _read(self) -> None:
        while True:
            sender, frame = await self._queue.get()
            if self._events is not None:
                self._events.frame_received(self.profile.name, sender, frame)
