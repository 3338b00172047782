"""Enrolment by invitation: a one-time token the authority signs, small enough for a QR code.

The authority prints an :class:`Invitation`; a new device scans it, makes its own identity, and
sends an :class:`EnrolRequest` (the token, its public keys, and its signature over both, proving it
holds the private key) to the enrolment address the invitation names. The authority checks its own
signature on the invitation, that the token is unused and unexpired, and the device's proof, then
answers with an :class:`EnrolAnswer`: the certificate, the authority's public keys (the device
checks them against the authority id it scanned, so a forged answer cannot swap the trust anchor),
the revocation list and the device's sealed group keys. Private keys never travel.

Wire layout of an invitation (≤ 300 bytes; QR text ``M112:`` + base64url)::

    version(1)=1 authority_id(16) token(16) expires(u32) post_id(16)
    name(len8 + UTF-8) roles(len8 + ASCII, comma-separated) enrol_url(len8) peer(len8)
    signature(64)  Ed25519 by the authority over the tag and everything before it
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass, field
from typing import Any

from crypto.errors import CertificateError, DecodeError, EnrolmentError
from crypto.identity import Identity, PublicIdentity

VERSION = 1
QR_PREFIX = "M112:"
MAX_INVITATION = 300
TOKEN_LEN = 16
SIGNATURE_LEN = 64
_TAG = b"mesh112/invitation/v1"
_REQUEST_TAG = b"mesh112/enrol-request/v1"
_HEAD = struct.Struct(">B16s16sI16s")


class InvitationError(EnrolmentError):
    """An invitation or enrolment request that is damaged, forged, expired or already used."""


def _field(text: str, what: str, ascii_only: bool = False) -> bytes:
    data = text.encode("ascii" if ascii_only else "utf-8")
    if len(data) > 0xFF:
        raise InvitationError(f"the invitation's {what} is at most 255 bytes")
    return bytes((len(data),)) + data


@dataclass(frozen=True, slots=True)
class Invitation:
    authority_id: bytes
    token: bytes
    expires: int  # unix seconds
    post_id: bytes  # the command post's node id: where the app's SOS goes
    name: str  # the device's display name
    roles: tuple[str, ...]
    enrol_url: str  # where the EnrolRequest goes (http://host:port/enrol)
    peer: str  # the IP link the device dials afterwards (tcp://host:port)
    signature: bytes = b""

    def body(self) -> bytes:
        return (
            _HEAD.pack(VERSION, self.authority_id, self.token, self.expires, self.post_id)
            + _field(self.name, "name")
            + _field(",".join(self.roles), "roles", ascii_only=True)
            + _field(self.enrol_url, "enrolment URL", ascii_only=True)
            + _field(self.peer, "peer", ascii_only=True)
        )

    @classmethod
    def signed(cls, authority: Identity, **fields: Any) -> Invitation:
        unsigned = cls(authority_id=authority.node_id, **fields)
        invitation = cls(**{**_fields(unsigned), "signature": authority.sign(_TAG + unsigned.body())})
        if len(invitation.encode()) > MAX_INVITATION:
            raise InvitationError(
                f"the invitation is {len(invitation.encode())} bytes, more than {MAX_INVITATION}: "
                "shorten the name or the addresses"
            )
        return invitation

    def encode(self) -> bytes:
        return self.body() + self.signature

    def text(self) -> str:
        """What the QR code holds."""
        return QR_PREFIX + base64.urlsafe_b64encode(self.encode()).decode().rstrip("=")

    @classmethod
    def from_text(cls, text: str) -> Invitation:
        text = text.strip()
        if not text.startswith(QR_PREFIX):
            raise InvitationError(f"not a Mesh112 invitation (it does not start with {QR_PREFIX})")
        payload = text[len(QR_PREFIX) :]
        try:
            data = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        except (binascii.Error, ValueError):
            raise InvitationError("the invitation's text is damaged (not base64url)") from None
        return cls.decode(data)

    @classmethod
    def decode(cls, data: bytes) -> Invitation:
        if len(data) < _HEAD.size + 4 + SIGNATURE_LEN or len(data) > MAX_INVITATION:
            raise InvitationError(f"an invitation is {_HEAD.size + 4 + SIGNATURE_LEN}-{MAX_INVITATION} bytes")
        version, authority_id, token, expires, post_id = _HEAD.unpack_from(data)
        if version != VERSION:
            raise InvitationError(f"invitation version {version} is not {VERSION}")
        offset = _HEAD.size
        texts = []
        for _ in range(4):
            if offset >= len(data):
                raise InvitationError("the invitation is cut short")
            size = data[offset]
            texts.append(data[offset + 1 : offset + 1 + size])
            offset += 1 + size
        signature = data[offset:]
        if len(signature) != SIGNATURE_LEN:
            raise InvitationError("the invitation's signature is missing or cut")
        try:
            name, roles, url, peer = (part.decode() for part in texts)
        except UnicodeDecodeError:
            raise InvitationError("the invitation's text fields are not UTF-8") from None
        return cls(
            authority_id,
            token,
            expires,
            post_id,
            name,
            tuple(r for r in roles.split(",") if r),
            url,
            peer,
            signature,
        )

    def verify(self, authority: PublicIdentity, now: int) -> None:
        """Raise :class:`InvitationError` unless ``authority`` signed this and it has not expired."""
        if authority.node_id != self.authority_id:
            raise InvitationError("the invitation names another deployment authority")
        try:
            authority.verify(self.signature, _TAG + self.body())
        except CertificateError:
            raise InvitationError(
                "the invitation's signature is not the authority's (forged or damaged)"
            ) from None
        if now > self.expires:
            raise InvitationError("the invitation has expired; ask for a new one")


def _fields(invitation: Invitation) -> dict[str, Any]:
    return {name: getattr(invitation, name) for name in Invitation.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class EnrolRequest:
    token: bytes
    public: PublicIdentity
    proof: bytes  # the device's signature over the tag, the token and its public keys

    @classmethod
    def make(cls, identity: Identity, token: bytes) -> EnrolRequest:
        public = identity.public
        return cls(token, public, identity.sign(_REQUEST_TAG + token + public.encode()))

    def encode(self) -> bytes:
        return self.token + self.public.encode() + self.proof

    @classmethod
    def decode(cls, data: bytes) -> EnrolRequest:
        if len(data) != TOKEN_LEN + 64 + SIGNATURE_LEN:
            raise InvitationError(f"an enrolment request is {TOKEN_LEN + 64 + SIGNATURE_LEN} bytes")
        try:
            public = PublicIdentity.decode(data[TOKEN_LEN : TOKEN_LEN + 64])
        except DecodeError as exc:
            raise InvitationError(f"the request's public keys: {exc}") from None
        request = cls(data[:TOKEN_LEN], public, data[TOKEN_LEN + 64 :])
        try:
            public.verify(request.proof, _REQUEST_TAG + request.token + public.encode())
        except CertificateError:
            raise InvitationError("the request is not signed by the keys it carries") from None
        return request


@dataclass(frozen=True, slots=True)
class EnrolAnswer:
    """What the device writes into its node directory (all public or sealed to the device)."""

    certificate: bytes
    authority: bytes  # the authority's public identity; its node id must be the invitation's
    revocations: bytes
    group_keys: dict[str, bytes] = field(default_factory=dict)  # file name -> key sealed to the device
    joined: tuple[str, ...] = ()
    roster: tuple[bytes, ...] = ()  # certificates of the other nodes, for names

    def encode(self) -> bytes:
        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        return json.dumps(
            {
                "certificate": b64(self.certificate),
                "authority": b64(self.authority),
                "revocations": b64(self.revocations),
                "group_keys": {name: b64(data) for name, data in self.group_keys.items()},
                "joined": list(self.joined),
                "roster": [b64(c) for c in self.roster],
            }
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> EnrolAnswer:
        try:
            raw = json.loads(data)
            return cls(
                base64.b64decode(raw["certificate"]),
                base64.b64decode(raw["authority"]),
                base64.b64decode(raw["revocations"]),
                {str(k): base64.b64decode(v) for k, v in raw["group_keys"].items()},
                tuple(str(g) for g in raw["joined"]),
                tuple(base64.b64decode(c) for c in raw["roster"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvitationError(f"the enrolment answer is damaged: {exc}") from None
