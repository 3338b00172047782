"""The deployment authority, enrolment certificates and the revocation list.

The authority is an identity held by the command post. It signs one certificate per enrolled node
(its keys, roles, display name and expiry) and a revocation list with an increasing serial, so a
newer list always replaces an older one wherever it travels.

Certificate wire format (version 1, at most ``MAX_CERTIFICATE`` bytes)::

    "MC" version(1) serial(u32) issued(u32) expires(u32) authority_id(16)
    signing_key(32) agreement_key(32) name(len8 + UTF-8) roles(count8, each len8 + ASCII) signature(64)

Revocation list (version 1)::

    "MR" version(1) serial(u32) issued(u32) authority_id(16) count(u16)
    count × [node_id(16) revoked_at(u32) reason(len8 + UTF-8)] signature(64)

Signatures cover a domain tag followed by every byte before the signature. Times are Unix seconds.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from crypto import wire
from crypto.errors import CertificateError, DecodeError, EnrolmentError, ExpiredError, RevokedError
from crypto.identity import KEY_LEN, NODE_ID_LEN, SIGNATURE_LEN, Identity, PublicIdentity, display_id
from crypto.keyfile import load_identity_file, save_identity_file, write_atomic

SHORT_ID_LEN = 3  # bundles' compact encoding names nodes by this many leading node id bytes
MAX_NAME_BYTES = 64
MAX_ROLES = 16
MAX_ROLE_LEN = 32
MAX_REASON_BYTES = 120
MAX_REVOCATIONS = 4096
MAX_CERTIFICATE = 2 + 1 + 12 + NODE_ID_LEN + 2 * KEY_LEN + 1 + MAX_NAME_BYTES + 1
MAX_CERTIFICATE += MAX_ROLES * (1 + MAX_ROLE_LEN) + SIGNATURE_LEN
_ENTRY_MAX = NODE_ID_LEN + 4 + 1 + MAX_REASON_BYTES
MAX_REVOCATION_LIST = 2 + 1 + 8 + NODE_ID_LEN + 2 + MAX_REVOCATIONS * _ENTRY_MAX + SIGNATURE_LEN
MAX_U32 = 0xFFFF_FFFF
_CERT_MAGIC, _CRL_MAGIC, _VERSION = b"MC", b"MR", 1
_CERT_TAG, _CRL_TAG = b"mesh112/certificate/v1", b"mesh112/revocations/v1"
_ROLE_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def check_role(role: str) -> str:
    if not _ROLE_RE.fullmatch(role):
        raise CertificateError(
            f"role {role!r} is not valid: use 1-32 lowercase letters, digits, '-' or '_', "
            "starting with a letter"
        )
    return role


def check_name(name: str) -> str:
    if not name or len(name.encode()) > MAX_NAME_BYTES or not name.isprintable():
        raise CertificateError(f"name {name!r} must be 1-{MAX_NAME_BYTES} bytes of printable text")
    return name


def _check_time(value: int, what: str) -> int:
    if not 0 <= value <= MAX_U32:
        raise CertificateError(f"{what} {value} is outside 1970-2106")
    return value


@dataclass(frozen=True, slots=True)
class Certificate:
    """An authority's statement: this key pair is node ``name`` with ``roles`` until ``expires``."""

    public: PublicIdentity
    roles: frozenset[str]
    name: str
    expires: int
    serial: int
    issued: int
    authority_id: bytes
    signature: bytes = field(repr=False)
    # The authority key whose signature check passed, so hot paths verify each certificate once.
    _verified_by: bytes = field(default=b"", init=False, repr=False, compare=False)

    @property
    def node_id(self) -> bytes:
        return self.public.node_id

    def _body(self) -> bytes:
        return b"".join(
            (
                _CERT_MAGIC,
                wire.u8(_VERSION),
                wire.u32(self.serial),
                wire.u32(self.issued),
                wire.u32(self.expires),
                self.authority_id,
                self.public.encode(),
                wire.short_text(self.name, "name", MAX_NAME_BYTES),
                wire.u8(len(self.roles)),
                *(wire.short_text(role, "role", MAX_ROLE_LEN) for role in sorted(self.roles)),
            )
        )

    def encode(self) -> bytes:
        return self._body() + self.signature

    @classmethod
    def decode(cls, data: bytes) -> Certificate:
        r = wire.Reader(data, "certificate", MAX_CERTIFICATE)
        if r.take(2, "magic") != _CERT_MAGIC:
            raise DecodeError("not a Mesh112 certificate")
        if (version := r.u8("version")) != _VERSION:
            raise DecodeError(f"certificate version {version} is not supported")
        serial, issued, expires = r.u32("serial"), r.u32("issued"), r.u32("expires")
        authority_id = r.take(NODE_ID_LEN, "authority id")
        public = PublicIdentity.decode(r.take(2 * KEY_LEN, "public keys"))
        name = r.short_text("name", MAX_NAME_BYTES)
        count = r.u8("role count")
        if count > MAX_ROLES:
            raise DecodeError(f"certificate has {count} roles, at most {MAX_ROLES} allowed")
        roles = [r.short_text("role", MAX_ROLE_LEN) for _ in range(count)]
        if roles != sorted(set(roles)):
            raise DecodeError("certificate roles must be sorted and unique")
        signature = r.take(SIGNATURE_LEN, "signature")
        r.finish()
        try:
            check_name(name)
            for role in roles:
                check_role(role)
        except CertificateError as exc:
            raise DecodeError(f"certificate field is invalid: {exc}") from None
        return cls(public, frozenset(roles), name, expires, serial, issued, authority_id, signature)

    def verify(self, authority: PublicIdentity, now: int, revocations: RevocationList | None) -> None:
        """Raise the specific error unless this certificate is valid at ``now`` (Unix seconds)."""
        if self.authority_id != authority.node_id:
            raise CertificateError(f"certificate of {self._who()} is from another deployment authority")
        if self._verified_by != authority.signing_key:
            authority.verify(self.signature, _CERT_TAG + self._body())
            object.__setattr__(self, "_verified_by", authority.signing_key)
        if now >= self.expires:
            expired = _utc(self.expires)
            raise ExpiredError(f"certificate of {self._who()} expired at {expired}; enrol it again")
        if revocations is not None:
            revocations.verify(authority)
            entry = revocations.entry(self.node_id)
            if entry is not None:
                raise RevokedError(f"{self._who()} was revoked at {_utc(entry.revoked_at)}: {entry.reason}")

    def _who(self) -> str:
        """Name and display id, for errors only (verify runs for every bundle a relay takes)."""
        return f"{self.name!r} ({display_id(self.node_id)})"


