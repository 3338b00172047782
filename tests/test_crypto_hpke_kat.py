"""RFC 9180 known answers for the HPKE suite the standard seal uses.

``cryptography`` 50 exposes single-shot base mode only: no fixed ephemeral key, no associated data
in the public API. So: (1) the RFC's sequence-0 ciphertexts are opened through the library's
private ``_decrypt_with_aad`` (the only way to pass the RFC's aad); (2) an independent reference
encryptor written here from the RFC reproduces the RFC ciphertexts byte for byte with the fixed
ephemeral key, and the library's *public* ``Suite.decrypt`` opens what that reference makes with
empty aad; (3) the reference opens what the library's public ``Suite.encrypt`` makes.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from crypto.seal import HPKE_SUITE

INFO = bytes.fromhex("4f6465206f6e2061204772656369616e2055726e")
PT = bytes.fromhex("4265617574792069732074727574682c20747275746820626561757479")
AAD0 = b"Count-0"

VECTORS = {
    # RFC 9180 A.1.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, base mode
    "A.1.1 AES-128-GCM": dict(
        aead=hpke.AEAD.AES_128_GCM,
        aead_id=0x0001,
        nk=16,
        skEm="52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736",
        enc="37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431",
        skRm="4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8",
        pkRm="3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d",
        ct="f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a",
    ),
    # RFC 9180 A.2.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305, base mode
    "A.2.1 ChaCha20Poly1305": dict(
        aead=hpke.AEAD.CHACHA20_POLY1305,
        aead_id=0x0003,
        nk=32,
        skEm="f4ec9b33b792c372c1d2c2063507b684ef925b8c75a42dbcbf57d63ccd381600",
        enc="1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a",
        skRm="8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb",
        pkRm="4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a",
        ct="1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db21993c62ce81883d2dd1b51a28",
    ),
}


# --- an independent reference of RFC 9180 base mode (sections 4, 5.1, 7.1) ---


def _extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()


def _expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes((counter,)), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def _labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return _extract(salt, b"HPKE-v1" + suite_id + label + ikm)


def _labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    return _expand(prk, length.to_bytes(2, "big") + b"HPKE-v1" + suite_id + label + info, length)


def _raw(key: x25519.X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _key_schedule(
    shared_dh: bytes, enc: bytes, pk_r: bytes, info: bytes, aead_id: int, nk: int
) -> tuple[bytes, bytes]:
    kem_id = b"KEM" + (0x0020).to_bytes(2, "big")
    eae_prk = _labeled_extract(kem_id, b"", b"eae_prk", shared_dh)
    shared_secret = _labeled_expand(kem_id, eae_prk, b"shared_secret", enc + pk_r, 32)
    suite_id = (
        b"HPKE" + (0x0020).to_bytes(2, "big") + (0x0001).to_bytes(2, "big") + aead_id.to_bytes(2, "big")
    )
    psk_id_hash = _labeled_extract(suite_id, b"", b"psk_id_hash", b"")
    info_hash = _labeled_extract(suite_id, b"", b"info_hash", info)
    context = b"\x00" + psk_id_hash + info_hash
    secret = _labeled_extract(suite_id, shared_secret, b"secret", b"")
    return (
        _labeled_expand(suite_id, secret, b"key", context, nk),
        _labeled_expand(suite_id, secret, b"base_nonce", context, 12),
    )


def _aead(aead_id: int, key: bytes) -> AESGCM | ChaCha20Poly1305:
    return AESGCM(key) if aead_id == 0x0001 else ChaCha20Poly1305(key)


def reference_seal(
    sk_e: bytes, pk_r: bytes, info: bytes, aad: bytes, pt: bytes, aead_id: int, nk: int
) -> bytes:
    eph = x25519.X25519PrivateKey.from_private_bytes(sk_e)
    enc = _raw(eph.public_key())
    dh = eph.exchange(x25519.X25519PublicKey.from_public_bytes(pk_r))
    key, nonce = _key_schedule(dh, enc, pk_r, info, aead_id, nk)
    return enc + _aead(aead_id, key).encrypt(nonce, pt, aad)


def reference_open(sk_r: bytes, sealed: bytes, info: bytes, aad: bytes, aead_id: int, nk: int) -> bytes:
    me = x25519.X25519PrivateKey.from_private_bytes(sk_r)
    enc = sealed[:32]
    dh = me.exchange(x25519.X25519PublicKey.from_public_bytes(enc))
    key, nonce = _key_schedule(dh, enc, _raw(me.public_key()), info, aead_id, nk)
    return _aead(aead_id, key).decrypt(nonce, sealed[32:], aad)


@pytest.mark.parametrize("name", VECTORS)
def test_rfc_ciphertext_opens_in_the_library(name: str) -> None:
    v = VECTORS[name]
    suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, v["aead"])
    sk_r = x25519.X25519PrivateKey.from_private_bytes(bytes.fromhex(v["skRm"]))
    assert _raw(sk_r.public_key()).hex() == v["pkRm"]
    sealed = bytes.fromhex(v["enc"] + v["ct"])
    opened = hpke.rust_openssl.hpke._decrypt_with_aad(suite, sealed, sk_r, info=INFO, aad=AAD0)
    assert opened == PT


@pytest.mark.parametrize("name", VECTORS)
def test_reference_reproduces_the_rfc_and_the_public_api_opens_it(name: str) -> None:
    v = VECTORS[name]
    sk_e, pk_r = bytes.fromhex(v["skEm"]), bytes.fromhex(v["pkRm"])
    assert reference_seal(sk_e, pk_r, INFO, AAD0, PT, v["aead_id"], v["nk"]).hex() == v["enc"] + v["ct"]
    # The same fixed ephemeral key, with the empty aad the public API uses: the library must agree.
    sealed = reference_seal(sk_e, pk_r, INFO, b"", PT, v["aead_id"], v["nk"])
    suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, v["aead"])
    sk_r = x25519.X25519PrivateKey.from_private_bytes(bytes.fromhex(v["skRm"]))
    assert suite.decrypt(sealed, sk_r, info=INFO) == PT


@pytest.mark.parametrize("name", VECTORS)
def test_library_public_encrypt_opens_with_the_reference(name: str) -> None:
    v = VECTORS[name]
    suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, v["aead"])
    pk_r = x25519.X25519PublicKey.from_public_bytes(bytes.fromhex(v["pkRm"]))
    sealed = suite.encrypt(PT, pk_r, info=INFO)
    assert len(sealed) == 32 + len(PT) + 16
    assert reference_open(bytes.fromhex(v["skRm"]), sealed, INFO, b"", v["aead_id"], v["nk"]) == PT


def test_the_standard_seal_uses_the_a2_suite() -> None:
    v = VECTORS["A.2.1 ChaCha20Poly1305"]
    sealed = reference_seal(bytes.fromhex(v["skEm"]), bytes.fromhex(v["pkRm"]), INFO, b"", PT, 3, 32)
    sk_r = x25519.X25519PrivateKey.from_private_bytes(bytes.fromhex(v["skRm"]))
    assert HPKE_SUITE.decrypt(sealed, sk_r, info=INFO) == PT
