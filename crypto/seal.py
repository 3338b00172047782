"""Sealing for one recipient, authenticating the sender: a compact mode (LoRa, and every unsigned bundle),
a standard one (HPKE) for records worth proving to a third party.

**Compact** (LoRa; overhead 24 bytes: an 8-byte random salt and the 16-byte Poly1305 tag):
static-static X25519 between the sender's and the recipient's enrolled keys, HKDF-SHA256 to a key
per (sender, recipient) *direction*, then ChaCha20-Poly1305. Only these two nodes can compute the
key, so a valid tag proves the sender, with no signature on air. Format: ``salt(8) ciphertext+tag``.
The nonce is SHA-256 of the caller's ``nonce_input`` (the bundle id key: origin, creation time,
sequence) and the salt, truncated to 12 bytes. The id alone is not enough: a node that loses its
store restarts its sequence, and a repeated second (clock set back, no RTC) then repeats an id with
another plaintext. With the salt, a reuse needs the same id *and* the same 64 random bits (2^-64 per
repeated id). Keys are per direction, so A→B and B→A never share a key even for equal inputs. What
it does not give: forward secrecy (a stolen static key opens past traffic of that node) and proof to
a third party (either end could have made the tag).

**Compact, tagged** (any size; overhead 25 bytes): the compact seal behind a mode byte (``0x13``),
for plaintexts too long to be told apart from a standard seal by their length alone. The engine
seals every unsigned bundle to a node this way above the LoRa size (docs/crypto.md, "Sealing
modes": why, and what it gives up against HPKE); :meth:`SealContext.open_tagged` opens it and both
standard modes, so bundles sealed before the change still open.

**Standard** (IP): HPKE base mode from RFC 9180, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
ChaCha20-Poly1305, via ``cryptography.hazmat.primitives.hpke``. That API offers only base mode (no
auth mode, no separate associated data), so the associated data and both node ids are bound through
HPKE's ``info`` and the sender is authenticated by one of:

- ``sign=True``: an Ed25519 signature over the plaintext, the aad and both node ids, carried *inside*
  the ciphertext, so the record can be proven to a third party later (:func:`open_standard_proof`)
  without revealing anything to eavesdroppers. Overhead 1 + 32 + 16 + 64 = 113 bytes.
- ``sign=False``: a 16-byte HMAC-SHA256 with a static-static pairwise key over the whole sealed
  record; deniable like the compact mode. Overhead 1 + 32 + 16 + 16 = 65 bytes.

Every failure to open raises :class:`SealError`, never the library's exception.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crypto.errors import CertificateError, SealError
from crypto.identity import SIGNATURE_LEN, Identity, PublicIdentity

TAG_LEN = 16
NONCE_SALT_LEN = 8
COMPACT_OVERHEAD = NONCE_SALT_LEN + TAG_LEN
HPKE_ENC_LEN = 32
STANDARD_MAC_LEN = 16
STANDARD_OVERHEAD_MAC = 1 + HPKE_ENC_LEN + TAG_LEN + STANDARD_MAC_LEN
STANDARD_OVERHEAD_SIGNED = 1 + HPKE_ENC_LEN + TAG_LEN + SIGNATURE_LEN
MAX_NONCE_INPUT = 64
MAX_PLAINTEXT = 1 << 20
HPKE_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
COMPACT_TAGGED_OVERHEAD = 1 + COMPACT_OVERHEAD
_MODE_MAC, _MODE_SIGNED, _MODE_COMPACT = 0x11, 0x12, 0x13  # version 1 in the high nibble, mode in the low
_NONCE_TAG = b"mesh112/nonce/v2"
_COMPACT_SALT = b"mesh112/compact/v1"
_MAC_SALT = b"mesh112/standard-mac/v1"
_INFO_TAG = b"mesh112/standard/v1"
_SIG_TAG = b"mesh112/standard-signature/v1"


def derive_nonce(nonce_input: bytes, salt: bytes) -> bytes:
    """12-byte AEAD nonce from the bundle id key and the random salt sent with the seal."""
    if not 1 <= len(nonce_input) <= MAX_NONCE_INPUT:
        raise SealError(f"nonce input must be 1-{MAX_NONCE_INPUT} bytes")
    if len(salt) != NONCE_SALT_LEN:
        raise SealError(f"nonce salt must be {NONCE_SALT_LEN} bytes")
    return hashlib.sha256(_NONCE_TAG + salt + nonce_input).digest()[:12]


def _pair_secret(
    local: Identity, peer: PublicIdentity, salt: bytes, sender: bytes, recipient: bytes
) -> bytes:
    try:
        shared = local.exchange(peer)
    except CertificateError as exc:
        raise SealError(str(exc)) from None
    return HKDF(hashes.SHA256(), 32, salt, sender + recipient).derive(shared)


class SealContext:
    """One node's sealing state: caches the per-pair compact and MAC keys (LoRa nodes seal many
    small things, and one X25519 plus HKDF per bundle is the expensive part)."""

    def __init__(
        self, identity: Identity, max_peers: int = 4096, random: Callable[[int], bytes] = os.urandom
    ) -> None:
        self.identity = identity
        self._max_peers = max_peers
        self._random = random
        self._keys: OrderedDict[tuple[bytes, bytes, bytes], bytes] = OrderedDict()
        self._ciphers: OrderedDict[tuple[bool, bytes, bytes], ChaCha20Poly1305] = OrderedDict()

    def _key(self, peer: PublicIdentity, salt: bytes, sending: bool) -> bytes:
        me, them = self.identity.node_id, peer.node_id
        sender, recipient = (me, them) if sending else (them, me)
        # The cache is keyed by the peer's full public keys, not just its id, so a different key pair
        # claiming the same id (impossible by construction, but cheap to rule out) never hits.
        slot = (salt, sender + recipient, peer.encode())
        key = self._keys.get(slot)
        if key is None:
            key = _pair_secret(self.identity, peer, salt, sender, recipient)
            self._keys[slot] = key
            if len(self._keys) > self._max_peers:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(slot)
        return key

    def _cipher(self, peer: PublicIdentity, sending: bool) -> ChaCha20Poly1305:
        """The compact seal's AEAD for one direction, made once per pair like its key (making one
        costs as much as sealing 100 bytes with it)."""
        slot = (sending, peer.signing_key, peer.agreement_key)  # its full public keys, not joined per call
        cipher = self._ciphers.get(slot)
        if cipher is None:
            cipher = ChaCha20Poly1305(self._key(peer, _COMPACT_SALT, sending))
            self._ciphers[slot] = cipher
            if len(self._ciphers) > self._max_peers:
                self._ciphers.popitem(last=False)
        else:
            self._ciphers.move_to_end(slot)
        return cipher

    def seal_compact(
        self, recipient: PublicIdentity, nonce_input: bytes, aad: bytes, plaintext: bytes
    ) -> bytes:
        _check_size(plaintext)
        cipher = self._cipher(recipient, sending=True)
        salt = self._random(NONCE_SALT_LEN)
        return salt + cipher.encrypt(derive_nonce(nonce_input, salt), plaintext, aad)

    def open_compact(self, sender: PublicIdentity, nonce_input: bytes, aad: bytes, sealed: bytes) -> bytes:
        if not COMPACT_OVERHEAD <= len(sealed) <= MAX_PLAINTEXT + COMPACT_OVERHEAD:
            raise SealError(f"compact sealed payload has an impossible length ({len(sealed)} bytes)")
        cipher = self._cipher(sender, sending=False)
        salt = sealed[:NONCE_SALT_LEN]
        try:
            return cipher.decrypt(derive_nonce(nonce_input, salt), sealed[NONCE_SALT_LEN:], aad)
        except InvalidTag:
            raise SealError(
                "compact seal does not open: tampered, or not from this sender to this node"
            ) from None

    def seal_compact_tagged(
        self, recipient: PublicIdentity, nonce_input: bytes, aad: bytes, plaintext: bytes
    ) -> bytes:
        """The compact seal behind its mode byte: one cached key and a ChaCha20-Poly1305 pass instead
        of HPKE's X25519 per seal, for plaintexts of any size that need no proof to a third party."""
        return bytes((_MODE_COMPACT,)) + self.seal_compact(recipient, nonce_input, aad, plaintext)

    def open_tagged(self, sender: PublicIdentity, nonce_input: bytes, aad: bytes, sealed: bytes) -> bytes:
        """Open a seal that starts with its mode byte: a tagged compact seal or either standard one."""
        if sealed[:1] == bytes((_MODE_COMPACT,)):
            return self.open_compact(sender, nonce_input, aad, sealed[1:])
        return self.open_standard(sender, aad, sealed)

    def seal_standard(self, recipient: PublicIdentity, aad: bytes, plaintext: bytes, sign: bool) -> bytes:
        _check_size(plaintext)
        me, them = self.identity.node_id, recipient.node_id
        mode = _MODE_SIGNED if sign else _MODE_MAC
        inner = plaintext
        if sign:
            inner = self.identity.sign(_signed_data(me, them, aad, plaintext)) + plaintext
        sealed = bytes((mode,)) + HPKE_SUITE.encrypt(inner, recipient.agreement, _info(mode, me, them, aad))
        if sign:
            return sealed
        return sealed + self._mac(recipient, True, sealed, aad)

    def open_standard(self, sender: PublicIdentity, aad: bytes, sealed: bytes) -> bytes:
        return self.open_standard_proof(sender, aad, sealed).plaintext

    def open_standard_proof(self, sender: PublicIdentity, aad: bytes, sealed: bytes) -> Proof:
        """Open a standard seal; the returned :class:`Proof` carries the signature when there was one."""
        if not STANDARD_OVERHEAD_MAC <= len(sealed) <= MAX_PLAINTEXT + STANDARD_OVERHEAD_SIGNED:
            raise SealError(f"standard sealed payload has an impossible length ({len(sealed)} bytes)")
        mode, me, them = sealed[0], self.identity.node_id, sender.node_id
        if mode == _MODE_MAC:
            body, mac = sealed[:-STANDARD_MAC_LEN], sealed[-STANDARD_MAC_LEN:]
            if not hmac.compare_digest(mac, self._mac(sender, False, body, aad)):
                raise SealError("standard seal does not open: tampered, or not from this sender")
        elif mode == _MODE_SIGNED:
            body = sealed
        else:
            raise SealError(f"unknown standard seal mode 0x{mode:02x}")
        try:
            inner = HPKE_SUITE.decrypt(body[1:], self.identity.agreement_private, _info(mode, them, me, aad))
        except InvalidTag:
            raise SealError("standard seal does not open: tampered, or not sealed to this node") from None
        except ValueError as exc:
            raise SealError(f"standard seal does not open: {exc}") from None
        if mode == _MODE_MAC:
            return Proof(them, me, aad, inner, None)
        if len(inner) < SIGNATURE_LEN:
            raise SealError("signed standard seal is too short to hold its signature")
        proof = Proof(them, me, aad, inner[SIGNATURE_LEN:], inner[:SIGNATURE_LEN])
        try:
            proof.verify(sender)
        except CertificateError:
            raise SealError("standard seal's signature is not the sender's") from None
        return proof

    def _mac(self, peer: PublicIdentity, sending: bool, body: bytes, aad: bytes) -> bytes:
        key = self._key(peer, _MAC_SALT, sending)
        return hmac.new(key, body + hashlib.sha256(aad).digest(), hashlib.sha256).digest()[:STANDARD_MAC_LEN]


