"""SIP digest authentication of enrolled building panels (RFC 3261 §22, RFC 8760, RFC 7616), sans I/O.

The gateway challenges a MESSAGE that names an enrolled building with a secret and carries no
credentials (401 with one ``WWW-Authenticate`` per algorithm, SHA-256 first; MD5 stays offered
for panels and tools that know nothing else, as RFC 8760 §2.4 allows). Nonces are stateless: the
time they were issued and an HMAC of it under the gateway's key, valid for ``nonce_lifetime_s``.

What digest with ``qop=auth`` proves: the request came from someone holding the building's secret,
so a stranger cannot raise an alarm in the building's name. What it does not: the body is not
covered, and a captured header can be replayed with another body within the nonce's lifetime by an
on-path attacker. SIP over TLS closes that.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from ng112.errors import Ng112Error
from ng112.sip import split_comma_values

ALGORITHMS: dict[str, Callable[[bytes], hashlib._Hash]] = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5}
_MAX_HEADER = 2048


class DigestError(Ng112Error):
    """An Authorization header that cannot be read as SIP digest credentials."""


class Verdict(Enum):
    OK = "ok"
    STALE = "stale"  # right secret, nonce too old: challenge again with stale=true
    BAD = "bad"  # wrong secret, foreign realm or nonce, or a mangled response


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str = ""
    nc: str = ""
    cnonce: str = ""


def parse_authorization(value: str) -> Credentials:
    """``Digest username="a", realm="b", ...`` -> credentials; DigestError if unusable."""
    if len(value) > _MAX_HEADER:
        raise DigestError(f"Authorization header over {_MAX_HEADER} bytes")
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"authorization scheme {scheme[:20]!r} is not Digest")
    params: dict[str, str] = {}
    for item in split_comma_values(rest):
        key, sep, raw = item.partition("=")
        if not sep:
            raise DigestError(f"malformed digest parameter {item[:40]!r}")
        params[key.strip().lower()] = raw.strip().strip('"')
    missing = [k for k in ("username", "realm", "nonce", "uri", "response") if not params.get(k)]
    if missing:
        raise DigestError(f"digest credentials lack {', '.join(missing)}")
    algorithm = params.get("algorithm", "MD5").upper()
    if algorithm not in ALGORITHMS:
        raise DigestError(f"digest algorithm {algorithm[:20]!r} is not one of {', '.join(ALGORITHMS)}")
    return Credentials(
        params["username"],
        params["realm"],
        params["nonce"],
        params["uri"],
        params["response"].lower(),
        algorithm,
        params.get("qop", ""),
        params.get("nc", ""),
        params.get("cnonce", ""),
    )


def digest_response(credentials: Credentials, method: str, secret: str) -> str:
    """The response a panel holding ``secret`` computes for ``credentials`` (RFC 7616 §3.4.1)."""
    h = ALGORITHMS[credentials.algorithm]

    def hexdigest(text: str) -> str:
        return h(text.encode()).hexdigest()

    ha1 = hexdigest(f"{credentials.username}:{credentials.realm}:{secret}")
    ha2 = hexdigest(f"{method}:{credentials.uri}")
    if credentials.qop:
        c = credentials
        return hexdigest(f"{ha1}:{c.nonce}:{c.nc}:{c.cnonce}:{c.qop}:{ha2}")
    return hexdigest(f"{ha1}:{credentials.nonce}:{ha2}")


class DigestAuthenticator:
    """Issues challenges and checks credentials; keeps no per-nonce state."""

    def __init__(
        self,
        realm: str,
        key: bytes | None = None,
        algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
        nonce_lifetime_s: float = 300.0,
    ) -> None:
        unknown = [a for a in algorithms if a not in ALGORITHMS]
        if unknown or not algorithms:
            raise ValueError(f"digest algorithms must be among {', '.join(ALGORITHMS)}, not {unknown}")
        self.realm, self.algorithms, self.nonce_lifetime_s = realm, algorithms, nonce_lifetime_s
        self._key = key or secrets.token_bytes(32)

    def challenges(self, now: float, *, stale: bool = False) -> tuple[tuple[str, str], ...]:
        """``WWW-Authenticate`` headers for a 401, most preferred algorithm first."""
        nonce = self._nonce(int(now))
        extra = ", stale=true" if stale else ""
        return tuple(
            (
                "WWW-Authenticate",
                f'Digest realm="{self.realm}", nonce="{nonce}", algorithm={algorithm}, qop="auth"{extra}',
            )
            for algorithm in self.algorithms
        )

    def verify(self, credentials: Credentials, method: str, secret: str, now: float) -> Verdict:
        issued_text, _, _ = credentials.nonce.partition(".")
        if (
            credentials.realm != self.realm
            or credentials.algorithm not in self.algorithms
            or credentials.qop not in ("", "auth")
            or not issued_text.isdigit()
            or not hmac.compare_digest(credentials.nonce, self._nonce(int(issued_text)))
        ):
            return Verdict.BAD
        if not hmac.compare_digest(credentials.response, digest_response(credentials, method, secret)):
            return Verdict.BAD
        if not 0 <= now - int(issued_text) <= self.nonce_lifetime_s:
            return Verdict.STALE
        return Verdict.OK

    def _nonce(self, issued: int) -> str:
        tag = hmac.new(self._key, str(issued).encode(), hashlib.sha256).hexdigest()[:32]
        return f"{issued}.{tag}"
