"""The payload of an evidence clip bundle (kind ``CLIP``): manifest length, signed manifest, clip."""

from __future__ import annotations

import struct

from crypto.errors import CryptoError
from crypto.evidence import MAX_MANIFEST, ClipManifest
from relay.bundle import MAX_PAYLOAD

_HEADER = struct.Struct(">H")  # manifest length
MAX_CLIP_BYTES = MAX_PAYLOAD - _HEADER.size - MAX_MANIFEST  # the largest clip one bundle carries


class ClipDecodeError(ValueError):
    """A clip bundle's payload that is not a manifest followed by the clip."""


def encode_clip_bundle(manifest: ClipManifest, clip: bytes) -> bytes:
    encoded = manifest.encode()
    return _HEADER.pack(len(encoded)) + encoded + clip


def decode_clip_bundle(payload: bytes) -> tuple[ClipManifest, bytes]:
    if len(payload) < _HEADER.size:
        raise ClipDecodeError("a clip bundle is shorter than its header")
    (length,) = _HEADER.unpack_from(payload)
    if length > MAX_MANIFEST or _HEADER.size + length > len(payload):
        raise ClipDecodeError(f"a clip bundle's manifest length {length} is out of bounds")
    try:
        manifest = ClipManifest.decode(payload[_HEADER.size : _HEADER.size + length])
    except CryptoError as exc:
        raise ClipDecodeError(str(exc)) from None
    return manifest, payload[_HEADER.size + length :]
