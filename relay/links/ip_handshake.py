"""Sans-I/O enrolment handshake for the IP link: both ends prove they hold an enrolled identity.

Three messages, initiator (the dialler) first::

    HELLO_I  I -> R   challenge_I(32) | ephemeral_I(32) | certificate_I
    HELLO_R  R -> I   challenge_R(32) | ephemeral_R(32) | certificate_R | signature_R(64)
    AUTH_I   I -> R   signature_I(64)

Each side checks the peer certificate against the deployment authority, the revocation list and
its expiry, then checks the peer's Ed25519 signature over the transcript (both challenges, both
ephemeral keys, both node ids, both certificates' hashes, a domain tag and the signer's role). A
stranger, a revoked node or an expired certificate therefore cannot complete it, and a recorded
handshake cannot be replayed because the other side's challenge is fresh.

The session keys come from an X25519 exchange of the two *ephemeral* keys, bound to the identities
by those signatures (SIGMA, as in TLS 1.3): this needs no long-term agreement key and gives forward
secrecy, so a stolen node key does not open recorded traffic. HKDF-SHA256 over the shared secret,
salted with both challenges, yields one key per direction for :class:`relay.links.ip_records.SessionCipher`.

Decoding is strict and size-limited; every refusal raises :class:`HandshakeError` saying why.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crypto.certificate import Certificate, RevocationList
from crypto.errors import CryptoError
from crypto.identity import Identity, PublicIdentity
from relay.links.base import LinkError
from relay.links.ip_records import SessionCipher

MAGIC = b"M1IP"
VERSION = 3  # 2: DATA records carry a slice of the frame stream; ACK records. 3: PINGs announce
# their sender's keepalive interval (a phone's slower pace is followed)
DOMAIN_TAG = b"mesh112/ip-link/handshake/v1"
CHALLENGE_LEN = 32
EPHEMERAL_LEN = 32
SIGNATURE_LEN = 64
MAX_CERTIFICATE_LEN = 4096
HELLO_I, HELLO_R, AUTH_I = 1, 2, 3
_PREFIX = struct.Struct(">4sBB")  # magic, version, message type
_CERT_LEN = struct.Struct(">H")
MAX_HANDSHAKE_MESSAGE = _PREFIX.size + CHALLENGE_LEN + EPHEMERAL_LEN + 2 + MAX_CERTIFICATE_LEN + SIGNATURE_LEN


class HandshakeError(LinkError):
    """The peer did not prove an enrolled, valid identity; the message says which check failed."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """What this node shows its peers: its identity and the certificate the authority issued for it."""

    identity: Identity
    certificate: Certificate

    def __post_init__(self) -> None:
        if self.identity.node_id != self.certificate.node_id:
            raise LinkError("the node certificate was issued for another identity; enrol this node again")


@dataclass(frozen=True, slots=True)
class Trust:
    """What this node checks its peers against."""

    authority_public: PublicIdentity
    revocations: RevocationList | None = None


@dataclass(frozen=True, slots=True)
class Established:
    """The outcome of a completed handshake: who the peer is, and the keys for what follows."""

    peer_node_id: bytes
    peer_certificate: Certificate
    cipher: SessionCipher


@dataclass(frozen=True, slots=True)
class _Hello:
    challenge: bytes
    ephemeral: bytes
    certificate: bytes
    signature: bytes | None


def _encode_hello(kind: int, hello: _Hello) -> bytes:
    parts = [
        _PREFIX.pack(MAGIC, VERSION, kind),
        hello.challenge,
        hello.ephemeral,
        _CERT_LEN.pack(len(hello.certificate)),
        hello.certificate,
    ]
    if hello.signature is not None:
        parts.append(hello.signature)
    return b"".join(parts)


def _check_prefix(message: bytes, expected_kind: int) -> None:
    if len(message) > MAX_HANDSHAKE_MESSAGE:
        raise HandshakeError(f"handshake message of {len(message)} bytes exceeds {MAX_HANDSHAKE_MESSAGE}")
    if len(message) < _PREFIX.size:
        raise HandshakeError("handshake message truncated before its header")
    magic, version, kind = _PREFIX.unpack_from(message)
    if magic != MAGIC:
        raise HandshakeError("peer is not a Mesh112 IP link (bad magic)")
    if version != VERSION:
        raise HandshakeError(
            f"peer speaks IP link version {version}, this node speaks {VERSION}: "
            "upgrade the older node (the record format changed)"
        )
    if kind != expected_kind:
        raise HandshakeError(f"expected handshake message type {expected_kind}, got {kind}")


def _decode_hello(message: bytes, kind: int) -> _Hello:
    _check_prefix(message, kind)
    offset = _PREFIX.size
    fixed = CHALLENGE_LEN + EPHEMERAL_LEN + _CERT_LEN.size
    if len(message) < offset + fixed:
        raise HandshakeError("hello truncated before the certificate")
    challenge = message[offset : offset + CHALLENGE_LEN]
    offset += CHALLENGE_LEN
    ephemeral = message[offset : offset + EPHEMERAL_LEN]
    offset += EPHEMERAL_LEN
    (cert_len,) = _CERT_LEN.unpack_from(message, offset)
    offset += _CERT_LEN.size
    if cert_len == 0 or cert_len > MAX_CERTIFICATE_LEN:
        raise HandshakeError(f"certificate length {cert_len} outside 1..{MAX_CERTIFICATE_LEN}")
    certificate = message[offset : offset + cert_len]
    offset += cert_len
    signature_len = SIGNATURE_LEN if kind == HELLO_R else 0
    if len(message) != offset + signature_len:
        raise HandshakeError(f"hello is {len(message)} bytes, expected {offset + signature_len}")
    signature = message[offset:] if kind == HELLO_R else None
    return _Hello(challenge, ephemeral, certificate, signature)


def _decode_auth(message: bytes) -> bytes:
    _check_prefix(message, AUTH_I)
    if len(message) != _PREFIX.size + SIGNATURE_LEN:
        raise HandshakeError(f"auth is {len(message)} bytes, expected {_PREFIX.size + SIGNATURE_LEN}")
    return message[_PREFIX.size :]


def _verified_certificate(raw: bytes, trust: Trust, own_node_id: bytes, now: float) -> Certificate:
    try:
        certificate = Certificate.decode(raw)
        certificate.verify(trust.authority_public, int(now), trust.revocations)
    except CryptoError as exc:
        raise HandshakeError(f"peer certificate refused: {exc}") from exc
    if certificate.node_id == own_node_id:
        raise HandshakeError("peer presented this node's own certificate")
    return certificate


def _transcript(role: bytes, hello_i: _Hello, hello_r: _Hello, id_i: bytes, id_r: bytes) -> bytes:
    return b"".join(
        [
            DOMAIN_TAG,
            role,
            hello_i.challenge,
            hello_r.challenge,
            hello_i.ephemeral,
            hello_r.ephemeral,
            id_i,
            id_r,
            hashlib.sha256(hello_i.certificate).digest(),
            hashlib.sha256(hello_r.certificate).digest(),
        ]
    )


def _verify_signature(certificate: Certificate, signature: bytes, transcript: bytes) -> None:
    try:
        certificate.public.verify(signature, transcript)
    except CryptoError as exc:
        raise HandshakeError(
            "peer signature over the handshake is invalid: it does not hold its key"
        ) from exc


def _session_keys(
    ephemeral: X25519PrivateKey, peer_ephemeral: bytes, hello_i: _Hello, hello_r: _Hello
) -> bytes:
    try:
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(peer_ephemeral))
    except ValueError as exc:  # all-zero shared secret: a low-order point
        raise HandshakeError("peer ephemeral key is invalid") from exc
    return HKDF(
        algorithm=hashes.SHA256(),
        length=64,
        salt=hello_i.challenge + hello_r.challenge,
        info=DOMAIN_TAG + b"/session-keys" + hello_i.ephemeral + hello_r.ephemeral,
    ).derive(shared)


class Initiator:
    """The dialling side: ``start()`` -> send; ``receive(HELLO_R)`` -> (AUTH_I to send, Established)."""

    def __init__(self, credentials: Credentials, trust: Trust, random: Callable[[int], bytes] = os.urandom):
        self._credentials = credentials
        self._trust = trust
        self._ephemeral = X25519PrivateKey.from_private_bytes(random(32))
        self._hello = _Hello(
            challenge=random(CHALLENGE_LEN),
            ephemeral=self._ephemeral.public_key().public_bytes_raw(),
            certificate=credentials.certificate.encode(),
            signature=None,
        )
        self._done = False

    def start(self) -> bytes:
        return _encode_hello(HELLO_I, self._hello)

    def receive(self, message: bytes, now: float) -> tuple[bytes, Established]:
        if self._done:
            raise HandshakeError("handshake already finished")
        self._done = True
        hello_r = _decode_hello(message, HELLO_R)
        own_id = self._credentials.certificate.node_id
        peer = _verified_certificate(hello_r.certificate, self._trust, own_id, now)
        assert hello_r.signature is not None
        _verify_signature(
            peer, hello_r.signature, _transcript(b"R", self._hello, hello_r, own_id, peer.node_id)
        )
        auth_signature = self._credentials.identity.sign(
            _transcript(b"I", self._hello, hello_r, own_id, peer.node_id)
        )
        keys = _session_keys(self._ephemeral, hello_r.ephemeral, self._hello, hello_r)
        auth = _PREFIX.pack(MAGIC, VERSION, AUTH_I) + auth_signature
        return auth, Established(peer.node_id, peer, SessionCipher(send_key=keys[:32], receive_key=keys[32:]))


class Responder:
    """The listening side: ``receive_hello(HELLO_I)`` -> HELLO_R; ``receive_auth(AUTH_I)`` -> Established."""

    def __init__(self, credentials: Credentials, trust: Trust, random: Callable[[int], bytes] = os.urandom):
        self._credentials = credentials
        self._trust = trust
        self._random = random
        self._pending: tuple[_Hello, _Hello, Certificate, bytes] | None = None
        self._state = "hello"

    def receive_hello(self, message: bytes, now: float) -> bytes:
        if self._state != "hello":
            raise HandshakeError("unexpected second hello")
        self._state = "auth"
        hello_i = _decode_hello(message, HELLO_I)
        own_id = self._credentials.certificate.node_id
        peer = _verified_certificate(hello_i.certificate, self._trust, own_id, now)
        ephemeral = X25519PrivateKey.from_private_bytes(self._random(32))
        unsigned = _Hello(
            challenge=self._random(CHALLENGE_LEN),
            ephemeral=ephemeral.public_key().public_bytes_raw(),
            certificate=self._credentials.certificate.encode(),
            signature=None,
        )
        signature = self._credentials.identity.sign(
            _transcript(b"R", hello_i, unsigned, peer.node_id, own_id)
        )
        hello_r = _Hello(unsigned.challenge, unsigned.ephemeral, unsigned.certificate, signature)
        keys = _session_keys(ephemeral, hello_i.ephemeral, hello_i, hello_r)
        self._pending = (hello_i, hello_r, peer, keys)
        return _encode_hello(HELLO_R, hello_r)

    def receive_auth(self, message: bytes) -> Established:
        if self._state != "auth" or self._pending is None:
            raise HandshakeError("auth before hello, or a second auth")
        self._state = "done"
        hello_i, hello_r, peer, keys = self._pending
        self._pending = None
        signature = _decode_auth(message)
        own_id = self._credentials.certificate.node_id
        _verify_signature(peer, signature, _transcript(b"I", hello_i, hello_r, peer.node_id, own_id))
        return Established(peer.node_id, peer, SessionCipher(send_key=keys[32:], receive_key=keys[:32]))
