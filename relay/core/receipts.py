"""Where a bundle is, and the end-to-end delivery receipt that tells its origin it arrived.

A receipt is an ordinary bundle of kind ``Kind.RECEIPT`` addressed to the subject's origin, at the
subject's priority (a FLASH alarm's receipt frees FLASH copies as fast as the alarm travelled).
Its plaintext is the subject's 22-byte id key and the delivery time (uint32 seconds since the
Mesh112 epoch); the engine seals it, so only the origin reads it and only the recipient can make it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum

from relay.bundle import MAX_U32, BundleId
from relay.core.frames import ID_KEY_LEN

RECEIPT_LEN = ID_KEY_LEN + 4


class ReceiptDecodeError(ValueError):
    """A receipt plaintext of the wrong shape."""


class State(Enum):
    UNKNOWN = "unknown"
    QUEUED = "queued"
    FORWARDED = "forwarded"
    DELIVERED = "delivered"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class BundleStatus:
    """The answer to "where is my bundle": queued, forwarded to ``peer`` over ``link``, delivered."""

    state: State
    peer: bytes | None = None
    link: str | None = None
    at: float | None = None

    def __str__(self) -> str:
        if self.state is State.FORWARDED and self.peer is not None:
            return f"forwarded to {self.peer.hex()[:8]} over {self.link}"
        return self.state.value


@dataclass(frozen=True, slots=True)
class Receipt:
    subject: BundleId
    delivered: int  # seconds since the Mesh112 epoch

    def encode(self) -> bytes:
        return self.subject.key() + struct.pack(">I", max(0, min(self.delivered, MAX_U32)))

    @classmethod
    def decode(cls, data: bytes) -> Receipt:
        if len(data) != RECEIPT_LEN:
            raise ReceiptDecodeError(f"a receipt is {RECEIPT_LEN} bytes, got {len(data)}")
        (delivered,) = struct.unpack(">I", data[ID_KEY_LEN:])
        return cls(BundleId.from_key(data[:ID_KEY_LEN]), delivered)
