"""The bundle: the unit every Mesh112 relay stores and forwards, and its two wire encodings.

A bundle is immutable. Its identity is ``(origin, created, seq)``: the origin's 16-byte node id,
the creation time in whole seconds since the Mesh112 epoch (2024-01-01T00:00:00Z) and a 16-bit
per-origin sequence number that the origin persists, so an id is never reused even by a node
without a trustworthy clock. Relays read the header; only recipients open ``payload``, which is
sealed end to end by ``crypto`` before the bundle is made.

Two encodings carry the same header:

**Full** (IP, WebRTC, the store): a msgpack array, version first::

    [1, origin(bin16), dest_kind(int), dest_value(bin|str|nil), created(uint32), seq(uint16),
     lifetime_s(uint32), priority(0-4), kind(uint8), hop_count(uint8), payload(bin), trail(bin)?]

The optional twelfth field is the **trail**: the 4-byte node-id prefixes of the nodes that took
custody, oldest first, concatenated (1-16 entries; an empty trail is left out, so a bundle without
one encodes exactly as before the field existed and stored bundles from then still load). Like the
hop count it is mutable in transit and not covered by :meth:`Bundle.aad`, so relays can append to
it without breaking the seal; it is informational, not authenticated hop by hop.

**Compact** (LoRa, ARCHITECTURE §4: header ≤ 16 bytes), followed directly by the payload::

    byte  0      version (2 bits, = 1) | priority (3 bits) | destination kind (2 bits) | 0
    bytes 1-3    origin short id (first 3 bytes of the node id)
    bytes 4-6    destination short code: node short id, 3-byte hash of a role or group, 0 for ALL
    bytes 7-10   created, uint32 big endian, seconds since the Mesh112 epoch
    bytes 11-12  seq, uint16 big endian
    byte  13     kind
    bytes 14-15  hop count (4 bits) | lifetime in whole minutes (12 bits, at most 68 h 15 min)

The compact header has no room for the trail: a bundle decoded from it has an empty trail, and
:attr:`Bundle.trail_gap` (hops the trail does not name) says honestly how many hops went unrecorded.

Short ids and codes are compressed against the link's context: the receiver resolves them with a
:class:`CompactContext` built from the deployment's enrolment roster (the authority refuses to
enrol two nodes with the same short id). A compact lifetime is rounded down to the minute, so a
relay may drop a bundle slightly early but never keeps it too long, except that the field's
minimum is one minute: a bundle that lives under a minute lives a full minute after the trip.

Decoding is strict: sizes, types and ranges are checked and any violation raises
:class:`BundleDecodeError` with a message saying which field is wrong.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import IntEnum
from typing import Any, NamedTuple, Protocol

import msgpack

WIRE_VERSION = 1
EPOCH_UNIX = 1_704_067_200  # 2024-01-01T00:00:00Z
NODE_ID_LEN = 16
SHORT_ID_LEN = 3
COMPACT_HEADER_LEN = 16
MAX_PAYLOAD = 1 << 20  # 1 MiB: larger things are split by the application (video uses WebRTC)
MAX_FULL_BUNDLE = MAX_PAYLOAD + 512
MAX_NAME_LEN = 64  # role and group names
MAX_LIFETIME_S = 30 * 24 * 3600
MAX_COMPACT_LIFETIME_MIN = 0x0FFF
MAX_COMPACT_HOPS = 0x0F
MAX_U32 = 0xFFFF_FFFF
MAX_SEQ = 0xFFFF
_ID_TAIL = struct.Struct(">IH")  # a bundle id key after the origin: created, seq
# a whole key (BundleId.key) from an id of a checked origin, in one pack in C: ``ID_KEY.pack(*id)``
# for ids in bulk, with no Python call per id (a relay packs two per bundle it hands on)
ID_KEY = struct.Struct(f">{NODE_ID_LEN}sIH")
_AAD_HEAD = struct.Struct(">4s4B")  # b"M112", version, destination kind, priority, kind
_U32 = struct.Struct(">I")
# The aad's lifetime bytes by lifetime: a backlog's bundles share a few lifetimes, and each made
# anew was two Python calls and a pack. Cleared when full, as _node_destinations.
_AAD_LIFETIMES: dict[int, bytes] = {}
_MAX_AAD_LIFETIMES = 1024
TRAIL_ID_LEN = 4  # a node in the trail: the first 4 bytes of its node id
MAX_TRAIL = 16  # entries; a longer path keeps its last MAX_TRAIL nodes (the hop count tells the rest)


class BundleDecodeError(ValueError):
    """Bytes from the network (or disk) that are not a valid bundle; the message names the field."""


class DestinationError(ValueError):
    """A destination written as text does not parse; the message shows the accepted forms."""


class BundleEncodeError(ValueError):
    """A bundle that cannot be put in the requested encoding (e.g. unknown short id context)."""


class Priority(IntEnum):
    """Priority classes, highest first. A lower class never delays a higher one on any link."""

    FLASH = 0  # life safety: SOS, NG112 alarm, revocation
    IMMEDIATE = 1  # detections, orders
    PRIORITY = 2  # messages, positions
    ROUTINE = 3  # receipts, status
    BULK = 4  # snapshots, clips, video fallback


class DestKind(IntEnum):
    NODE = 0
    ROLE = 1
    GROUP = 2
    ALL = 3


class Kind(IntEnum):
    """Payload kinds owned by the relay itself. Applications register theirs from 32 upward."""

    TEXT = 1
    POSITION = 2
    SOS = 3
    RECEIPT = 4
    REVOCATION = 5
    GROUP_KEY = 6
    STATUS = 7
    WEBRTC_SIGNAL = 8  # a WebRTC offer or answer (relay.links.webrtc_signal) carried over the mesh
    RECEIPTS = 9  # one end-to-end receipt for several bundles of one origin (relay.core.receipts)
    FIRST_APPLICATION_KIND = 32


def short_code(name: str) -> bytes:
    """The 3-byte code of a role or group name in the compact encoding."""
    return hashlib.blake2b(name.encode("utf-8"), digest_size=SHORT_ID_LEN).digest()


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a bundle goes: one node (16-byte id), everyone holding a role, an incident group, or all."""

    kind: DestKind
    node: bytes | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if self.kind is DestKind.NODE:
            if self.node is None or len(self.node) != NODE_ID_LEN or self.name is not None:
                raise ValueError("a NODE destination needs a 16-byte node id and no name")
        elif self.kind in (DestKind.ROLE, DestKind.GROUP):
            if self.node is not None or not self.name or len(self.name.encode()) > MAX_NAME_LEN:
                raise ValueError(f"a {self.kind.name} destination needs a name of 1-{MAX_NAME_LEN} bytes")
        elif self.node is not None or self.name is not None:
            raise ValueError("an ALL destination has neither node nor name")

    @classmethod
    def parse(cls, text: str) -> Destination:
        """``node:<32 hex digits>``, ``role:<name>``, ``group:<name>`` or ``all`` (what ``str()`` writes).

        Node names are not resolved here: the layer that knows the roster (the API) does that.
        """
        kind, colon, value = text.partition(":")
        if text == "all":
            return cls.everyone()
        if not colon or kind not in ("node", "role", "group"):
            raise DestinationError(
                f"{text!r} is not a destination: use node:<32 hex digits>, role:<name>, group:<name> or all"
            )
        if kind == "node":
            if len(value) != 2 * NODE_ID_LEN or any(c not in "0123456789abcdefABCDEF" for c in value):
                raise DestinationError(f"{text}: a node id is {2 * NODE_ID_LEN} hex digits")
            return cls.to_node(bytes.fromhex(value))
        if not value or len(value.encode()) > MAX_NAME_LEN:
            raise DestinationError(f"{text}: a {kind} name is 1-{MAX_NAME_LEN} bytes")
        return cls.to_role(value) if kind == "role" else cls.to_group(value)

    @classmethod
    def to_node(cls, node_id: bytes) -> Destination:
        return cls(DestKind.NODE, node=node_id)

    @classmethod
    def to_role(cls, role: str) -> Destination:
        return cls(DestKind.ROLE, name=role)

    @classmethod
    def to_group(cls, group: str) -> Destination:
        return cls(DestKind.GROUP, name=group)

    @classmethod
    def everyone(cls) -> Destination:
        return cls(DestKind.ALL)

    def short(self) -> bytes:
        if self.node is not None:
            return self.node[:SHORT_ID_LEN]
        if self.name is not None:
            return short_code(self.name)
        return bytes(SHORT_ID_LEN)

    def __str__(self) -> str:
        if self.node is not None:
            return f"node:{self.node.hex()}"
        if self.name is not None:
            return f"{self.kind.name.lower()}:{self.name}"
        return "all"


