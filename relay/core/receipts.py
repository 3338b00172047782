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

A destination that delivers several bundles of one origin at once (a batch of frames) sends one
:class:`ReceiptBatch` per origin and path instead, of kind ``Kind.RECEIPTS``, for 2 to
:data:`MAX_RECEIPT_SUBJECTS` subjects. The origin is the receipt's recipient, so only each subject's
time and sequence travel::

    delivered(uint32) hops(uint8) n(uint8) path(n x 4) subjects(m x (created uint32, seq uint16))

The largest batch, sealed, fits one LoRa frame too; a single subject keeps the encoding above.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from relay.bundle import MAX_TRAIL, MAX_U32, TRAIL_ID_LEN, Bundle, BundleId, Kind
from relay.core.frames import ID_KEY_LEN
from relay.core.status import BundleStatus, State  # where a bundle is; kept importable from here

__all__ = [
    "LEGACY_RECEIPT_LEN",
    "MAX_BATCH_LEN",
    "MAX_RECEIPT_LEN",
    "MAX_RECEIPT_SUBJECTS",
    "MIN_RECEIPT_LEN",
    "BundleStatus",
    "ForgedReceiptError",
    "Receipt",
    "ReceiptBatch",
    "ReceiptDecodeError",
    "State",
    "receipt_path",
    "receipts_for",
]

LEGACY_RECEIPT_LEN = ID_KEY_LEN + 4
MIN_RECEIPT_LEN = LEGACY_RECEIPT_LEN + 1
MAX_RECEIPT_LEN = MIN_RECEIPT_LEN + MAX_TRAIL * TRAIL_ID_LEN
MAX_RECEIPT_SUBJECTS = 16  # with the longest path, a sealed batch still fits one LoRa frame
_SUBJECT = struct.Struct(">IH")  # a batch's subject: created(uint32) seq(uint16)
_SUBJECT_LEN = _SUBJECT.size
_new_id = tuple.__new__  # a BundleId from checked fields, in C: BundleId() is a Python __new__
_BATCH_HEAD_LEN = 6  # delivered(uint32) hops(uint8) n(uint8)
MAX_BATCH_LEN = _BATCH_HEAD_LEN + MAX_TRAIL * TRAIL_ID_LEN + MAX_RECEIPT_SUBJECTS * _SUBJECT_LEN


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
        """The receipt a destination sends for ``subject`` as it stored it (:func:`receipt_path`)."""
        return cls(subject.id, delivered, subject.hop_count, receipt_path(subject))

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


