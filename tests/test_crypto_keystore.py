"""Key files and node directories on a real filesystem: modes, passphrases, damage, enrolment state."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto.certificate import Authority
from crypto.errors import CertificateError, KeyFileError, RevokedError
from crypto.identity import Identity
from crypto.keyfile import MAGIC, MIN_PASSPHRASE_LEN, SCRYPT, VERSION, decode_secret, encode_secret
from crypto.keystore import (
    IDENTITY_FILE,
    load_identity,
    load_node_keys,
    load_revocations,
    save_certificate,
    save_identity,
    save_revocations,
)

NOW = 1_800_000_000
PASSPHRASE = "staging at north gate"


def test_plain_identity_round_trip_with_mode_0600(tmp_path: Path) -> None:
    identity = Identity.generate()
    save_identity(tmp_path / "node", identity)
    path = tmp_path / "node" / IDENTITY_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "node").stat().st_mode & 0o777 == 0o700
    assert load_identity(tmp_path / "node").public == identity.public
    with pytest.raises(KeyFileError, match="refusing to replace"):
        save_identity(tmp_path / "node", Identity.generate())


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_readable_key_file_is_refused_with_a_fix(tmp_path: Path, mode: int) -> None:
    save_identity(tmp_path, Identity.generate())
    os.chmod(tmp_path / IDENTITY_FILE, mode)
    with pytest.raises(KeyFileError, match=rf"readable by other users \(mode {mode:04o}\); run chmod 600"):
        load_identity(tmp_path)


def test_encrypted_identity_needs_the_right_passphrase(tmp_path: Path) -> None:
    identity = Identity.generate()
    save_identity(tmp_path, identity, passphrase="correct horse battery")
    assert b"correct" not in (tmp_path / IDENTITY_FILE).read_bytes()
    assert identity.private_bytes() not in (tmp_path / IDENTITY_FILE).read_bytes()
    assert load_identity(tmp_path, "correct horse battery").public == identity.public
    with pytest.raises(KeyFileError, match="is encrypted; give its passphrase"):
        load_identity(tmp_path)
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_identity(tmp_path, "wrong")


def test_damaged_or_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="not found"):
        load_identity(tmp_path)
    save_identity(tmp_path, Identity.generate())
    path = tmp_path / IDENTITY_FILE
    data = bytearray(path.read_bytes())
    data[20] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(KeyFileError, match="damaged"):
        load_identity(tmp_path)
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----")
    with pytest.raises(KeyFileError, match="not a Mesh112 key file"):
        load_identity(tmp_path)


def test_hostile_scrypt_parameters_are_refused_quickly() -> None:
    secret = bytes(64)
    data = bytearray(encode_secret(secret, PASSPHRASE))
    data[9] = 30  # log2(n) = 30 would need 128 GiB
    with pytest.raises(KeyFileError, match="outside the allowed range"):
        decode_secret(bytes(data), PASSPHRASE, "test")
    assert decode_secret(encode_secret(secret, PASSPHRASE), PASSPHRASE, "test") == secret


def _weak_key_file(secret: bytes, passphrase: str, log2_n: int) -> bytes:
    """A key file as an older tool (or an attacker planting one) would write it: weak scrypt."""
    salt, nonce = os.urandom(16), os.urandom(12)
    header = MAGIC + bytes((VERSION, SCRYPT, log2_n, 8, 1)) + salt + nonce
    key = Scrypt(salt=salt, length=32, n=1 << log2_n, r=8, p=1).derive(passphrase.encode())
    return header + ChaCha20Poly1305(key).encrypt(nonce, secret, header)


def test_weak_scrypt_and_short_passphrases_are_refused() -> None:
    """N = 2^10 with a one-character passphrase opened before: a stolen file fell to a laptop."""
    weak = _weak_key_file(bytes(64), "x", 10)
    with pytest.raises(KeyFileError, match=r"N = 2\^10.*allowed N = 2\^15"):
        decode_secret(weak, "x", "identity.key")
    with pytest.raises(KeyFileError, match="allowed N"):
        decode_secret(_weak_key_file(bytes(64), PASSPHRASE, 14), PASSPHRASE, "identity.key")
    for short in ("", "x", "a" * (MIN_PASSPHRASE_LEN - 1)):
        with pytest.raises(KeyFileError, match=f"at least {MIN_PASSPHRASE_LEN}"):
            encode_secret(bytes(64), short)
    with pytest.raises(KeyFileError, match="scrypt log2"):
        encode_secret(bytes(64), PASSPHRASE, scrypt_log2_n=10)
    assert decode_secret(encode_secret(bytes(64), "a" * MIN_PASSPHRASE_LEN), "a" * MIN_PASSPHRASE_LEN, "t")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300), st.sampled_from([None, "pw"]))
def test_random_key_file_bytes_raise_only_key_file_error(data: bytes, passphrase: str | None) -> None:
    with contextlib.suppress(KeyFileError):
        decode_secret(data, passphrase, "test")


def test_node_keys_enrolment_states(tmp_path: Path) -> None:
    authority = Authority.generate(now=NOW)
    identity = Identity.generate()
    save_identity(tmp_path, identity)
    with pytest.raises(CertificateError, match="not enrolled"):
        load_node_keys(tmp_path, NOW)
    cert = authority.issue(identity.public, frozenset({"relay"}), "Relay A", NOW + 3600, now=NOW)
    save_certificate(tmp_path, cert, authority.public)
    keys = load_node_keys(tmp_path, NOW + 1)
    assert keys.certificate == cert and keys.identity.public == identity.public and keys.revocations is None

    old = authority.revocations
    newer = authority.revoke(identity.node_id, "decommissioned", now=NOW + 2)
    assert save_revocations(tmp_path, newer)
    assert not save_revocations(tmp_path, old)  # an older list never replaces a newer one
    assert load_revocations(tmp_path) == newer
    with pytest.raises(RevokedError, match="decommissioned"):
        load_node_keys(tmp_path, NOW + 3)

    other = tmp_path / "other"
    save_identity(other, Identity.generate())
    save_certificate(other, cert, authority.public)
    with pytest.raises(CertificateError, match="another identity"):
        load_node_keys(other, NOW + 1)