@dataclass(frozen=True, slots=True)
class Revocation:
    node_id: bytes
    revoked_at: int
    reason: str


@dataclass(frozen=True, slots=True)
class RevocationList:
    """Signed and numbered: a list with a higher serial from the same authority replaces the older."""

    serial: int
    issued: int
    authority_id: bytes
    entries: tuple[Revocation, ...]
    signature: bytes = field(repr=False)
    _index: Mapping[bytes, Revocation] = field(init=False, repr=False, compare=False)
    _verified_by: bytes = field(default=b"", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {entry.node_id: entry for entry in self.entries})

    def entry(self, node_id: bytes) -> Revocation | None:
        return self._index.get(node_id)

    def is_revoked(self, node_id: bytes) -> bool:
        return node_id in self._index

    def is_newer_than(self, other: RevocationList) -> bool:
        return self.authority_id == other.authority_id and self.serial > other.serial

    def _body(self) -> bytes:
        parts = [
            _CRL_MAGIC,
            wire.u8(_VERSION),
            wire.u32(self.serial),
            wire.u32(self.issued),
            self.authority_id,
            wire.u16(len(self.entries)),
        ]
        for entry in self.entries:
            parts += [
                entry.node_id,
                wire.u32(entry.revoked_at),
                wire.short_text(entry.reason, "reason", MAX_REASON_BYTES),
            ]
        return b"".join(parts)

    def encode(self) -> bytes:
        return self._body() + self.signature

    @classmethod
    def decode(cls, data: bytes) -> RevocationList:
        r = wire.Reader(data, "revocation list", MAX_REVOCATION_LIST)
        if r.take(2, "magic") != _CRL_MAGIC:
            raise DecodeError("not a Mesh112 revocation list")
        if (version := r.u8("version")) != _VERSION:
            raise DecodeError(f"revocation list version {version} is not supported")
        serial, issued = r.u32("serial"), r.u32("issued")
        authority_id = r.take(NODE_ID_LEN, "authority id")
        count = r.u16("count")
        if count > MAX_REVOCATIONS:
            raise DecodeError(f"revocation list has {count} entries, at most {MAX_REVOCATIONS} allowed")
        entries = tuple(
            Revocation(
                r.take(NODE_ID_LEN, "node id"), r.u32("revoked at"), r.short_text("reason", MAX_REASON_BYTES)
            )
            for _ in range(count)
        )
        signature = r.take(SIGNATURE_LEN, "signature")
        r.finish()
        ids = [entry.node_id for entry in entries]
        if ids != sorted(set(ids)):
            raise DecodeError("revocation list entries must be sorted by node id and unique")
        return cls(serial, issued, authority_id, entries, signature)

    def verify(self, authority: PublicIdentity) -> None:
        if self.authority_id != authority.node_id:
            raise CertificateError("the revocation list is from another deployment authority")
        if self._verified_by != authority.signing_key:
            authority.verify(self.signature, _CRL_TAG + self._body())
            object.__setattr__(self, "_verified_by", authority.signing_key)


def _utc(unix: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(unix))


