"""Signed manifests for evidence clips: who recorded what, when, and the SHA-256 of the file.

A field unit signs each clip's manifest with its Ed25519 identity and puts its certificate in it, so
the clip can be checked later by anyone holding only the authority's public key (``mesh112 video
verify``), long after the command post that received it. The manifest is JSON (an operator reads it
beside the clip); the signature covers a domain tag and the canonical JSON of every other field.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from crypto.certificate import Certificate, RevocationList
from crypto.errors import CertificateError, CryptoError, DecodeError
from crypto.identity import NODE_ID_LEN, SIGNATURE_LEN, Identity, PublicIdentity

_TAG = b"mesh112/clip-manifest/v1\x00"
MAX_MANIFEST = 4096  # bytes of JSON; a manifest with its certificate is about 650
MAX_CAMERA = 0xFFFF


class EvidenceError(CryptoError):
    """A clip that does not match its manifest, or a manifest not signed by the node it names."""


_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "node_id": str,
    "camera": int,
    "start": (int, float),
    "end": (int, float),
    "frames": int,
    "codec": str,
    "sha256": str,
    "size": int,
    "certificate": str,
    "signature": str,
}


@dataclass(frozen=True, slots=True)
class ClipManifest:
    """What a unit states about one recorded clip; ``signature`` is over everything else."""

    node_id: str  # 32 hex digits
    camera: int
    start: float  # unix seconds, the first frame
    end: float  # unix seconds, after the last frame
    frames: int
    codec: str  # e.g. "vp8/webm"
    sha256: str  # hex, of the clip file's bytes
    size: int  # bytes of the clip file
    certificate: str  # base64 of the signer's certificate, for verification without a roster
    signature: str = ""  # base64 Ed25519

    def signed_bytes(self) -> bytes:
        fields = asdict(self)
        del fields["signature"]
        return _TAG + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, indent=1).encode()

    @classmethod
    def decode(cls, data: bytes) -> ClipManifest:
        if len(data) > MAX_MANIFEST:
            raise DecodeError(f"a clip manifest is at most {MAX_MANIFEST} bytes, got {len(data)}")
        try:
            fields: Any = json.loads(data)
            manifest = cls(**fields)
        except (ValueError, TypeError) as exc:
            raise DecodeError(f"not a clip manifest: {exc}") from None
        for name, kind in _FIELD_TYPES.items():
            value = getattr(manifest, name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise DecodeError(f"clip manifest field {name!r} has the wrong type")
        if not (math.isfinite(manifest.start) and math.isfinite(manifest.end)):
            raise DecodeError("clip manifest times must be finite numbers")
        if not 0 <= manifest.camera <= MAX_CAMERA or manifest.frames < 0 or manifest.size < 0:
            raise DecodeError(f"clip manifest camera (0-{MAX_CAMERA}), frames and size must not be negative")
        return manifest

    def signer(self) -> Certificate:
        """The certificate the manifest carries (checked against an authority by the caller)."""
        try:
            return Certificate.decode(base64.b64decode(self.certificate, validate=True))
        except ValueError as exc:
            raise DecodeError(f"the manifest's certificate is not base64: {exc}") from None


def sign_clip(
    identity: Identity,
    certificate: Certificate,
    clip: bytes,
    *,
    camera: int,
    start: float,
    end: float,
    frames: int,
    codec: str,
) -> ClipManifest:
    """The manifest of ``clip`` (the file's bytes), signed by this node."""
    if certificate.node_id != identity.node_id:
        raise CertificateError("the certificate is another node's; sign with this node's own")
    unsigned = ClipManifest(
        identity.node_id.hex(),
        camera,
        start,
        end,
        frames,
        codec,
        hashlib.sha256(clip).hexdigest(),
        len(clip),
        base64.b64encode(certificate.encode()).decode("ascii"),
    )
    signature = identity.sign(unsigned.signed_bytes())
    return replace(unsigned, signature=base64.b64encode(signature).decode("ascii"))


def verify_clip(manifest: ClipManifest, clip: bytes, signer: PublicIdentity) -> None:
    """Raise :class:`EvidenceError` unless ``clip`` is the one ``manifest`` names and ``signer``
    (the key the verifier trusts for the manifest's node id) signed the manifest."""
    if signer.node_id.hex() != manifest.node_id:
        raise EvidenceError(f"the manifest names node {manifest.node_id[:8]}, the key is another node's")
    try:
        signature = base64.b64decode(manifest.signature, validate=True)
    except ValueError:
        signature = b""
    if len(signature) != SIGNATURE_LEN:
        raise EvidenceError("the manifest's signature is missing or malformed")
    try:
        signer.verify(signature, manifest.signed_bytes())
    except CertificateError:
        raise EvidenceError(
            f"the manifest is not signed by node {manifest.node_id[:8]} (altered, or signed by another node)"
        ) from None
    if len(clip) != manifest.size or hashlib.sha256(clip).hexdigest() != manifest.sha256:
        raise EvidenceError(
            f"the clip ({len(clip)} bytes) does not match its manifest's SHA-256 and size: "
            "altered or truncated"
        )


def verify_offline(
    manifest: ClipManifest, clip: bytes, authority: PublicIdentity, revocations: RevocationList | None
) -> Certificate:
    """Check the manifest's certificate against the authority (valid when recording began), then the
    signature and the hash; returns the signer's certificate."""
    certificate = manifest.signer()
    if len(certificate.node_id) != NODE_ID_LEN or certificate.node_id.hex() != manifest.node_id:
        raise EvidenceError("the manifest's certificate is not the one of the node it names")
    try:
        certificate.verify(authority, int(manifest.start), revocations)
    except CertificateError as exc:
        raise EvidenceError(f"the signer's certificate does not hold: {exc}") from None
    verify_clip(manifest, clip, certificate.public)
    return certificate