@dataclass(frozen=True, slots=True)
class ReceiptBatch:
    """One receipt for 2 to :data:`MAX_RECEIPT_SUBJECTS` bundles of one origin that arrived by the
    same path (see the module docstring): a batch of deliveries costs one receipt bundle, not one each."""

    subjects: tuple[BundleId, ...]
    delivered: int
    hops: int
    path: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if not 2 <= len(self.subjects) <= MAX_RECEIPT_SUBJECTS:
            raise ValueError(f"a receipt batch has 2 to {MAX_RECEIPT_SUBJECTS} subjects")
        if len({subject.origin for subject in self.subjects}) != 1:
            raise ValueError("the subjects of a receipt batch share one origin")
        Receipt(self.subjects[0], self.delivered, self.hops, self.path)  # the same checks as one receipt

    @property
    def origin(self) -> bytes:
        return self.subjects[0].origin

    def receipts(self) -> list[Receipt]:
        """One :class:`Receipt` per subject, as the origin's core takes them."""
        return [Receipt(subject, self.delivered, self.hops, self.path) for subject in self.subjects]

    def encode(self) -> bytes:
        head = struct.pack(">IBB", max(0, min(self.delivered, MAX_U32)), self.hops, len(self.path))
        # a list, each id unpacked as a tuple: a destination encodes one batch per 16 bundles
        subjects = b"".join([_SUBJECT.pack(created, seq) for _, created, seq in self.subjects])
        return head + b"".join(self.path) + subjects

    @classmethod
    def decode(cls, data: bytes, origin: bytes) -> ReceiptBatch:
        """Strict, for a batch sent to ``origin`` (the node reading it); else ReceiptDecodeError."""
        size = len(data)
        if size > MAX_BATCH_LEN:
            raise ReceiptDecodeError(f"a receipt batch is at most {MAX_BATCH_LEN} bytes, got {size}")
        if size < _BATCH_HEAD_LEN:
            raise ReceiptDecodeError(f"a receipt batch is at least {_BATCH_HEAD_LEN} bytes, got {size}")
        data = bytes(data)
        delivered, hops, count = struct.unpack(">IBB", data[:_BATCH_HEAD_LEN])
        if count > min(hops, MAX_TRAIL):
            raise ReceiptDecodeError(f"receipt batch path names {count} nodes for {hops} hops")
        start = _BATCH_HEAD_LEN + count * TRAIL_ID_LEN
        body = data[start:]
        if len(body) % _SUBJECT_LEN or not 2 <= len(body) // _SUBJECT_LEN <= MAX_RECEIPT_SUBJECTS:
            raise ReceiptDecodeError(
                f"a receipt batch holds 2 to {MAX_RECEIPT_SUBJECTS} subjects of {_SUBJECT_LEN} bytes "
                f"after its path; got {len(body)} bytes"
            )
        path = tuple(data[i : i + TRAIL_ID_LEN] for i in range(_BATCH_HEAD_LEN, start, TRAIL_ID_LEN))
        # cut in C, each id made in C: an origin reads one batch per 16 bundles it sent
        subjects = tuple([_new_id(BundleId, (origin, *fields)) for fields in _SUBJECT.iter_unpack(body)])
        return cls(subjects, delivered, hops, path)


def receipt_path(subject: Bundle) -> tuple[bytes, ...]:
    """The path a receipt for ``subject`` reports as its destination stored it (the trail ends with
    the destination itself); a trail longer than the hop count (a lying relay) is cut to fit."""
    trail = subject.trail
    return trail[max(0, len(trail) - min(subject.hop_count, MAX_TRAIL)) :]


def receipts_for(
    delivered: Iterable[Bundle], at: int
) -> list[tuple[Kind, Receipt | ReceiptBatch, list[Bundle]]]:
    """The receipts a destination sends for bundles it just delivered: one per origin and path, in
    batches of at most :data:`MAX_RECEIPT_SUBJECTS`; a lone subject gets the single-subject
    :class:`Receipt`. Each comes with its kind and its subjects (whose priorities and lifetimes the
    receipt bundle takes)."""
    groups: dict[tuple[bytes, int, tuple[bytes, ...]], list[Bundle]] = {}
    key: tuple[bytes, int, tuple[bytes, ...]] | None = None
    group: list[Bundle] = []
    for bundle in delivered:
        trail, hops = bundle.trail, bundle.hop_count
        # receipt_path's answer without its call when the whole trail is reported (most often)
        path = trail if len(trail) <= hops and len(trail) <= MAX_TRAIL else receipt_path(bundle)
        subject_key = (bundle.origin, hops, path)
        if subject_key != key:  # a batch's subjects come in runs of one origin and path: one lookup a run
            key = subject_key
            group = groups.setdefault(key, [])
        group.append(bundle)
    out: list[tuple[Kind, Receipt | ReceiptBatch, list[Bundle]]] = []
    for (_, hops, path), bundles in groups.items():
        for start in range(0, len(bundles), MAX_RECEIPT_SUBJECTS):
            chunk = bundles[start : start + MAX_RECEIPT_SUBJECTS]
            if len(chunk) == 1:
                out.append((Kind.RECEIPT, Receipt(chunk[0].id, at, hops, path), chunk))
            else:
                batch = ReceiptBatch(tuple(bundle.id for bundle in chunk), at, hops, path)
                out.append((Kind.RECEIPTS, batch, chunk))
    return out