class Header(Protocol):
    """What routing reads of a bundle: a relay's held record answers it without the payload."""

    @property
    def destination(self) -> Destination: ...

    @property
    def priority(self) -> Priority: ...


class BundleId(NamedTuple):
    """A bundle's identity. A tuple, not a dataclass: ids are dict and set keys everywhere (a sender
    hashes one about 38 times per bundle), and a tuple hashes and compares in C (a dict lookup by an
    equal id 0.28 -> 0.13 µs). It equals the plain tuple of its fields; nothing keys a mapping by both."""

    origin: bytes
    created: int
    seq: int

    def key(self) -> bytes:
        """22 bytes, stable and sortable: the store's primary key and the compact seal's nonce input."""
        return self.origin + _ID_TAIL.pack(self.created, self.seq)

    @classmethod
    def from_key(cls, key: bytes) -> BundleId:
        if len(key) != NODE_ID_LEN + 6:
            raise BundleDecodeError(f"bundle id key must be {NODE_ID_LEN + 6} bytes, got {len(key)}")
        created, seq = _ID_TAIL.unpack(key[NODE_ID_LEN:])
        return _new_id(cls, (key[:NODE_ID_LEN], created, seq))  # in C: cls() is a Python __new__

    def __str__(self) -> str:
        return f"{self.origin.hex()[:8]}-{self.created}-{self.seq}"


