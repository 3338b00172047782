"""A running node learns the certificate of a device enrolled after it started, and nothing else.

The unit tests hold :meth:`TrustStore.learn` to its rules: only an authority-signed, unexpired,
unrevoked certificate is learned, an older one never replaces a newer one, a short id already taken
is refused, and the count is bounded. The process test runs two real relay processes over a real IP
link on 127.0.0.1, the command post started without the relay's certificate in its roster: the
relay's message reaches the post's journal, the certificate is in the post's roster on disk, and
after a restart the post reads it from there instead of learning it again.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from crypto.certificate import Authority, Certificate
from crypto.errors import CertificateError, ExpiredError, RevokedError
from crypto.identity import Identity
from field.harness import journal_messages, running_field, send_many
from field.processes import FieldNode
from relay.bundle import SHORT_ID_LEN, to_epoch
from relay.daemon import ROSTER_DIR, load_roster
from relay.trust import MAX_LEARNED, LearnRefusedError, TrustStore

DAY = 86_400
ROLES = frozenset({"responder"})
# Seconds; loose because the 2-core test machine is shared (a reconnect after the
# post's restart waits up to the IP link's reconnect_max of 10 s).
DELIVERY_BOUND_S = 45


def _now() -> float:
    return to_epoch(time.time())


def _issue(
    authority: Authority, identity: Identity, name: str = "responder-9", days: int = 30
) -> Certificate:
    now = int(time.time())
    return authority.issue(identity.public, ROLES, name, now + days * DAY, now=now)


def _issuer(authority: Authority) -> Authority:
    """The same authority key with an empty roster: it signs without refusing a short id it has
    seen, as a careless or compromised authority would."""
    return Authority(authority.identity, (), authority.revocations)


def test_a_copy_believes_the_same_and_learns_on_its_own() -> None:
    authority = Authority.generate()
    known = _issue(authority, Identity.generate(), "responder-1")
    trust = TrustStore(authority.public, [known], groups=["g"])
    trust.learn(_issue(authority, Identity.generate(), "responder-2"), _now())
    learned: list[Certificate] = []
    trust.on_learned(learned.append)
    context = trust.compact_context()
    copy = trust.copy()
    assert copy.certificates() == trust.certificates() and copy.groups == trust.groups
    assert copy.find(known.node_id[:SHORT_ID_LEN]) is known
    assert copy.compact_context() is context  # kept while no certificate is held anew
    new = _issue(authority, Identity.generate(), "responder-3")
    assert copy.learn(new, _now()) is True
    assert trust.find(new.node_id) is None and not learned  # the original neither holds it nor hears of it
    assert new.node_id[:SHORT_ID_LEN] in copy.compact_context().nodes
    assert trust.compact_context() is context
    assert trust.learn(new, _now()) is True  # and still learns it itself


def test_learns_an_authority_signed_certificate_once_and_tells_the_listeners() -> None:
    authority = Authority.generate()
    trust = TrustStore(authority.public)
    learned: list[Certificate] = []
    trust.on_learned(learned.append)
    identity = Identity.generate()
    certificate = _issue(authority, identity)

    assert trust.learn(certificate, _now()) is True
    assert trust.check(identity.node_id, _now()) == identity.public
    assert learned == [certificate]
    assert identity.node_id[:SHORT_ID_LEN] in trust.compact_context().nodes

    assert trust.learn(certificate, _now()) is False  # held already: nothing new, no callback
    assert learned == [certificate]


def test_a_renewed_certificate_replaces_the_old_one_but_never_the_reverse() -> None:
    authority = Authority.generate()
    identity = Identity.generate()
    first = _issue(authority, identity, days=1)
    renewed = _issue(authority, identity, days=60)
    assert renewed.serial > first.serial
    trust = TrustStore(authority.public)
    learned: list[Certificate] = []
    trust.on_learned(learned.append)

    assert trust.learn(first, _now()) is True
    assert trust.learn(renewed, _now()) is True
    assert trust.learn(first, _now()) is False  # presenting the older one does not bring it back
    assert trust.certificate(identity.node_id) == renewed
    assert learned == [first, renewed]


def test_outsider_expired_and_revoked_certificates_are_not_learned() -> None:
    authority = Authority.generate()
    outsider_authority = Authority.generate()
    trust = TrustStore(authority.public)
    learned: list[Certificate] = []
    trust.on_learned(learned.append)

    outsider = _issue(outsider_authority, Identity.generate(), "outsider")
    with pytest.raises(CertificateError):
        trust.learn(outsider, _now())

    now = int(time.time())
    expired = authority.issue(Identity.generate().public, ROLES, "expired", now - 10, now=now - DAY)
    with pytest.raises(ExpiredError):
        trust.learn(expired, _now())

    lost = Identity.generate()
    lost_certificate = _issue(authority, lost, "lost phone")
    assert trust.update_revocations(authority.revoke(lost.node_id, "lost"))
    with pytest.raises(RevokedError):
        trust.learn(lost_certificate, _now())

    assert learned == []
    for certificate in (outsider, expired, lost_certificate):
        assert trust.certificate(certificate.node_id) is None


def test_a_learned_certificate_revoked_later_is_no_longer_trusted() -> None:
    authority = Authority.generate()
    trust = TrustStore(authority.public)
    identity = Identity.generate()
    certificate = _issue(authority, identity)
    assert trust.learn(certificate, _now())

    assert trust.update_revocations(authority.revoke(identity.node_id, "radio lost"))
    with pytest.raises(RevokedError):
        trust.check(identity.node_id, _now())
    assert trust.learn(certificate, _now()) is False  # presenting it again changes nothing
    with pytest.raises(RevokedError):
        trust.check(identity.node_id, _now())


def test_a_short_id_already_taken_is_refused() -> None:
    """Two identities whose node ids share their first 3 bytes (found by drawing keys; a birthday
    collision in 2^24 takes about 5000): the second certificate would make LoRa short ids ambiguous."""
    authority = Authority.generate()
    seen: dict[bytes, Identity] = {}
    for _ in range(200_000):
        identity = Identity.generate()
        other = seen.setdefault(identity.node_id[:SHORT_ID_LEN], identity)
        if other is not identity:
            break
    else:
        raise AssertionError("no short id collision in 200000 identities")
    trust = TrustStore(authority.public, [_issue(_issuer(authority), other, "first")])

    with pytest.raises(LearnRefusedError, match="short id"):
        trust.learn(_issue(_issuer(authority), identity, "second"), _now())
    assert trust.certificate(identity.node_id) is None
    trust.compact_context()  # still unambiguous


def test_learning_is_bounded() -> None:
    authority = Authority.generate()
    trust = TrustStore(authority.public)
    shorts: set[bytes] = set()
    learned = 0
    started = time.monotonic()
    while learned < MAX_LEARNED:
        identity = Identity.generate()
        if identity.node_id[:SHORT_ID_LEN] in shorts:
            continue  # the authority would not have issued it
        shorts.add(identity.node_id[:SHORT_ID_LEN])
        assert trust.learn(_issue(_issuer(authority), identity, f"unit-{learned}"), _now())
        learned += 1
    assert time.monotonic() - started < 30
    while True:
        identity = Identity.generate()
        if identity.node_id[:SHORT_ID_LEN] not in shorts:
            break
    with pytest.raises(LearnRefusedError, match=f"{MAX_LEARNED} already learned"):
        trust.learn(_issue(_issuer(authority), identity, "one too many"), _now())
    assert len(trust.certificates()) == MAX_LEARNED


def _learned_lines(log: Path) -> list[str]:
    lines = []
    for line in log.read_text().splitlines():
        try:
            message = str(json.loads(line).get("message", ""))
        except json.JSONDecodeError:
            message = line
        if "learned and saved" in message:
            lines.append(message)
    return lines


def _wait_for_text(post: FieldNode, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(message[2] == text for message in journal_messages(post)):
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in the command post's journal within {timeout} s")


def test_post_learns_a_relay_missing_from_its_roster_and_keeps_it(tmp_path: Path) -> None:
    with running_field(tmp_path, ("command-post", "relay-1"), started=()) as field:
        post, relay = field.node("command-post"), field.node("relay-1")
        relay_id = bytes.fromhex(field.node_id("relay-1"))
        missing = post.directory / ROSTER_DIR / f"{relay_id.hex()}.cert"
        relay_certificate = missing.read_bytes()
        missing.unlink()  # the post starts without the relay's certificate
        assert relay_id not in {c.node_id for c in load_roster(post.directory / ROSTER_DIR)}
        field.start_healthy("command-post")
        field.start_healthy("relay-1")
        to_post = f"node:{field.node_id('command-post')}"

        asyncio.run(send_many(relay, field.token, to_post, ["first from a stranger"]))
        _wait_for_text(post, "first from a stranger", DELIVERY_BOUND_S)
        assert missing.read_bytes() == relay_certificate  # persisted into the post's roster
        post_log = tmp_path / "logs" / "command-post.log"
        assert len(_learned_lines(post_log)) == 1

        field.stop("command-post")  # the restarted post reads the certificate from its roster
        field.start_healthy("command-post")
        asyncio.run(send_many(relay, field.token, to_post, ["after the restart"]))
        _wait_for_text(post, "after the restart", DELIVERY_BOUND_S)
        assert len(_learned_lines(post_log)) == 1  # not learned again: it came from the roster
