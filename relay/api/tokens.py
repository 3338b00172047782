"""Operator tokens for the relay API, issued by the deployment authority.

A token binds an API session to an enrolled operator identity: it carries the operator's enrolment
certificate (node id, roles, name) and an expiry, signed by the authority. The API verifies both the
token signature and the certificate (authority, revocation list, expiry) on every request, so
revoking an operator's certificate locks it out at once, token or not.

Format: ``m112.<base64url certificate>.<base64url expiry(u32) + signature(64)>``.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass

from crypto.certificate import Certificate, RevocationList
from crypto.errors import CryptoError
from crypto.identity import Identity, PublicIdentity, display_id

_TAG = b"mesh112-api-token-v1"
_PREFIX = "m112"
MAX_TOKEN_LEN = 2048


class TokenError(Exception):
    """A token that does not let its bearer in; the message says why (shown in the 401 body)."""


@dataclass(frozen=True, slots=True)
class Operator:
    node_id: bytes
    name: str
    roles: frozenset[str]
    expires: int

    @property
    def display(self) -> str:
        return f"{self.name} ({display_id(self.node_id)})"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(authority: Identity, certificate: Certificate, expires: int) -> str:
    cert = certificate.encode()
    tail = struct.pack(">I", expires)
    signature = authority.sign(_TAG + cert + tail)
    return f"{_PREFIX}.{_b64(cert)}.{_b64(tail + signature)}"


def verify_token(
    token: str, authority: PublicIdentity, revocations: RevocationList | None, now: int
) -> Operator:
    if len(token) > MAX_TOKEN_LEN:
        raise TokenError("token is too long")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != _PREFIX:
        raise TokenError("not a Mesh112 API token (expected m112.<certificate>.<signature>)")
    try:
        cert_bytes, tail = _unb64(parts[1]), _unb64(parts[2])
    except (binascii.Error, ValueError):
        raise TokenError("token is not valid base64url") from None
    if len(tail) != 4 + 64:
        raise TokenError("token signature has the wrong length")
    try:
        authority.verify(tail[4:], _TAG + cert_bytes + tail[:4])
        certificate = Certificate.decode(cert_bytes)
        certificate.verify(authority, now, revocations)
    except CryptoError as exc:
        raise TokenError(f"token refused: {exc}") from None
    (expires,) = struct.unpack(">I", tail[:4])
    if now >= expires:
        raise TokenError("token has expired; ask the authority for a new one (mesh112 authority token)")
    return Operator(certificate.node_id, certificate.name, certificate.roles, expires)