@dataclass(frozen=True, slots=True)
class Bundle:
    origin: bytes
    destination: Destination
    created: int  # seconds since EPOCH_UNIX
    seq: int
    lifetime: int  # seconds
    priority: Priority
    kind: int
    payload: bytes
    hop_count: int = 0
    trail: tuple[bytes, ...] = ()  # TRAIL_ID_LEN-byte ids of the nodes that took custody, oldest first
    # a slot, not a property over one: read about 15 times per bundle at each end of a hop
    id: BundleId = field(init=False, repr=False, compare=False)
    # the id's key (BundleId.key), packed once: the seal, the seen memory and the store each need
    # it, and each packing is a call, a pack and a concatenation (five per bundle received)
    key: bytes = field(init=False, repr=False, compare=False)
    # its full encoding, when the decoder made it with the bundle from a DATA frame (decode_full with
    # ``taken_by``, for another node): encode_full returns it, so a relay's stored copy and hop copy
    # are not encoded anew
    encoded: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.origin) != NODE_ID_LEN:
            raise ValueError(f"origin must be a {NODE_ID_LEN}-byte node id")
        if not 0 <= self.created <= MAX_U32:
            raise ValueError("created is out of range")
        if not 0 <= self.seq <= MAX_SEQ:
            raise ValueError("seq is out of range (0-65535)")
        if not 1 <= self.lifetime <= MAX_LIFETIME_S:
            raise ValueError(f"lifetime must be 1 s to {MAX_LIFETIME_S} s")
        if not 0 <= self.kind <= 0xFF:
            raise ValueError("kind must fit in one byte")
        if not 0 <= self.hop_count <= 0xFF:
            raise ValueError("hop_count must fit in one byte")
        if len(self.payload) > MAX_PAYLOAD:
            raise ValueError(f"payload is larger than {MAX_PAYLOAD} bytes")
        if self.trail and (len(self.trail) > MAX_TRAIL or any(len(e) != TRAIL_ID_LEN for e in self.trail)):
            raise ValueError(f"a trail holds at most {MAX_TRAIL} ids of {TRAIL_ID_LEN} bytes")
        if type(self.priority) is not Priority:  # most come as one: the enum's call is two Python frames
            object.__setattr__(self, "priority", Priority(self.priority))
        object.__setattr__(self, "id", _new_id(BundleId, (self.origin, self.created, self.seq)))  # in C
        object.__setattr__(self, "key", self.origin + _ID_TAIL.pack(self.created, self.seq))

    @property
    def expires(self) -> int:
        """Expiry in seconds since the Mesh112 epoch."""
        return self.created + self.lifetime

    def is_expired(self, now: float) -> bool:
        """``now`` in seconds since the Mesh112 epoch (see :func:`to_epoch`)."""
        return now >= self.created + self.lifetime  # not through ``expires``: one call less per frame

    def forwarded(self) -> Bundle:
        """The copy a relay sends on: hop count incremented."""
        return self._hop_copy(min(self.hop_count + 1, 0xFF), self.trail)

    def taken_by(self, node_id: bytes) -> Bundle:
        """The copy a node keeps when it takes custody: its short id appended to the trail (the
        oldest entry falls off beyond MAX_TRAIL, so the trail is always the end of the path)."""
        return self._hop_copy(self.hop_count, _taken_trail(self.trail, node_id))

    def _hop_copy(self, hop_count: int, trail: tuple[bytes, ...]) -> Bundle:
        """This bundle with other hop fields, without checking again what it passed when made: a
        relay makes two copies per bundle per hop, and ``dataclasses.replace`` validated each anew."""
        return _assemble(
            self.origin,
            self.destination,
            self.created,
            self.seq,
            self.lifetime,
            self.priority,
            self.kind,
            self.payload,
            hop_count,
            trail,
            self.id,
            self.key,
            None,
        )

    @property
    def trail_gap(self) -> int:
        """Hops the trail does not name: crossed LoRa (no room for a trail) or beyond MAX_TRAIL.
        The origin sends with hop count 0 and each hop adds one, so a full trail has one entry per hop."""
        return max(0, self.hop_count - len(self.trail))

    def seal_inputs(self) -> tuple[bytes, bytes]:
        """The id's key (the compact seal's nonce input) and the aad, which holds it: the immutable
        header fields, identical whatever the encoding, that the seal authenticates. Sealing and
        opening need both."""
        dest = self.destination
        key = self.key
        lifetime = _AAD_LIFETIMES.get(self.lifetime)
        if lifetime is None:
            if len(_AAD_LIFETIMES) >= _MAX_AAD_LIFETIMES:
                _AAD_LIFETIMES.clear()
            # the lifetime as it survives the compact encoding, so a seal made over IP still opens
            # after a LoRa hop rounded the lifetime to whole minutes
            lifetime = _AAD_LIFETIMES[self.lifetime] = _U32.pack(compact_lifetime(self.lifetime))
        return key, b"".join(
            (
                _AAD_HEAD.pack(b"M112", WIRE_VERSION, dest.kind, self.priority, self.kind),
                key,
                dest.node if dest.node is not None else (dest.name or "").encode(),
                lifetime,
            )
        )


