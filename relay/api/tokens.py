"""Operator tokens for the relay API, issued by the deployment authority.

A token binds an API session to an enrolled operator identity: it carries the operator's enrolment
certificate (node id, roles, name) and an expiry, signed by the authority. The API verifies both the
token signature and the certificate (authority, revocation list, expiry) on every request (the
signatures once per token, :class:`TokenVerifier`), so revoking an operator's certificate locks it
out at once, token or not.

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
CACHED_TOKENS = 256  # tokens whose signatures a TokenVerifier remembers


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
    return _verify(token, authority, revocations, now)[0]


def _verify(
    token: str, authority: PublicIdentity, revocations: RevocationList | None, now: int
) -> tuple[Operator, Certificate]:
    """The operator and its certificate (which keeps its own signature check, see
    :meth:`Certificate.verify`)."""
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
    _check_expiry(expires, now)
    return Operator(certificate.node_id, certificate.name, certificate.roles, expires), certificate


def _check_expiry(expires: int, now: int) -> None:
    if now >= expires:
        raise TokenError("token has expired; ask the authority for a new one (mesh112 authority token)")


class TokenVerifier:
    """:func:`verify_token` for a server that sees the same few tokens on every request: the two
    signature checks (the token's, its certificate's) are done once per token and remembered, for
    the :data:`CACHED_TOKENS` most recent; expiry and the revocation list are checked every time,
    so revoking an operator still locks it out at once. Saves about 0.2 ms per request."""

    def __init__(self, authority: PublicIdentity) -> None:
        self._authority = authority
        self._verified: dict[str, tuple[Operator, Certificate]] = {}

    def verify(self, token: str, revocations: RevocationList | None, now: int) -> Operator:
        known = self._verified.get(token)
        if known is None:
            known = _verify(token, self._authority, revocations, now)
            if len(self._verified) >= CACHED_TOKENS:
                del self._verified[next(iter(self._verified))]  # the oldest
            self._verified[token] = known
        operator, certificate = known
        try:
            certificate.verify(self._authority, now, revocations)  # expiry, revocation: no signature
        except CryptoError as exc:
            raise TokenError(f"token refused: {exc}") from None
        _check_expiry(operator.expires, now)
        return operator
