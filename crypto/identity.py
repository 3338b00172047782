"""Node identities: an Ed25519 key for signing and an X25519 key for key agreement.

The node id is derived from both public keys, so nobody can claim an id without holding the keys
that hash to it, and a certificate only has to name the keys.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from crypto.errors import CertificateError, DecodeError

NODE_ID_LEN = 16
KEY_LEN = 32
SIGNATURE_LEN = 64
PUBLIC_LEN = 2 * KEY_LEN
PRIVATE_LEN = 2 * KEY_LEN
SHORT_DISPLAY_LEN = 8
_NODE_ID_TAG = b"mesh112/node-id/v1"
_RAW = serialization.Encoding.Raw


def derive_node_id(signing_key: bytes, agreement_key: bytes) -> bytes:
    """SHA-256 over a domain tag and both public keys, truncated to 16 bytes."""
    return hashlib.sha256(_NODE_ID_TAG + signing_key + agreement_key).digest()[:NODE_ID_LEN]


def display_id(node_id: bytes, full: bool = False) -> str:
    """Lowercase base32 of the node id: 8 characters for people, 26 with ``full=True``."""
    text = base64.b32encode(node_id).decode().rstrip("=").lower()
    return text if full else text[:SHORT_DISPLAY_LEN]


@dataclass(frozen=True, slots=True)
class PublicIdentity:
    """What everyone may know about a node: its two public keys (raw 32 bytes each)."""

    signing_key: bytes
    agreement_key: bytes
    _verifier: ed25519.Ed25519PublicKey = field(init=False, repr=False, compare=False)
    _agreement: x25519.X25519PublicKey = field(init=False, repr=False, compare=False)
    _node_id: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.signing_key) != KEY_LEN or len(self.agreement_key) != KEY_LEN:
            raise DecodeError(f"public keys must be {KEY_LEN} bytes each")
        try:
            verifier = ed25519.Ed25519PublicKey.from_public_bytes(self.signing_key)
        except ValueError as exc:
            raise DecodeError(f"not an Ed25519 public key: {exc}") from exc
        object.__setattr__(self, "_verifier", verifier)
        object.__setattr__(self, "_agreement", x25519.X25519PublicKey.from_public_bytes(self.agreement_key))
        object.__setattr__(self, "_node_id", derive_node_id(self.signing_key, self.agreement_key))

    @property
    def node_id(self) -> bytes:
        return self._node_id

    @property
    def agreement(self) -> x25519.X25519PublicKey:
        return self._agreement

    def verify(self, signature: bytes, data: bytes) -> None:
        """Raise :class:`CertificateError` unless ``signature`` is this node's over ``data``."""
        try:
            self._verifier.verify(signature, data)
        except InvalidSignature:
            raise CertificateError(f"bad signature from node {display_id(self.node_id)}") from None

    def encode(self) -> bytes:
        return self.signing_key + self.agreement_key

    @classmethod
    def decode(cls, data: bytes) -> PublicIdentity:
        if len(data) != PUBLIC_LEN:
            raise DecodeError(f"a public identity is {PUBLIC_LEN} bytes, got {len(data)}")
        return cls(data[:KEY_LEN], data[KEY_LEN:])


class Identity:
    """A node's private keys. Never leaves the node's key directory (see ``crypto.keystore``)."""

    __slots__ = ("_agreement", "_public", "_signer")

    def __init__(self, signer: ed25519.Ed25519PrivateKey, agreement: x25519.X25519PrivateKey) -> None:
        self._signer = signer
        self._agreement = agreement
        self._public = PublicIdentity(
            signer.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw),
            agreement.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw),
        )

    @classmethod
    def generate(cls) -> Identity:
        return cls(ed25519.Ed25519PrivateKey.generate(), x25519.X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, data: bytes) -> Identity:
        """The 64-byte form written by :meth:`private_bytes`: Ed25519 seed, then X25519 scalar."""
        if len(data) != PRIVATE_LEN:
            raise DecodeError(f"private key material is {PRIVATE_LEN} bytes, got {len(data)}")
        return cls(
            ed25519.Ed25519PrivateKey.from_private_bytes(data[:KEY_LEN]),
            x25519.X25519PrivateKey.from_private_bytes(data[KEY_LEN:]),
        )

    def private_bytes(self) -> bytes:
        fmt, none = serialization.PrivateFormat.Raw, serialization.NoEncryption()
        return self._signer.private_bytes(_RAW, fmt, none) + self._agreement.private_bytes(_RAW, fmt, none)

    @property
    def public(self) -> PublicIdentity:
        return self._public

    @property
    def node_id(self) -> bytes:
        return self._public.node_id

    @property
    def agreement_private(self) -> x25519.X25519PrivateKey:
        """For HPKE decryption (``crypto.seal``), which takes the key object itself."""
        return self._agreement

    def sign(self, data: bytes) -> bytes:
        return self._signer.sign(data)

    def exchange(self, peer: PublicIdentity) -> bytes:
        """Static-static X25519 with ``peer``; refuses the all-zero result of a low-order key."""
        try:
            return self._agreement.exchange(peer.agreement)
        except ValueError as exc:
            raise CertificateError(f"unusable agreement key for node {display_id(peer.node_id)}") from exc

    def __repr__(self) -> str:
        return f"Identity({display_id(self.node_id)})"
