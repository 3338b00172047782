"""The link frame codec: what relays say to their neighbours, one frame at a time.

Every frame starts with one byte: the frame type in the high nibble and a small argument in the
low nibble (only DATA uses it, for the spray-and-wait copy count; it must be 0 elsewhere). All
integers are big endian. Layouts after that byte::

    DATA_FULL        full bundle encoding (msgpack, ``relay.bundle.encode_full``)
    DATA_COMPACT     compact bundle encoding (16-byte header + payload, LoRa)
    FRAGMENT         transfer(1) index(1) count(1) chunk      -- 4 bytes of header in all
    FRAGMENT_STATUS  transfer(1) count(1) bitmap(ceil(count/8)), bit i set = fragment i received
    ACK              n(1) n x bundle id key(22)              -- custody: durably accepted
    SUMMARY          complete(1) n(2) n x hash(4)            -- anti-entropy: ids held
    BEACON           n(1) n x (node id(16) cost(1)) m(1) m x (name code(3) cost(1))
    CERT_REQUEST     node id(16) or short id(3)              -- "send me this origin's certificate"
    CERT             index(1) count(1) chunk                 -- a slice of one encoded certificate

CERT_REQUEST and CERT are how a node gets the certificate of an origin it has never met from the
neighbour that hands it that origin's bundles (:mod:`relay.core.certs`); a certificate goes in
slices of at most :data:`CERT_CHUNK` bytes, so each slice fits one LoRa frame on any link.

A FRAGMENT carries a slice of a whole DATA frame (type byte included), so reassembly ends in a
frame that decodes like any other. Decoding is strict: any violation raises
:class:`FrameDecodeError` naming the field, and sizes are bounded before anything is allocated.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum
from itertools import starmap

import msgpack

from relay.bundle import (
    COMPACT_HEADER_LEN,
    FULL_PREFIXES,
    MAX_FULL_BUNDLE,
    NODE_ID_LEN,
    SHORT_ID_LEN,
    TRAIL_ID_LEN,
    Bundle,
    BundleDecodeError,
    BundleId,
    CompactContext,
    decode_compact,
    decode_full,
    encode_compact,
    encode_full,
)

ID_KEY_LEN = NODE_ID_LEN + 6
HASH_LEN = 4
FRAGMENT_HEADER_LEN = 4
MAX_FRAGMENTS = 255
MAX_COPIES = 15
MAX_COST = 255
MAX_FRAME = MAX_FULL_BUNDLE + 8
MAX_SUMMARY_HASHES = 16384
CERT_CHUNK = 192  # with the 3 header bytes, inside one LoRa frame after its hop tag (207)
MAX_CERT_CHUNKS = 8  # a certificate is at most 753 bytes (crypto.certificate.MAX_CERTIFICATE): 4 slices
_BEACON_ENTRY = {w: struct.Struct(f">{w}sB") for w in (NODE_ID_LEN, SHORT_ID_LEN)}  # a beacon's entries
_ACK_ID = struct.Struct(f">{NODE_ID_LEN}sIH")  # an ACK's id key (BundleId.key), read in one unpack per id
# (origin, created, seq) -> BundleId in C, as BundleId(*fields) does through a Python __new__ (0.37 ->
# 0.18 µs per id; one per bundle at each hop)
_new_id = functools.partial(tuple.__new__, BundleId)


class FrameDecodeError(ValueError):
    """Bytes from a neighbour that are not a valid frame; the message names what is wrong."""


class FrameType(IntEnum):
    DATA_FULL = 1
    DATA_COMPACT = 2
    FRAGMENT = 3
    FRAGMENT_STATUS = 4
    ACK = 5
    SUMMARY = 6
    BEACON = 7
    CERT_REQUEST = 8
    CERT = 9


_FRAME_TYPES = {int(kind): kind for kind in FrameType}  # every frame's type, looked up per frame
_DATA_FULL, _DATA_COMPACT = FrameType.DATA_FULL, FrameType.DATA_COMPACT
# data_origin's types as plain ints: it reads a frame's first byte for every frame received
_FRAGMENT_VALUE = int(FrameType.FRAGMENT)
_DATA_FULL_VALUE, _DATA_COMPACT_VALUE = int(_DATA_FULL), int(_DATA_COMPACT)
# a DATA frame's first byte by its copies, made once: built per frame, it cost an enum read, int()
# and bytes() for every bundle sent
_FULL_HEADS = tuple(bytes(((_DATA_FULL_VALUE << 4) | copies,)) for copies in range(MAX_COPIES + 1))
_COMPACT_HEADS = tuple(bytes(((_DATA_COMPACT_VALUE << 4) | copies,)) for copies in range(MAX_COPIES + 1))
# the other types as module aliases: reading an enum's member costs ten times a global's (Python 3.11)
_FRAGMENT, _FRAGMENT_STATUS, _ACK = FrameType.FRAGMENT, FrameType.FRAGMENT_STATUS, FrameType.ACK
_SUMMARY, _CERT_REQUEST, _CERT = FrameType.SUMMARY, FrameType.CERT_REQUEST, FrameType.CERT


def id_hash(bundle_id: BundleId) -> bytes:
    """The 4-byte digest of a bundle id used in anti-entropy summaries."""
    return hashlib.blake2b(bundle_id.key(), digest_size=HASH_LEN).digest()


@dataclass(slots=True)  # not frozen: one per bundle sent or received, and a frozen init costs ~4x more
class DataFrame:
    bundle: Bundle
    copies: int = 1  # spray-and-wait copies handed over with this bundle (1 = wait for direct delivery)
    compact: bool = False


@dataclass(frozen=True, slots=True)
class FragmentFrame:
    transfer: int
    index: int
    count: int
    chunk: bytes


@dataclass(frozen=True, slots=True)
class FragmentStatusFrame:
    transfer: int
    count: int
    received: frozenset[int]


@dataclass(frozen=True, slots=True)
class AckFrame:
    ids: tuple[BundleId, ...]


@dataclass(frozen=True, slots=True)
class SummaryFrame:
    hashes: frozenset[bytes]
    complete: bool  # True when the sender listed everything it holds


@dataclass(frozen=True, slots=True)
class BeaconFrame:
    nodes: tuple[tuple[bytes, int], ...]  # (node id, cost) reachable through the sender
    names: tuple[tuple[bytes, int], ...]  # (role/group short code, cost); cost 0 = held by the sender


@dataclass(frozen=True, slots=True)
class CertRequestFrame:
    node: bytes  # the node id (16 bytes), or the short id (3) a compact header names


@dataclass(frozen=True, slots=True)
class CertFrame:
    index: int
    count: int
    chunk: bytes


Frame = (
    DataFrame
    | FragmentFrame
    | FragmentStatusFrame
    | AckFrame
    | SummaryFrame
    | BeaconFrame
    | CertRequestFrame
    | CertFrame
)


# each one-byte value, made once (a dict, so a value out of range still raises): a beacon's entries,
# counts and costs took a bytes() call each, 89,000 a reference run
_BYTES = {value: bytes((value,)) for value in range(0x100)}


def _head(kind: FrameType) -> bytes:
    return bytes((int(kind) << 4,))


# the first byte of each frame but DATA (whose low nibble is its copies), made once
_FRAGMENT_HEAD, _FRAGMENT_STATUS_HEAD, _ACK_HEAD = _head(_FRAGMENT), _head(_FRAGMENT_STATUS), _head(_ACK)
_SUMMARY_HEAD, _CERT_REQUEST_HEAD, _CERT_HEAD = _head(_SUMMARY), _head(_CERT_REQUEST), _head(_CERT)
_BEACON_HEAD = _head(FrameType.BEACON)


def encode_frame(frame: Frame) -> bytes:
    if isinstance(frame, DataFrame):
        if not 1 <= frame.copies <= MAX_COPIES:
            raise ValueError(f"copies must be 1-{MAX_COPIES}")
        if frame.compact:
            return _COMPACT_HEADS[frame.copies] + encode_compact(frame.bundle)
        return _FULL_HEADS[frame.copies] + encode_full(frame.bundle)
    if isinstance(frame, FragmentFrame):
        if not (0 <= frame.transfer <= 0xFF and 1 <= frame.count <= MAX_FRAGMENTS):
            raise ValueError("fragment transfer or count out of range")
        if not 0 <= frame.index < frame.count:
            raise ValueError("fragment index out of range")
        return _FRAGMENT_HEAD + bytes((frame.transfer, frame.index, frame.count)) + frame.chunk
    if isinstance(frame, FragmentStatusFrame):
        bitmap = bytearray((frame.count + 7) // 8)
        for index in frame.received:
            if not 0 <= index < frame.count:
                raise ValueError("received index out of range")
            bitmap[index // 8] |= 0x80 >> (index % 8)
        return _FRAGMENT_STATUS_HEAD + bytes((frame.transfer, frame.count)) + bytes(bitmap)
    if isinstance(frame, AckFrame):
        if not 1 <= len(frame.ids) <= 0xFF:
            raise ValueError("an ACK carries 1-255 ids")
        # an id is the tuple (origin, created, seq) its key packs: one pack each, in C (key() was a
        # Python call per id, one per bundle acknowledged)
        return _ACK_HEAD + _BYTES[len(frame.ids)] + b"".join(starmap(_ACK_ID.pack, frame.ids))
    if isinstance(frame, SummaryFrame):
        if len(frame.hashes) > MAX_SUMMARY_HASHES:
            raise ValueError(f"a summary carries at most {MAX_SUMMARY_HASHES} hashes")
        return (
            _SUMMARY_HEAD
            + struct.pack(">BH", int(frame.complete), len(frame.hashes))
            + b"".join(sorted(frame.hashes))
        )
    if isinstance(frame, CertRequestFrame):
        if len(frame.node) not in (SHORT_ID_LEN, NODE_ID_LEN):
            raise ValueError(f"a certificate request names a {SHORT_ID_LEN}- or {NODE_ID_LEN}-byte id")
        return _CERT_REQUEST_HEAD + frame.node
    if isinstance(frame, CertFrame):
        if not (1 <= frame.count <= MAX_CERT_CHUNKS and 0 <= frame.index < frame.count):
            raise ValueError("certificate slice index or count out of range")
        if not 1 <= len(frame.chunk) <= CERT_CHUNK:
            raise ValueError(f"a certificate slice holds 1-{CERT_CHUNK} bytes")
        return _CERT_HEAD + bytes((frame.index, frame.count)) + frame.chunk
    if len(frame.nodes) > 0xFF or len(frame.names) > 0xFF:
        raise ValueError("a beacon carries at most 255 nodes and 255 names")
    parts = [_BEACON_HEAD, _BYTES[len(frame.nodes)]]
    # a conditional, not min(): the builtin parses its arguments on every call (Python 3.11)
    parts += [node + _BYTES[MAX_COST if cost > MAX_COST else cost] for node, cost in frame.nodes]
    parts.append(_BYTES[len(frame.names)])
    parts += [code + _BYTES[MAX_COST if cost > MAX_COST else cost] for code, cost in frame.names]
    return b"".join(parts)


def forwarded_data_frame(source: Bundle | bytes, copies: int, compact: bool) -> bytes:
    """The DATA frame that hands a held bundle on with its hop count one higher (at most 255), byte
    for byte what ``encode_frame(DataFrame(bundle.forwarded(), copies, compact))`` makes, without
    the hop copy made only to be encoded. ``source`` is the bundle, or its full encoding as the
    store keeps it (or as a received bundle carries it, ``Bundle.encoded``); then a full frame
    raises the hop count in those bytes, with no decode, hop copy or encode (a 100-byte bundle
    read back: 4.4 -> 0.8 µs)."""
    if not 1 <= copies <= MAX_COPIES:
        raise ValueError(f"copies must be 1-{MAX_COPIES}")
    if isinstance(source, Bundle):
        # A received bundle's kept encoding (as encode_full writes it): its hop count, a fixint
        # below 127, comes before the payload (a bin8 or bin16) and the trail, found from the end.
        encoded, hop, payload = source.encoded, source.hop_count, len(source.payload)
        if encoded is not None and not compact and hop < 0x7F and payload < 0x10000:
            trail = 2 + TRAIL_ID_LEN * len(source.trail) if source.trail else 0
            pos = len(encoded) - trail - payload - (3 if payload < 0x100 else 4)
            return b"".join((_FULL_HEADS[copies], encoded[:pos], _HOPS[hop + 1], encoded[pos + 1 :]))
    elif isinstance(source, bytes):
        if not compact:
            frame = _hop_raised(source, _FULL_HEADS[copies])
            if frame is not None:
                return frame
        source = decode_full(source)
    hop_count = source.hop_count + 1 if source.hop_count < 0xFF else 0xFF
    if compact:
        return _COMPACT_HEADS[copies] + encode_compact(source, hop_count)
    return _FULL_HEADS[copies] + encode_full(source, hop_count)


# msgpack's width of an unsigned integer by its first byte, as the bundle's encoder writes them:
# a positive fixint, uint8, uint16 or uint32; 0 for any other byte
_UINT_WIDTHS = bytes([1] * 0x80 + [0] * 0x4C + [2, 3, 5] + [0] * 0x31)
_BIN8, _STR8, _NIL, _UINT32 = 0xC4, 0xD9, 0xC0, 0xCE
_HOP_AFTER_127 = b"\xcc\x80"  # the hop count 128 is a uint8: one byte wider than 127


def _field_at(encoded: bytes, start: int, skip: int) -> int | None:
    """Where a full bundle encoding's integer field ``skip`` places after the destination starts,
    found from ``start`` (the encoding's first byte) by walking the header's fields by their msgpack
    widths (created, seq, lifetime, priority, kind, hop count follow the destination); None for any
    layout the encoder does not write (the caller decodes instead)."""
    if len(encoded) < start + 30 or encoded[start + 2] != _BIN8 or encoded[start + 3] != NODE_ID_LEN:
        return None  # [header, version, origin(bin8 16), dest kind] before the destination at 21
    tag = encoded[start + 21]
    if tag in (_BIN8, _STR8):
        pos = start + 23 + encoded[start + 22]
    elif 0xA0 <= tag <= 0xBF:  # fixstr
        pos = start + 22 + (tag & 0x1F)
    elif tag == _NIL:
        pos = start + 22
    else:
        return None
    for _ in range(skip):
        width = _UINT_WIDTHS[encoded[pos]] if pos < len(encoded) else 0
        if not width:
            return None
        pos += width
    return pos if pos < len(encoded) else None


_PRIORITY_FIELD, _HOP_FIELD = 3, 5  # after created, seq, lifetime; and after priority and kind too


_CERT_VALUES = (int(_CERT_REQUEST), int(_CERT))


def goes_ahead(data: bytes) -> bool:
    """Whether a relay takes this frame before the frames waiting (relay/node.py, IP sessions): a
    FLASH DATA frame, and the certificate frames (CERT, CERT_REQUEST) a FLASH frame of an origin met
    for the first time needs, which it must not overtake."""
    return data_priority(data) == 0 or (len(data) > 1 and data[0] >> 4 in _CERT_VALUES)


def data_priority(data: bytes) -> int | None:
    """The priority class (its value) of the bundle a DATA frame carries, read without decoding it
    (see :func:`goes_ahead`). None for any other frame or a layout not recognised (such a frame
    simply keeps its place); a frame that reads as DATA here may still fail to decode."""
    kind = data[0] >> 4 if data else 0
    if kind == _DATA_COMPACT_VALUE:
        if len(data) < 1 + COMPACT_HEADER_LEN or not data[0] & 0x0F:
            return None  # no whole header, or no copies: not a frame a relay sends
        return (data[1] >> 3) & 0b111  # the compact header's first byte: version | priority | ...
    if kind != _DATA_FULL_VALUE or not data[0] & 0x0F:
        return None
    if len(data) > 56 and data[3] == data[22] == _BIN8 and data[40] == _UINT32:  # to a node, as most go
        pos = 45 + _UINT_WIDTHS[data[45]]  # past seq and lifetime: inline, a third of the walk's cost
        pos += _UINT_WIDTHS[data[pos]]  # (at most 55: inside the frame)
    else:
        found = _field_at(data, 1, _PRIORITY_FIELD)
        if found is None:
            return None
        pos = found
    return data[pos] if data[pos] < 0x80 else None


def _hop_raised(encoded: bytes, head: bytes) -> bytes | None:
    """``head`` and ``encoded`` (a full bundle encoding) with the hop count one higher; None for any
    layout the encoder does not write (the caller decodes instead)."""
    pos = _field_at(encoded, 0, _HOP_FIELD)
    if pos is None or pos + 1 >= len(encoded):
        return None
    hop = encoded[pos]
    if hop < 0x7F:
        return b"".join((head, encoded[:pos], _HOPS[hop + 1], encoded[pos + 1 :]))
    if hop == 0x7F:
        return b"".join((head, encoded[:pos], _HOP_AFTER_127, encoded[pos + 1 :]))
    if hop == 0xCC and encoded[pos + 1] >= 0x80:
        value = encoded[pos + 1]
        raised = _HOPS_UINT8[value + 1 if value < 0xFF else 0xFF]
        return b"".join((head, encoded[:pos], raised, encoded[pos + 2 :]))
    return None


_HOPS = tuple(bytes((hop,)) for hop in range(0x80))  # a hop count below 128: one byte, itself
_HOPS_UINT8 = tuple(bytes((0xCC, hop)) for hop in range(0x100))  # 128-255 as a uint8


def decode_frame(
    data: bytes,
    context: CompactContext | None = None,
    max_len: int = MAX_FRAME,
    taken_by: bytes | None = None,
) -> Frame:
    """Decode one frame. ``context`` expands compact short ids; ``max_len`` is the link's limit;
    ``taken_by``: a DATA frame's bundle comes as this node keeps it (:meth:`Bundle.taken_by`)."""
    if len(data) > max_len:
        raise FrameDecodeError(f"frame of {len(data)} bytes exceeds the {max_len}-byte limit")
    if not data:
        raise FrameDecodeError("empty frame")
    if type(data) is not bytes:  # bytes(data) of bytes is data itself, but a call to know it
        data = bytes(data)
    type_value, arg = data[0] >> 4, data[0] & 0x0F
    kind = _FRAME_TYPES.get(type_value)  # not FrameType(...) and FrameType.X: each an enum call
    if kind is None:
        raise FrameDecodeError(f"unknown frame type {type_value}")
    body = data[1:]
    if kind is _DATA_FULL or kind is _DATA_COMPACT:
        if arg == 0:
            raise FrameDecodeError("a DATA frame must hand over at least one copy")
        try:
            if kind is _DATA_FULL:
                return DataFrame(decode_full(body, taken_by), arg, False)  # positional: keywords cost a dict
            if context is None:
                raise FrameDecodeError("compact DATA frame on a link without a compact context")
            bundle = decode_compact(body, context, max_len=max_len)
            return DataFrame(bundle if taken_by is None else bundle.taken_by(taken_by), arg, compact=True)
        except BundleDecodeError as exc:
            raise FrameDecodeError(f"bad bundle in DATA frame: {exc}") from None
    if arg != 0:
        raise FrameDecodeError(f"{kind.name} frame has a non-zero argument nibble")
    if kind is _FRAGMENT:
        return _decode_fragment(body)
    if kind is _FRAGMENT_STATUS:
        return _decode_fragment_status(body)
    if kind is _ACK:
        return _decode_ack(body)
    if kind is _SUMMARY:
        return _decode_summary(body)
    if kind is _CERT_REQUEST:
        if len(body) not in (SHORT_ID_LEN, NODE_ID_LEN):
            raise FrameDecodeError(f"CERT_REQUEST must name a {SHORT_ID_LEN}- or {NODE_ID_LEN}-byte id")
        return CertRequestFrame(body)
    if kind is _CERT:
        return _decode_cert(body)
    return _decode_beacon(body)


def data_origin(data: bytes) -> bytes | None:
    """The origin a DATA frame names, read without decoding the bundle: the short id of a compact
    one, the node id of a full one; also the short id in the first FRAGMENT of a compact DATA frame
    (later slices do not carry it). None for any other frame, or bytes too damaged to say."""
    if not data:
        return None
    kind = data[0] >> 4
    if kind == _FRAGMENT_VALUE and len(data) > 1 + 3 + 5 and data[2] == 0:
        data = data[4:]  # the whole frame's first bytes
        kind = data[0] >> 4
        if kind != _DATA_COMPACT_VALUE:
            return None
    if kind == _DATA_COMPACT_VALUE:
        return bytes(data[2 : 2 + SHORT_ID_LEN]) if len(data) >= 2 + SHORT_ID_LEN else None
    if kind != _DATA_FULL_VALUE:
        return None
    if type(data) is not bytes:  # a memoryview's slices are not hashable: the bytes read below
        data = bytes(data[: 1 + 40])
    if data[1:5] in FULL_PREFIXES and len(data) >= 5 + NODE_ID_LEN:
        return data[5 : 5 + NODE_ID_LEN]  # as every full bundle starts; no Unpacker per frame
    unpacker = msgpack.Unpacker(max_bin_len=NODE_ID_LEN, max_str_len=0, max_array_len=0, max_map_len=0)
    unpacker.feed(data[1 : 1 + 40])  # the array header, the version and the origin: about 22 bytes
    try:
        if unpacker.read_array_header() < 2:
            return None
        unpacker.skip()
        origin = unpacker.unpack()
    except (ValueError, TypeError, msgpack.OutOfData, msgpack.UnpackException):
        return None
    return origin if isinstance(origin, bytes) and len(origin) == NODE_ID_LEN else None


def _decode_cert(body: bytes) -> CertFrame:
    if len(body) < 3:
        raise FrameDecodeError("CERT frame too short")
    index, count, chunk = body[0], body[1], body[2:]
    if not 1 <= count <= MAX_CERT_CHUNKS:
        raise FrameDecodeError(f"CERT count {count} is not 1-{MAX_CERT_CHUNKS}")
    if index >= count:
        raise FrameDecodeError(f"CERT index {index} is not below count {count}")
    if len(chunk) > CERT_CHUNK:
        raise FrameDecodeError(f"CERT slice of {len(chunk)} bytes exceeds {CERT_CHUNK}")
    return CertFrame(index, count, chunk)


def _decode_fragment(body: bytes) -> FragmentFrame:
    if len(body) < FRAGMENT_HEADER_LEN:  # 3 header bytes and at least one byte of chunk
        raise FrameDecodeError("FRAGMENT frame too short")
    transfer, index, count = body[0], body[1], body[2]
    if count == 0:
        raise FrameDecodeError("FRAGMENT count must be at least 1")
    if index >= count:
        raise FrameDecodeError(f"FRAGMENT index {index} is not below count {count}")
    return FragmentFrame(transfer, index, count, body[3:])


def _decode_fragment_status(body: bytes) -> FragmentStatusFrame:
    if len(body) < 2:
        raise FrameDecodeError("FRAGMENT_STATUS frame too short")
    transfer, count = body[0], body[1]
    if count == 0:
        raise FrameDecodeError("FRAGMENT_STATUS count must be at least 1")
    bitmap = body[2:]
    if len(bitmap) != (count + 7) // 8:
        raise FrameDecodeError(f"FRAGMENT_STATUS bitmap must be {(count + 7) // 8} bytes for {count}")
    received = frozenset(i for i in range(count) if bitmap[i // 8] & (0x80 >> (i % 8)))
    spare = count % 8
    if spare and bitmap[-1] & (0xFF >> spare):
        raise FrameDecodeError("FRAGMENT_STATUS has bits set beyond the fragment count")
    return FragmentStatusFrame(transfer, count, received)


def _decode_ack(body: bytes) -> AckFrame:
    if not body or body[0] == 0:
        raise FrameDecodeError("ACK frame must carry at least one id")
    count = body[0]
    if len(body) != 1 + count * ID_KEY_LEN:
        raise FrameDecodeError(f"ACK of {count} ids must be {1 + count * ID_KEY_LEN} bytes after the type")
    return AckFrame(tuple(map(_new_id, _ACK_ID.iter_unpack(body[1:]))))


def _decode_summary(body: bytes) -> SummaryFrame:
    if len(body) < 3:
        raise FrameDecodeError("SUMMARY frame too short")
    complete, count = struct.unpack(">BH", body[:3])
    if complete > 1:
        raise FrameDecodeError("SUMMARY complete flag must be 0 or 1")
    if count > MAX_SUMMARY_HASHES:
        raise FrameDecodeError(f"SUMMARY lists {count} hashes, more than {MAX_SUMMARY_HASHES}")
    if len(body) != 3 + count * HASH_LEN:
        raise FrameDecodeError(f"SUMMARY of {count} hashes has the wrong length")
    hashes = frozenset(body[3 + i * HASH_LEN : 3 + (i + 1) * HASH_LEN] for i in range(count))
    return SummaryFrame(hashes, bool(complete))


def _decode_beacon(body: bytes) -> BeaconFrame:
    if not body:
        raise FrameDecodeError("BEACON frame too short")
    pos = 0

    def entries(width: int) -> tuple[tuple[bytes, int], ...]:
        nonlocal pos
        if pos >= len(body):
            raise FrameDecodeError("BEACON frame truncated before a count")
        count = body[pos]
        pos += 1
        end = pos + count * (width + 1)
        if end > len(body):
            raise FrameDecodeError("BEACON frame truncated inside its entries")
        out = tuple(_BEACON_ENTRY[width].iter_unpack(body[pos:end]))  # (id, cost) pairs, in C
        pos = end
        return out

    nodes = entries(NODE_ID_LEN)
    names = entries(SHORT_ID_LEN)
    if pos != len(body):
        raise FrameDecodeError("BEACON frame has trailing bytes")
    return BeaconFrame(nodes, names)