def _taken_trail(trail: tuple[bytes, ...], node_id: bytes) -> tuple[bytes, ...]:
    """``trail`` with ``node_id``'s short id appended, the oldest entry falling off beyond MAX_TRAIL."""
    if len(node_id) != NODE_ID_LEN:
        raise ValueError(f"a node id is {NODE_ID_LEN} bytes")
    return (*trail, node_id[:TRAIL_ID_LEN])[-MAX_TRAIL:]


class _Fields:
    """Bundle's slots, in the same layout, on a class without the frozen ``__setattr__``: see
    :func:`_assemble`."""

    __slots__ = Bundle.__slots__


def _assemble(
    origin: bytes,
    destination: Destination,
    created: int,
    seq: int,
    lifetime: int,
    priority: Priority,
    kind: int,
    payload: bytes,
    hop_count: int,
    trail: tuple[bytes, ...],
    bundle_id: BundleId,
    key: bytes,
    encoded: bytes | None,
) -> Bundle:
    """A bundle from fields already checked (a hop copy, or the decoder's, which checks each as it
    reads it): ``Bundle()`` checks them again, and every frame in and out pays for it. The fields
    are stored on a :class:`_Fields` with plain attribute stores (Python 3.11 specializes them for
    slots), which then becomes a Bundle by taking its class, as CPython allows between classes of the
    same slots; a Bundle's own slot setters cost a call each (a 100-byte bundle 2.18 -> 0.93 µs on a
    loaded machine; two per bundle per hop)."""
    bundle: Any = _new_bundle(_Fields)
    bundle.origin = origin
    bundle.destination = destination
    bundle.created = created
    bundle.seq = seq
    bundle.lifetime = lifetime
    bundle.priority = priority
    bundle.kind = kind
    bundle.payload = payload
    bundle.hop_count = hop_count
    bundle.trail = trail
    bundle.id = bundle_id
    bundle.key = key
    bundle.encoded = encoded
    bundle.__class__ = Bundle
    return bundle  # type: ignore[no-any-return]