@dataclass(frozen=True, slots=True)
class Proof:
    """An opened standard record; with a signature it can be shown to anyone holding the sender's key."""

    sender_id: bytes
    recipient_id: bytes
    aad: bytes
    plaintext: bytes
    signature: bytes | None

    def verify(self, sender: PublicIdentity) -> None:
        if self.signature is None or sender.node_id != self.sender_id:
            raise CertificateError("this record carries no signature by that sender")
        sender.verify(
            self.signature, _signed_data(self.sender_id, self.recipient_id, self.aad, self.plaintext)
        )


def _info(mode: int, sender: bytes, recipient: bytes, aad: bytes) -> bytes:
    return _INFO_TAG + bytes((mode,)) + sender + recipient + hashlib.sha256(aad).digest()


def _signed_data(sender: bytes, recipient: bytes, aad: bytes, plaintext: bytes) -> bytes:
    return _SIG_TAG + sender + recipient + hashlib.sha256(aad).digest() + plaintext


def _check_size(plaintext: bytes) -> None:
    if len(plaintext) > MAX_PLAINTEXT:
        raise SealError(f"plaintext is larger than {MAX_PLAINTEXT} bytes")


def seal_compact(
    sender: Identity, recipient: PublicIdentity, nonce_input: bytes, aad: bytes, plaintext: bytes
) -> bytes:
    """One-off form of :meth:`SealContext.seal_compact` (derives the pair key every call)."""
    return SealContext(sender).seal_compact(recipient, nonce_input, aad, plaintext)


def open_compact(
    recipient: Identity, sender: PublicIdentity, nonce_input: bytes, aad: bytes, sealed: bytes
) -> bytes:
    return SealContext(recipient).open_compact(sender, nonce_input, aad, sealed)


def seal_standard(
    sender: Identity, recipient: PublicIdentity, aad: bytes, plaintext: bytes, sign: bool
) -> bytes:
    return SealContext(sender).seal_standard(recipient, aad, plaintext, sign)


def open_standard(recipient: Identity, sender: PublicIdentity, aad: bytes, sealed: bytes) -> bytes:
    return SealContext(recipient).open_standard(sender, aad, sealed)