class Authority:
    """The deployment authority: signs certificates and revocation lists, and keeps the roster.

    The roster (every certificate issued) lets the authority refuse a node whose short id (the first
    3 bytes of its node id, used by the LoRa encoding) equals an enrolled node's.
    """

    def __init__(
        self, identity: Identity, roster: Iterable[Certificate], revocations: RevocationList
    ) -> None:
        self.identity = identity
        self._roster: dict[bytes, Certificate] = {}
        for cert in roster:
            self._roster[cert.node_id] = cert
        self.revocations = revocations

    @classmethod
    def generate(cls, now: int | None = None) -> Authority:
        identity = Identity.generate()
        return cls(identity, (), _sign_list(identity, 0, _now(now), ()))

    @property
    def public(self) -> PublicIdentity:
        return self.identity.public

    @property
    def roster(self) -> tuple[Certificate, ...]:
        return tuple(self._roster.values())

    def issue(
        self, public: PublicIdentity, roles: frozenset[str], name: str, expires: int, now: int | None = None
    ) -> Certificate:
        issued = _now(now)
        who = f"{name!r} ({display_id(public.node_id)})"
        if self.revocations.is_revoked(public.node_id):
            raise EnrolmentError(f"{who} was revoked; generate a new identity for this node (mesh112 init)")
        for other in self._roster.values():
            if (
                other.node_id != public.node_id
                and other.node_id[:SHORT_ID_LEN] == public.node_id[:SHORT_ID_LEN]
            ):
                raise EnrolmentError(
                    f"{who} has the same short id as enrolled node {other.name!r}; "
                    "generate a new identity for it (delete its identity.key and run mesh112 init again)"
                )
        if len(roles) > MAX_ROLES:
            raise CertificateError(f"at most {MAX_ROLES} roles per certificate")
        for role in roles:
            check_role(role)
        check_name(name)
        _check_time(expires, "expiry")
        if expires <= issued:
            raise CertificateError("the expiry must be in the future")
        serial = max((cert.serial for cert in self._roster.values()), default=0) + 1
        unsigned = Certificate(
            public, frozenset(roles), name, expires, serial, issued, self.identity.node_id, b""
        )
        signature = self.identity.sign(_CERT_TAG + unsigned._body())
        cert = Certificate(
            public, frozenset(roles), name, expires, serial, issued, self.identity.node_id, signature
        )
        self._roster[cert.node_id] = cert
        return cert

    def revoke(self, node_id: bytes, reason: str, now: int | None = None) -> RevocationList:
        """Add ``node_id`` to the list and sign it with the next serial (unchanged if already there)."""
        if len(node_id) != NODE_ID_LEN:
            raise CertificateError(f"a node id is {NODE_ID_LEN} bytes")
        if len(reason.encode()) > MAX_REASON_BYTES:
            raise CertificateError(f"the reason must be at most {MAX_REASON_BYTES} bytes")
        if self.revocations.is_revoked(node_id):
            return self.revocations
        if len(self.revocations.entries) >= MAX_REVOCATIONS:
            raise CertificateError(f"the revocation list is full ({MAX_REVOCATIONS} entries)")
        issued = _now(now)
        entries = sorted(
            (*self.revocations.entries, Revocation(node_id, issued, reason)), key=lambda e: e.node_id
        )
        self.revocations = _sign_list(self.identity, self.revocations.serial + 1, issued, tuple(entries))
        return self.revocations

    def find(self, node_id_prefix: str) -> Certificate:
        """The enrolled certificate whose display id (short or full) starts with ``node_id_prefix``."""
        matches = [
            c for c in self._roster.values() if display_id(c.node_id, full=True).startswith(node_id_prefix)
        ]
        if len(matches) != 1:
            found = "no" if not matches else "several"
            raise CertificateError(f"{found} enrolled node ids start with {node_id_prefix!r}")
        return matches[0]

    # Storage: a directory holding authority.key (0600), authority.pub, roster.bin, revocations.bin.

    def save(self, directory: Path, passphrase: str | None = None) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key_path = directory / "authority.key"
        if not key_path.exists():
            save_identity_file(key_path, self.identity, passphrase)
        write_atomic(directory / "authority.pub", self.public.encode(), 0o644)
        roster = b"".join(wire.u16(len(c.encode())) + c.encode() for c in self._roster.values())
        write_atomic(directory / "roster.bin", roster, 0o644)
        write_atomic(directory / "revocations.bin", self.revocations.encode(), 0o644)

    @classmethod
    def load(cls, directory: Path, passphrase: str | None = None) -> Authority:
        if not (directory / "authority.key").exists():
            raise CertificateError(f"{directory} is not an authority directory (run mesh112 authority init)")
        identity = load_identity_file(directory / "authority.key", passphrase)
        revocations = RevocationList.decode((directory / "revocations.bin").read_bytes())
        revocations.verify(identity.public)
        data = (directory / "roster.bin").read_bytes()
        r = wire.Reader(data, "roster", len(data))
        roster = []
        while r.remaining:
            roster.append(Certificate.decode(r.take(r.u16("certificate length"), "certificate")))
        return cls(identity, roster, revocations)


def _now(now: int | None) -> int:
    return int(time.time()) if now is None else _check_time(now, "time")


def _sign_list(
    identity: Identity, serial: int, issued: int, entries: tuple[Revocation, ...]
) -> RevocationList:
    unsigned = RevocationList(serial, issued, identity.node_id, entries, b"")
    return RevocationList(
        serial, issued, identity.node_id, entries, identity.sign(_CRL_TAG + unsigned._body())
    )