_new_bundle = object.__new__
_new_id = tuple.__new__  # a BundleId from checked fields (0.28 -> 0.15 µs: one per bundle decoded)
assert len(fields(Bundle)) == 13, "_assemble sets every field of Bundle"


_PRIORITIES = tuple(Priority)  # by value: a tuple index is cheaper than the enum's constructor
_DEST_KINDS = tuple(DestKind)
_NODE, _ALL = DestKind.NODE, DestKind.ALL  # read per bundle decoded: a member read is a slow lookup on 3.11
_BULK_VALUE = int(Priority.BULK)  # the last class's value, compared per compact bundle decoded


def to_epoch(unix_time: float) -> float:
    return unix_time - EPOCH_UNIX


def from_epoch(mesh_time: float) -> float:
    return mesh_time + EPOCH_UNIX


# ---------------------------------------------------------------------------------------------
# Full encoding


_packers = threading.local()  # a Packer is not thread-safe; the store's thread and the loop both encode


def _packer() -> msgpack.Packer:
    """This thread's Packer: reusing one halves encode_full's cost (0.9 -> 0.4 µs per bundle)."""
    packer: msgpack.Packer | None = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    return packer


def encode_full(bundle: Bundle, hop_count: int | None = None) -> bytes:
    """The full encoding; ``hop_count`` in place of the bundle's (a relay's forwarded frame, without
    a hop copy made only to be encoded)."""
    if hop_count is None and bundle.encoded is not None:
        return bundle.encoded
    dest = bundle.destination
    value: bytes | str | None = dest.node if dest.node is not None else dest.name
    fields = [
        WIRE_VERSION,
        bundle.origin,
        dest.kind,  # an IntEnum packs as its int: no int() call (two per bundle encoded)
        value,
        bundle.created,
        bundle.seq,
        bundle.lifetime,
        bundle.priority,
        bundle.kind,
        bundle.hop_count if hop_count is None else hop_count,
        bundle.payload,
    ]
    if bundle.trail:
        fields.append(b"".join(bundle.trail))
    out: bytes = _packer().pack(fields)
    return out


def full_size(bundle: Bundle) -> int:
    """``len(encode_full(bundle))``, counted field by field with msgpack's sizes instead of encoding:
    a relay needs the size of each bundle it holds, not its bytes (0.66 -> 0.32 µs per bundle).
    tests/test_bundle.py checks it against the encoder for every destination kind and field width."""
    if bundle.encoded is not None:
        return len(bundle.encoded)
    size = 22  # array header, version, origin (bin8 header and 16 bytes), destination kind, priority
    dest = bundle.destination
    if dest.node is not None:
        size += 18
    elif dest.name is not None:
        name = len(dest.name.encode())  # at most MAX_NAME_LEN bytes: fixstr or str8
        size += 1 + name if name < 32 else 2 + name
    else:
        size += 1  # nil
    for value in (bundle.created, bundle.seq, bundle.lifetime, bundle.kind, bundle.hop_count):
        size += 1 if value < 0x80 else 2 if value < 0x100 else 3 if value < 0x10000 else 5
    payload = len(bundle.payload)
    size += 2 + payload if payload < 0x100 else 3 + payload if payload < 0x10000 else 5 + payload
    if bundle.trail:
        size += 2 + TRAIL_ID_LEN * len(bundle.trail)  # bin8: at most MAX_TRAIL ids
    return size


