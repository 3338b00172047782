"""Where a bundle is, and the end-to-end delivery receipt that tells its origin it arrived and how.

A receipt is an ordinary bundle of kind ``Kind.RECEIPT`` addressed to the subject's origin, at the
subject's priority (a FLASH alarm's receipt frees FLASH copies as fast as the alarm travelled).
The engine seals it, so only the origin reads it and only the recipient can make it. Plaintext::

    subject id key(22) delivered(uint32) [hops(uint8) path(n x 4)]

``delivered`` is in seconds since the Mesh112 epoch. ``hops`` is the subject's hop count on
arrival and ``path`` the last ``n`` entries (0-16) of its trail: the short ids of the nodes that
took custody, the destination last. ``n < hops`` means the earlier hops went unrecorded (a LoRa
hop, whose header has no room for a trail). Receipts from before the path existed are the first
26 bytes alone (``hops`` is then ``None``). The largest receipt, sealed, fits one LoRa frame.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from enum import Enum

from relay.bundle import MAX_TRAIL, MAX_U32, TRAIL_ID_LEN, Bundle, BundleId, from_epoch
from relay.core.frames import ID_KEY_LEN

LEGACY_RECEIPT_LEN = ID_KEY_LEN + 4
MIN_RECEIPT_LEN = LEGACY_RECEIPT_LEN + 1
MAX_RECEIPT_LEN = MIN_RECEIPT_LEN + MAX_TRAIL * TRAIL_ID_LEN


class ForgedReceiptError(ValueError):
    """A receipt sealed by a node other than the one the bundle was addressed to."""


class ReceiptDecodeError(ValueError):
    """A receipt plaintext of the wrong shape; the message says which part."""


class State(Enum):
    UNKNOWN = "unknown"
    QUEUED = "queued"
    FORWARDED = "forwarded"
    DELIVERED = "delivered"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class BundleStatus:
    """The answer to "where is my bundle": queued, forwarded to ``peer`` over ``link``, delivered.

    Once delivered, ``hops`` and ``path`` come from the receipt: ``path`` holds the short ids of the
    last ``len(path)`` nodes that took custody (the destination last), and ``names`` their display
    names where the node knows them (the engine fills them in; the core knows no names). ``peer``
    and ``link`` keep the first hop: the neighbour that last took custody from this node. The path
    is informational: relays write it and nothing authenticates it hop by hop.
    """

    state: State
    peer: bytes | None = None
    link: str | None = None
    at: float | None = None  # seconds since the Mesh112 epoch
    hops: int | None = None
    path: tuple[bytes, ...] = ()
    names: tuple[str, ...] = ()

    @property
    def path_complete(self) -> bool:
        """Whether ``path`` names every hop (False before delivery or when hops went unrecorded)."""
        return self.hops is not None and len(self.path) >= self.hops

    def path_labels(self) -> tuple[str, ...]:
        """Display names where known, the short id in hex otherwise."""
        if len(self.names) == len(self.path):
            return self.names
        return tuple(entry.hex() for entry in self.path)

    def __str__(self) -> str:
        if self.state is State.FORWARDED and self.peer is not None:
            return f"forwarded to {self.peer.hex()[:8]} over {self.link}"
        if self.state is not State.DELIVERED:
            return str(self.state.value)
        text = "delivered"
        if self.at is not None:
            text += time.strftime(" at %H:%M:%S UTC", time.gmtime(from_epoch(self.at)))
        if self.hops is None:
            return text + " (the receipt reports no path)"
        steps = list(self.path_labels())
        if not self.path_complete:
            missing = self.hops - len(self.path)
            steps.insert(0, f"[{missing} hop{'s' if missing != 1 else ''} not recorded]")
        if steps:
            text += " via " + " → ".join(steps)
        text += f", {self.hops} hop{'s' if self.hops != 1 else ''}"
        if self.link is not None:
            text += f" (first over {self.link})"
        return text


@dataclass(frozen=True, slots=True)
class Receipt:
    subject: BundleId
    delivered: int  # seconds since the Mesh112 epoch
    hops: int | None = None  # None: a receipt from a node that did not report the path
    path: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if self.hops is None:
            if self.path:
                raise ValueError("a receipt without a hop count carries no path")
            return
        if not 0 <= self.hops <= 0xFF:
            raise ValueError("hops must fit in one byte")
        if len(self.path) > min(self.hops, MAX_TRAIL):
            raise ValueError(f"a receipt path has at most min(hops, {MAX_TRAIL}) entries")
        if any(len(entry) != TRAIL_ID_LEN for entry in self.path):
            raise ValueError(f"receipt path entries are {TRAIL_ID_LEN}-byte short ids")

    @classmethod
    def for_bundle(cls, subject: Bundle, delivered: int) -> Receipt:
        """The receipt a destination sends for ``subject`` as it stored it (the trail ends with the
        destination itself); a trail longer than the hop count (a lying relay) is cut to fit."""
        hops = subject.hop_count
        return cls(
            subject.id, delivered, hops, subject.trail[max(0, len(subject.trail) - min(hops, MAX_TRAIL)) :]
        )

    def encode(self) -> bytes:
        head = self.subject.key() + struct.pack(">I", max(0, min(self.delivered, MAX_U32)))
        if self.hops is None:
            return head
        return head + bytes((self.hops,)) + b"".join(self.path)

    @classmethod
    def decode(cls, data: bytes) -> Receipt:
        """Strict: exact lengths only, a path no longer than the hop count; else ReceiptDecodeError."""
        size = len(data)
        if size > MAX_RECEIPT_LEN:
            raise ReceiptDecodeError(f"a receipt is at most {MAX_RECEIPT_LEN} bytes, got {size}")
        if size != LEGACY_RECEIPT_LEN and (size < MIN_RECEIPT_LEN or (size - MIN_RECEIPT_LEN) % TRAIL_ID_LEN):
            raise ReceiptDecodeError(
                f"a receipt is {LEGACY_RECEIPT_LEN} bytes, or {MIN_RECEIPT_LEN} plus {TRAIL_ID_LEN} per path "
                f"entry; got {size}"
            )
        data = bytes(data)
        (delivered,) = struct.unpack(">I", data[ID_KEY_LEN:LEGACY_RECEIPT_LEN])
        subject = BundleId.from_key(data[:ID_KEY_LEN])
        if size == LEGACY_RECEIPT_LEN:
            return cls(subject, delivered)
        hops = data[LEGACY_RECEIPT_LEN]
        body = data[MIN_RECEIPT_LEN:]
        path = tuple(body[i : i + TRAIL_ID_LEN] for i in range(0, len(body), TRAIL_ID_LEN))
        if len(path) > hops:
            raise ReceiptDecodeError(f"receipt path names {len(path)} nodes for {hops} hops")
        return cls(subject, delivered, hops, path)
