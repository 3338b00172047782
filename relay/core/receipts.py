"""The end-to-end delivery receipt that tells a bundle's origin it arrived and how.

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
from dataclasses import dataclass

from relay.bundle import MAX_TRAIL, MAX_U32, TRAIL_ID_LEN, Bundle, BundleId
from relay.core.frames import ID_KEY_LEN
from relay.core.status import BundleStatus, State  # where a bundle is; kept importable from here

__all__ = [
    "LEGACY_RECEIPT_LEN",
    "MAX_RECEIPT_LEN",
    "MIN_RECEIPT_LEN",
    "BundleStatus",
    "ForgedReceiptError",
    "Receipt",
    "ReceiptDecodeError",
    "State",
]

LEGACY_RECEIPT_LEN = ID_KEY_LEN + 4
MIN_RECEIPT_LEN = LEGACY_RECEIPT_LEN + 1
MAX_RECEIPT_LEN = MIN_RECEIPT_LEN + MAX_TRAIL * TRAIL_ID_LEN


class ForgedReceiptError(ValueError):
    """A receipt sealed by a node other than the one the bundle was addressed to."""


class ReceiptDecodeError(ValueError):
    """A receipt plaintext of the wrong shape; the message says which part."""


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