_node_destinations: dict[bytes, Destination] = {}
MAX_SHARED_DESTINATIONS = 4096  # node destinations the decoder keeps; past that it starts again


def _node_destination(node: bytes) -> Destination:
    """The destination ``node``, one shared object per node id: a backlog names a handful of nodes,
    and making and checking a new one cost a sixth of decoding a 100-byte bundle. Destinations are
    frozen, so sharing them is safe; the store's thread and the loop may both fill the table."""
    dest = _node_destinations.get(node)
    if dest is None:
        dest = Destination(DestKind.NODE, node=node)
        if len(_node_destinations) >= MAX_SHARED_DESTINATIONS:
            _node_destinations.clear()
        _node_destinations[node] = dest
    return dest


def _int_field(items: list[Any], index: int, name: str, low: int, high: int) -> int:
    value = items[index]
    if type(value) is not int or not low <= value <= high:
        raise BundleDecodeError(f"{name} must be an integer in {low}..{high}, got {value!r:.40}")
    return value


_BYTES_LIKE = (bytes, bytearray, memoryview)  # made once: ``bytes | bytearray | ...`` is built per call


def decode_full(data: bytes, taken_by: bytes | None = None) -> Bundle:
    """The bundle ``data`` encodes; with ``taken_by`` (a node id), as that node keeps it when it
    takes custody (:meth:`Bundle.taken_by`): a receiver keeps every bundle a DATA frame brings, and
    decoding it, then copying it, made two bundles per frame."""
    if not isinstance(data, _BYTES_LIKE):
        raise BundleDecodeError("a bundle must be bytes")
    if len(data) > MAX_FULL_BUNDLE:
        raise BundleDecodeError(f"bundle of {len(data)} bytes exceeds the {MAX_FULL_BUNDLE}-byte limit")
    try:
        items = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_bin_len=MAX_PAYLOAD,
            max_str_len=MAX_NAME_LEN,
            max_array_len=16,
            max_map_len=0,
            max_ext_len=0,
        )
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, TypeError) as exc:
        raise BundleDecodeError(f"not a msgpack bundle: {exc}") from None
    if not isinstance(items, list) or not items:
        raise BundleDecodeError("a bundle must be a msgpack array")
    if items[0] != WIRE_VERSION or type(items[0]) is not int:
        raise BundleDecodeError(
            f"unsupported bundle version {items[0]!r:.20}; this node speaks {WIRE_VERSION}"
        )
    if len(items) not in (11, 12):
        raise BundleDecodeError(f"a version-1 bundle has 11 fields (12 with a trail), got {len(items)}")
    origin = items[1]
    if not isinstance(origin, bytes) or len(origin) != NODE_ID_LEN:
        raise BundleDecodeError("origin must be a 16-byte node id")
    dest_value = items[2]
    if type(dest_value) is not int or not 0 <= dest_value <= 3:  # the call only to name what is wrong
        _int_field(items, 2, "destination kind", 0, 3)
    dest_kind = _DEST_KINDS[dest_value]
    value = items[3]
    try:
        if dest_kind is _NODE:
            if not isinstance(value, bytes):
                raise BundleDecodeError("a node destination must be bytes")
            dest = _node_destination(value)
        elif dest_kind is _ALL:
            if value is not None:
                raise BundleDecodeError("an ALL destination carries no value")
            dest = Destination(dest_kind)
        else:
            if not isinstance(value, str):
                raise BundleDecodeError(f"a {dest_kind.name} destination must be a name")
            dest = Destination(dest_kind, name=value)
    except ValueError as exc:
        if isinstance(exc, BundleDecodeError):
            raise
        raise BundleDecodeError(f"bad destination: {exc}") from None
    created, seq, lifetime, priority_value, kind, hop_count = items[4:10]
    if not (  # one test for the six integers (0.67 -> 0.29 µs); the slow path names the bad one
        type(created) is int
        and type(seq) is int
        and type(lifetime) is int
        and type(priority_value) is int
        and type(kind) is int
        and type(hop_count) is int
        and 0 <= created <= MAX_U32
        and 0 <= seq <= MAX_SEQ
        and 1 <= lifetime <= MAX_LIFETIME_S
        and 0 <= priority_value <= 4
        and 0 <= kind <= 0xFF
        and 0 <= hop_count <= 0xFF
    ):
        _int_field(items, 4, "created", 0, MAX_U32)
        _int_field(items, 5, "seq", 0, MAX_SEQ)
        _int_field(items, 6, "lifetime", 1, MAX_LIFETIME_S)
        _int_field(items, 7, "priority", 0, 4)
        _int_field(items, 8, "kind", 0, 0xFF)
        _int_field(items, 9, "hop count", 0, 0xFF)
    priority = _PRIORITIES[priority_value]
    payload = items[10]
    if not isinstance(payload, bytes):  # at most MAX_PAYLOAD: unpackb's max_bin_len
        raise BundleDecodeError("payload must be bytes")
    trail = _decode_trail(items[11]) if len(items) == 12 else ()
    encoded = None
    if taken_by is not None:
        trail = _taken_trail(trail, taken_by)
        # not for a bundle to the node taking it: it is never sent on, and a command post (its
        # application has it) stores no copy at all; an inbox copy is encoded anew (the same bytes).
        # Else what encode_full makes of the bundle kept, packed from the fields as decoded (one
        # pack, where checking that ``data`` was in the encoder's form and splicing the new trail
        # into it cost three times as much): stored and sent on as it is, never encoded again
        if dest.node != taken_by:
            encoded = _packer().pack(
                [
                    WIRE_VERSION,
                    origin,
                    dest_value,
                    value,
                    created,
                    seq,
                    lifetime,
                    priority_value,
                    kind,
                    hop_count,
                    payload,
                    b"".join(trail),
                ]
            )
    bundle_id = _new_id(BundleId, (origin, created, seq))  # in C: BundleId() is a Python __new__
    key = ID_KEY.pack(origin, created, seq)  # as BundleId.key, without its call
    return _assemble(
        origin,
        dest,
        created,
        seq,
        lifetime,
        priority,
        kind,
        payload,
        hop_count,
        trail,
        bundle_id,
        key,
        encoded,
    )


