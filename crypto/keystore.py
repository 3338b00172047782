"""A node's key directory: one directory per node, private key mode 0600.

Layout::

    identity.key      the node's private keys (0600; optionally passphrase-encrypted, see keyfile)
    identity.pub      its public keys (so enrolment never needs the private key or its passphrase)
    certificate.bin   its enrolment certificate, written by the authority
    authority.pub     the deployment authority's public keys (the trust anchor)
    revocations.bin   the newest revocation list seen

Only ``identity.key`` is secret. Every write is atomic (temporary file, fsync, rename).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from crypto.certificate import Certificate, RevocationList
from crypto.errors import CertificateError, DecodeError, KeyFileError
from crypto.identity import Identity, PublicIdentity
from crypto.keyfile import load_identity_file, save_identity_file, write_atomic

T = TypeVar("T")
IDENTITY_FILE = "identity.key"
PUBLIC_FILE = "identity.pub"
CERTIFICATE_FILE = "certificate.bin"
AUTHORITY_FILE = "authority.pub"
REVOCATIONS_FILE = "revocations.bin"


def save_identity(directory: Path, identity: Identity, passphrase: str | None = None) -> None:
    """Create ``directory`` (0700) and write the identity; refuses to replace an existing one."""
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / IDENTITY_FILE
    if path.exists():
        raise KeyFileError(
            f"{directory} already has an {IDENTITY_FILE}; refusing to replace a node's identity"
        )
    save_identity_file(path, identity, passphrase)
    write_atomic(directory / PUBLIC_FILE, identity.public.encode(), 0o644)


def load_public_identity(directory: Path) -> PublicIdentity:
    """The node's public keys from ``identity.pub`` (no private key or passphrase needed)."""
    path = Path(directory) / PUBLIC_FILE
    data = _read_optional(path)
    if data is None:
        raise KeyFileError(f"{PUBLIC_FILE} not found in {directory}; is it a node directory (mesh112 init)?")
    return _wrap(PublicIdentity.decode, data, path)


def load_identity(directory: Path, passphrase: str | None = None) -> Identity:
    return load_identity_file(Path(directory) / IDENTITY_FILE, passphrase)


def has_identity(directory: Path) -> bool:
    return (Path(directory) / IDENTITY_FILE).exists()


def save_certificate(directory: Path, certificate: Certificate, authority: PublicIdentity) -> None:
    directory = Path(directory)
    write_atomic(directory / CERTIFICATE_FILE, certificate.encode(), 0o644)
    write_atomic(directory / AUTHORITY_FILE, authority.encode(), 0o644)


def save_revocations(directory: Path, revocations: RevocationList) -> bool:
    """Store ``revocations`` unless the directory already holds a list at least as new."""
    current = load_revocations(directory)
    if current is not None and not revocations.is_newer_than(current):
        return False
    write_atomic(Path(directory) / REVOCATIONS_FILE, revocations.encode(), 0o644)
    return True


def _read_optional(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _wrap(decoder: Callable[[bytes], T], data: bytes, path: Path) -> T:
    try:
        return decoder(data)
    except DecodeError as exc:
        raise KeyFileError(f"{path.name} in {path.parent} is damaged: {exc}") from None


def load_certificate(directory: Path) -> Certificate | None:
    data = _read_optional(Path(directory) / CERTIFICATE_FILE)
    return None if data is None else _wrap(Certificate.decode, data, Path(directory) / CERTIFICATE_FILE)


def load_authority_public(directory: Path) -> PublicIdentity | None:
    data = _read_optional(Path(directory) / AUTHORITY_FILE)
    return None if data is None else _wrap(PublicIdentity.decode, data, Path(directory) / AUTHORITY_FILE)


def load_revocations(directory: Path) -> RevocationList | None:
    data = _read_optional(Path(directory) / REVOCATIONS_FILE)
    return None if data is None else _wrap(RevocationList.decode, data, Path(directory) / REVOCATIONS_FILE)


@dataclass(frozen=True, slots=True)
class NodeKeys:
    """Everything a running node needs from its key directory."""

    identity: Identity
    certificate: Certificate
    authority: PublicIdentity
    revocations: RevocationList | None


def load_node_keys(directory: Path, now: int, passphrase: str | None = None) -> NodeKeys:
    """Load and check a node directory: enrolled, certificate matches the key, valid at ``now``."""
    directory = Path(directory)
    identity = load_identity(directory, passphrase)
    certificate = load_certificate(directory)
    authority = load_authority_public(directory)
    if certificate is None or authority is None:
        raise CertificateError(f"{directory} is not enrolled yet (run mesh112 authority enroll)")
    if certificate.public != identity.public:
        raise CertificateError(f"the certificate in {directory} belongs to another identity; enrol again")
    revocations = load_revocations(directory)
    certificate.verify(authority, now, revocations)
    return NodeKeys(identity, certificate, authority, revocations)
