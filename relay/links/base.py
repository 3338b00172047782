"""The one small interface every link (convergence layer) implements.

A link moves opaque frames of at most ``profile.mtu`` bytes between this node and its neighbours,
and reports neighbours coming and going. It knows nothing of bundles: the core decides what goes in
a frame. Neighbours are named by their 16-byte node id, which the link has authenticated (IP: the
enrolment handshake; LoRa: the roster; sim: by construction).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol

from crypto.certificate import RevocationList
from relay.errors import Mesh112Error

BROADCAST = b"\xff" * 16  # send to every neighbour on the link (LoRa channel broadcast)


@dataclass(frozen=True, slots=True)
class LinkProfile:
    """What the scheduler needs to know to spend a link well."""

    name: str  # unique on this node, e.g. "ip0", "lora0"
    kind: str  # "ip" | "lora" | "webrtc" | "sim"
    mtu: int  # largest frame in bytes
    bitrate: float  # bytes per second the link can carry (its budget)
    cost: float = 1.0  # routing cost per frame; LoRa is costly
    duty_cycle: float = 1.0  # fraction of time the node may transmit (EU 868: 0.01 or 0.1)
    compact: bool = False  # carry bundles in the compact (LoRa) encoding
    per_frame_overhead_s: float = 0.0  # fixed airtime/latency per frame (LoRa preamble)
    # Every neighbour in range hears a DATA frame sent to one of them, authenticated, and the link
    # can make the frame reach the neighbours it names (a broadcast medium): a relay forwarding a
    # FLASH on the link it came in on sends no custody ACK, its forward is the ACK (docs/relay-core.md)
    implicit_ack: bool = False
    # Frames reach the neighbour in the order sent and are lost only with the connection (an IP
    # session): a copy not yet acknowledged while the neighbour acknowledges older ones waits in its
    # queue, it is not lost, and its custody timeout does not resend it (relay/core/custody.py)
    ordered: bool = False
    # The link resends a lost frame itself, as every real one does (TCP, the data channel, the LoRa
    # radio's ACK and retries): the core repeats no FLASH on it before it saw a copy lost. False: the
    # simulator's LoRa without its radio's ARQ, where a lost frame is lost (relay/core/custody.py)
    retransmits: bool = True


class LinkEvents(Protocol):
    def link_up(self, link: str, peer: bytes) -> None: ...
    def link_down(self, link: str, peer: bytes) -> None: ...
    def frame_received(self, link: str, peer: bytes, frame: bytes) -> None: ...
    def frame_overheard(self, link: str, peer: bytes, frame: bytes) -> None: ...


class LinkError(Mesh112Error):
    """A link could not do what was asked; the message says what an operator can check."""


class Link(ABC):
    profile: LinkProfile
    # FLASH frames the node hands the link while an earlier frame's send is still running: a LoRa
    # send returns only when the radio's ACK comes, up to three tries later (about 25 s), and an
    # alarm must not wait for it. 0: one frame at a time (a link whose send returns at once).
    flash_alongside: int = 0

    @abstractmethod
    async def start(self, events: LinkEvents) -> None:
        """Open the link and begin reporting neighbours and frames to ``events``."""

    @abstractmethod
    async def send(self, peer: bytes, frame: bytes) -> None:
        """Send one frame to ``peer`` (or BROADCAST). Raises LinkError if the peer is unreachable."""

    async def send_flash(self, peer: bytes, frame: bytes) -> None:
        """Send a FLASH frame (or a certificate frame one may need): a link that queues frames of
        its own (IP: up to a window of them) puts it ahead of them; any other sends it as any
        frame (it already went first)."""
        await self.send(peer, frame)

    def try_send(self, peer: bytes, frame: bytes, flash: bool = False) -> bool | None:
        """Hand ``frame`` over (as :meth:`send_flash` with ``flash``) only if ``peer`` can take it
        without waiting: True if taken, False if it cannot now (nothing sent), None if this link
        cannot tell (the node awaits :meth:`send` or :meth:`send_flash`). While a frame waits for
        a full peer the node still sends FLASH frames, and a FLASH frame that finds no room waits
        on its own, so one slow peer holds no alarm to another back."""
        return None

    async def send_acknowledging(self, peer: bytes, frame: bytes, acks: tuple[bytes, ...]) -> None:
        """Send ``frame`` to ``peer`` so that the neighbours ``acks`` hear it too, authenticated
        (``profile.implicit_ack``): it is their custody ACK. A link that cannot sends it to ``peer``
        alone; those neighbours then resend, and the duplicate is answered as any duplicate is."""
        await self.send(peer, frame)

    @abstractmethod
    async def stop(self) -> None:
        """Close the link and release every resource it holds."""

    def pace(self, peer: bytes) -> float | None:
        """Seconds between the keepalives this link's connection to ``peer`` exchanges, when it has
        them (IP, read when the peer comes up): the node beacons no more often to a peer that asked
        for a slow pace (a phone on battery). None: the link has no such pace."""
        return None

    def revoked(self, revocations: RevocationList) -> None:  # noqa: B027 - most links hold no sessions
        """A newer revocation list was applied: cut the sessions of the nodes it revokes and refuse
        them from now on. A link without sessions has nothing to cut (the engine drops a revoked
        neighbour's frames)."""