# A full encoding's first bytes as encode_full writes them (every full bundle starts so): an array of
# 11 fields (no trail) or 12, version 1, the origin as a bin8 of 16 bytes, which follows
FULL_PREFIXES = frozenset(bytes((header, WIRE_VERSION, 0xC4, NODE_ID_LEN)) for header in (0x9B, 0x9C))


def _decode_trail(value: Any) -> tuple[bytes, ...]:
    if not isinstance(value, bytes):
        raise BundleDecodeError("trail must be bytes")
    if not value or len(value) % TRAIL_ID_LEN or len(value) > MAX_TRAIL * TRAIL_ID_LEN:
        raise BundleDecodeError(
            f"trail must be 1-{MAX_TRAIL} ids of {TRAIL_ID_LEN} bytes (an empty trail is left out), "
            f"got {len(value)} bytes"
        )
    return _TRAIL_SPLITS[len(value) // TRAIL_ID_LEN].unpack(value)


# per trail length, a struct that cuts it into its ids in C: 0.14 µs for three ids against 1.0 µs
# for a generator of slices (every full bundle received carries a trail)
_TRAIL_SPLITS = tuple(struct.Struct(f"{TRAIL_ID_LEN}s" * count) for count in range(MAX_TRAIL + 1))


# ---------------------------------------------------------------------------------------------
# Compact encoding


@dataclass(frozen=True)
class CompactContext:
    """What a LoRa link knows to expand short ids: the enrolled nodes, roles and groups.

    Built from the deployment roster; see :meth:`from_names`.
    """

    nodes: Mapping[bytes, bytes]  # short id -> node id
    names: Mapping[bytes, str]  # short code -> role or group name

    @classmethod
    def from_names(cls, node_ids: list[bytes], names: list[str]) -> CompactContext:
        nodes: dict[bytes, bytes] = {}
        for node_id in node_ids:
            short = node_id[:SHORT_ID_LEN]
            if nodes.setdefault(short, node_id) != node_id:
                raise ValueError(f"two enrolled nodes share the short id {short.hex()}")
        return cls(nodes, {short_code(name): name for name in names})


def encode_compact(bundle: Bundle, hop_count: int | None = None) -> bytes:
    """Compact header + payload. The lifetime is rounded down to whole minutes (at least one);
    ``hop_count`` in place of the bundle's, as in :func:`encode_full`."""
    if bundle.created > MAX_U32:
        raise BundleEncodeError("created does not fit the compact header")
    minutes = _compact_minutes(bundle.lifetime)
    hops = bundle.hop_count if hop_count is None else hop_count
    if hops > MAX_COMPACT_HOPS:  # not min(): the builtin parses its arguments on every call (3.11)
        hops = MAX_COMPACT_HOPS
    dest = bundle.destination
    head = struct.pack(
        ">B3s3sIHBH",
        (WIRE_VERSION << 6) | (int(bundle.priority) << 3) | (int(dest.kind) << 1),
        bundle.origin[:SHORT_ID_LEN],
        dest.short(),
        bundle.created,
        bundle.seq,
        bundle.kind,
        (hops << 12) | minutes,
    )
    return head + bundle.payload


def _compact_minutes(lifetime: int) -> int:
    """The whole minutes of ``lifetime`` the compact header carries (at least one), in conditionals."""
    minutes = lifetime // 60
    return 1 if minutes < 1 else MAX_COMPACT_LIFETIME_MIN if minutes > MAX_COMPACT_LIFETIME_MIN else minutes


def compact_lifetime(lifetime: int) -> int:
    """The lifetime a bundle has after a trip through the compact encoding."""
    return _compact_minutes(lifetime) * 60


def decode_compact(data: bytes, context: CompactContext, max_len: int = 255) -> Bundle:
    if len(data) > max_len:
        raise BundleDecodeError(f"compact bundle of {len(data)} bytes exceeds the link limit {max_len}")
    if len(data) < COMPACT_HEADER_LEN:
        raise BundleDecodeError(f"compact bundle needs {COMPACT_HEADER_LEN} header bytes, got {len(data)}")
    first, origin_short, dest_short, created, seq, kind, hops_life = struct.unpack(
        ">B3s3sIHBH", data[:COMPACT_HEADER_LEN]
    )
    version = first >> 6
    if version != WIRE_VERSION:
        raise BundleDecodeError(f"unsupported compact version {version}; this node speaks {WIRE_VERSION}")
    if first & 1:
        raise BundleDecodeError("reserved bit set in compact header")
    priority_value = (first >> 3) & 0b111
    if priority_value > _BULK_VALUE:
        raise BundleDecodeError(f"priority {priority_value} is not a priority class")
    dest_kind = _DEST_KINDS[(first >> 1) & 0b11]  # two bits: every value a kind
    origin = context.nodes.get(origin_short)
    if origin is None:
        raise BundleDecodeError(f"origin short id {origin_short.hex()} is not an enrolled node")
    if dest_kind is _NODE:
        node = context.nodes.get(dest_short)
        if node is None:
            raise BundleDecodeError(f"destination short id {dest_short.hex()} is not an enrolled node")
        dest = _node_destination(node)
    elif dest_kind is _ALL:
        if dest_short != bytes(SHORT_ID_LEN):
            raise BundleDecodeError("an ALL destination must have a zero short code")
        dest = Destination.everyone()
    else:
        name = context.names.get(dest_short)
        if name is None:
            raise BundleDecodeError(f"{dest_kind.name.lower()} code {dest_short.hex()} is not known here")
        dest = Destination(dest_kind, name=name)
    minutes = hops_life & 0x0FFF
    if minutes == 0:
        raise BundleDecodeError("compact lifetime must be at least one minute")
    return Bundle(
        origin,
        dest,
        created,
        seq,
        minutes * 60,
        _PRIORITIES[priority_value],  # checked above: a tuple index, not the enum's constructor
        kind,
        bytes(data[COMPACT_HEADER_LEN:]),
        hops_life >> 12,
    )
