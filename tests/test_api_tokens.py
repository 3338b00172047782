"""Operator tokens: the API's verifier checks a token's signatures once, then only what can change
(the revocation list, expiry), so a revoked or expired operator is still locked out at once."""

from __future__ import annotations

import pytest

from crypto.certificate import Authority
from crypto.identity import Identity, PublicIdentity
from relay.api.tokens import CACHED_TOKENS, TokenError, TokenVerifier, issue_token, verify_token

NOW = 1_800_000_000
DAY = 86_400


def _token(authority: Authority, expires: int = NOW + DAY) -> tuple[bytes, str]:
    operator = Identity.generate()
    certificate = authority.issue(
        operator.public, frozenset({"dispatcher"}), "Dispatcher", NOW + 2 * DAY, now=NOW
    )
    return certificate.node_id, issue_token(authority.identity, certificate, expires)


def test_a_known_token_is_not_verified_again_but_revocation_and_expiry_still_apply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    authority = Authority.generate(now=NOW)
    node_id, token = _token(authority)
    verifier = TokenVerifier(authority.public)
    first = verifier.verify(token, None, NOW)
    assert first == verify_token(token, authority.public, None, NOW)

    checks = 0
    verify = PublicIdentity.verify

    def counted(self: PublicIdentity, signature: bytes, message: bytes) -> None:
        nonlocal checks
        checks += 1
        verify(self, signature, message)

    monkeypatch.setattr(PublicIdentity, "verify", counted)
    assert verifier.verify(token, None, NOW + 60) == first
    assert checks == 0  # neither the token's nor its certificate's signature again

    revocations = authority.revoke(node_id, "badge lost", now=NOW + 100)
    with pytest.raises(TokenError, match="badge lost"):
        verifier.verify(token, revocations, NOW + 120)
    _, other = _token(authority)
    assert verifier.verify(other, revocations, NOW + 120).roles == {"dispatcher"}
    with pytest.raises(TokenError, match="expired"):
        verifier.verify(other, revocations, NOW + DAY)


def test_a_forged_token_is_refused_every_time_and_the_cache_stays_bounded() -> None:
    authority = Authority.generate(now=NOW)
    _, token = _token(authority)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    verifier = TokenVerifier(authority.public)
    for _ in range(2):
        with pytest.raises(TokenError):
            verifier.verify(forged, None, NOW)
    stranger = Authority.generate(now=NOW)
    _, foreign = _token(stranger)
    with pytest.raises(TokenError, match="refused"):
        verifier.verify(foreign, None, NOW)
    tokens = [_token(authority)[1] for _ in range(CACHED_TOKENS + 5)]
    for each in tokens:
        verifier.verify(each, None, NOW)
    assert len(verifier._verified) == CACHED_TOKENS
    assert verifier.verify(tokens[0], None, NOW).name == "Dispatcher"  # dropped, verified afresh
