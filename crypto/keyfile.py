"""Private key files: mode 0600, written atomically, checksummed, optionally passphrase-encrypted.

Format (``M112KEY``, version 1)::

    magic(7) version(1) kind(1)
    kind 0 (plain):     secret(64) checksum(8)   checksum = SHA-256(everything before)[:8]
    kind 1 (scrypt):    log2_n(1) r(1) p(1) salt(16) nonce(12) ChaCha20-Poly1305(secret)(64 + 16)
                        the AEAD's associated data is everything before the ciphertext

The checksum catches a torn or damaged file before it becomes a wrong identity; the scrypt limits
stop a planted key file from making the loader spend minutes or gigabytes, and the floor (N = 2^15,
32 MiB) stops a weak file, written by hand or by an older tool, from being accepted: each guess of
the passphrase costs an attacker who stole the file as much as it costs us once per start. A new
passphrase must be at least ``MIN_PASSPHRASE_LEN`` characters.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from crypto.errors import DecodeError, KeyFileError
from crypto.identity import PRIVATE_LEN, Identity

MAGIC = b"M112KEY"
VERSION = 1
PLAIN, SCRYPT = 0, 1
DEFAULT_SCRYPT_LOG2_N = 15  # 32 MiB with r=8, about 0.1 s: once per start, not per message
_LOG2_N_RANGE = range(DEFAULT_SCRYPT_LOG2_N, 21)  # never weaker than the default, never over 1 GiB
MIN_PASSPHRASE_LEN = 12
_CHECKSUM_LEN = 8
_HEADER_LEN = len(MAGIC) + 2
MAX_KEY_FILE = 256


def encode_secret(secret: bytes, passphrase: str | None, scrypt_log2_n: int = DEFAULT_SCRYPT_LOG2_N) -> bytes:
    if passphrase is None:
        body = MAGIC + bytes((VERSION, PLAIN)) + secret
        return body + hashlib.sha256(body).digest()[:_CHECKSUM_LEN]
    if len(passphrase) < MIN_PASSPHRASE_LEN:
        raise KeyFileError(
            f"the passphrase has {len(passphrase)} characters; use at least {MIN_PASSPHRASE_LEN} "
            "(a few random words), or none"
        )
    if scrypt_log2_n not in _LOG2_N_RANGE:
        raise KeyFileError(f"scrypt log2(n) must be in {_LOG2_N_RANGE.start}..{_LOG2_N_RANGE.stop - 1}")
    salt, nonce = os.urandom(16), os.urandom(12)
    header = MAGIC + bytes((VERSION, SCRYPT, scrypt_log2_n, 8, 1)) + salt + nonce
    key = Scrypt(salt=salt, length=32, n=1 << scrypt_log2_n, r=8, p=1).derive(passphrase.encode())
    return header + ChaCha20Poly1305(key).encrypt(nonce, secret, header)


def decode_secret(data: bytes, passphrase: str | None, where: str) -> bytes:
    """``where`` names the file in messages. Raises :class:`KeyFileError` with what to do."""
    if len(data) > MAX_KEY_FILE or len(data) < _HEADER_LEN or data[: len(MAGIC)] != MAGIC:
        raise KeyFileError(f"{where} is not a Mesh112 key file")
    version, kind = data[len(MAGIC)], data[len(MAGIC) + 1]
    if version != VERSION:
        raise KeyFileError(f"{where} has key file version {version}; this program reads version {VERSION}")
    if kind == PLAIN:
        body, checksum = data[:-_CHECKSUM_LEN], data[-_CHECKSUM_LEN:]
        if (
            len(body) != _HEADER_LEN + PRIVATE_LEN
            or hashlib.sha256(body).digest()[:_CHECKSUM_LEN] != checksum
        ):
            raise KeyFileError(f"{where} is damaged (checksum mismatch); restore it from a backup")
        return body[_HEADER_LEN:]
    if kind != SCRYPT:
        raise KeyFileError(f"{where} uses unknown protection kind {kind}")
    header_len = _HEADER_LEN + 3 + 16 + 12
    if len(data) != header_len + PRIVATE_LEN + 16:
        raise KeyFileError(f"{where} is damaged (wrong length); restore it from a backup")
    log2_n, r, p = data[_HEADER_LEN : _HEADER_LEN + 3]
    if log2_n not in _LOG2_N_RANGE or r != 8 or p != 1:
        raise KeyFileError(
            f"{where} asks for scrypt parameters outside the allowed range (N = 2^{log2_n}, r = {r}, "
            f"p = {p}; allowed N = 2^{_LOG2_N_RANGE.start}..2^{_LOG2_N_RANGE.stop - 1}, r = 8, p = 1); "
            "write it again with mesh112 init --encrypt"
        )
    if passphrase is None:
        raise KeyFileError(f"{where} is encrypted; give its passphrase")
    salt = data[_HEADER_LEN + 3 : _HEADER_LEN + 19]
    nonce = data[_HEADER_LEN + 19 : header_len]
    key = Scrypt(salt=salt, length=32, n=1 << log2_n, r=r, p=p).derive(passphrase.encode())
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, data[header_len:], data[:header_len])
    except InvalidTag:
        raise KeyFileError(f"wrong passphrase for {where} (or the file is damaged)") from None


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write to a temporary file created with ``mode``, fsync, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # the umask may have taken bits away; set exactly what we mean
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_private(path: Path) -> bytes:
    """Read a private key file, refusing one that other users could read."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"{path.name} not found in {path.parent}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        mode = stat.S_IMODE(info.st_mode)
        raise KeyFileError(
            f"{path.name} in {path.parent} is readable by other users (mode {mode:04o}); run chmod 600 {path}"
        )
    with open(path, "rb") as handle:
        return handle.read(MAX_KEY_FILE + 1)


def save_identity_file(path: Path, identity: Identity, passphrase: str | None = None) -> None:
    write_atomic(path, encode_secret(identity.private_bytes(), passphrase), 0o600)


def load_identity_file(path: Path, passphrase: str | None = None) -> Identity:
    secret = decode_secret(read_private(path), passphrase, f"{path.name} in {path.parent}")
    try:
        return Identity.from_private_bytes(secret)
    except (DecodeError, ValueError) as exc:
        raise KeyFileError(f"{path.name} in {path.parent} holds unusable key material: {exc}") from None
