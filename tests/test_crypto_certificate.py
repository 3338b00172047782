"""Authority, certificates and revocation lists: round trips, tampering, expiry, revocation, hostile bytes."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.certificate import Authority, Certificate, RevocationList
from crypto.errors import (
    CertificateError,
    CryptoError,
    DecodeError,
    EnrolmentError,
    ExpiredError,
    RevokedError,
)
from crypto.identity import Identity, PublicIdentity, display_id

NOW = 1_800_000_000
DAY = 86_400


@pytest.fixture(scope="module")
def authority() -> Authority:
    return Authority.generate(now=NOW)


def _enrol(
    authority: Authority, name: str = "Engine 7", roles: frozenset[str] = frozenset({"responder"})
) -> Certificate:
    return authority.issue(Identity.generate().public, roles, name, NOW + DAY, now=NOW)


def test_identity_ids_and_display() -> None:
    one = Identity.generate()
    assert len(one.node_id) == 16
    assert one.node_id == one.public.node_id
    assert Identity.from_private_bytes(one.private_bytes()).public == one.public
    assert PublicIdentity.decode(one.public.encode()) == one.public
    full = display_id(one.node_id, full=True)
    assert len(full) == 26 and full == full.lower() and full.startswith(display_id(one.node_id))
    assert len(display_id(one.node_id)) == 8
    signature = one.sign(b"data")
    one.public.verify(signature, b"data")
    with pytest.raises(CertificateError):
        one.public.verify(signature, b"datA")
    with pytest.raises(CertificateError):
        Identity.generate().public.verify(signature, b"data")


def test_certificate_round_trip_and_verify(authority: Authority) -> None:
    cert = authority.issue(
        Identity.generate().public, frozenset({"dispatcher", "admin"}), "Command post Süd", NOW + DAY, now=NOW
    )
    again = Certificate.decode(cert.encode())
    assert again == cert
    assert again.roles == {"admin", "dispatcher"} and again.name == "Command post Süd"
    again.verify(authority.public, NOW + 10, authority.revocations)
    assert len(cert.encode()) < 220  # fits one LoRa frame


def test_certificate_tampering_of_every_byte_is_refused(authority: Authority) -> None:
    data = _enrol(authority).encode()
    for i in range(len(data)):
        for flip in (0x01, 0x80):
            bad = bytearray(data)
            bad[i] ^= flip
            with pytest.raises(CryptoError):
                Certificate.decode(bytes(bad)).verify(authority.public, NOW, authority.revocations)


def test_expired_revoked_and_foreign_certificates(authority: Authority) -> None:
    cert = _enrol(authority)
    with pytest.raises(ExpiredError, match="expired"):
        cert.verify(authority.public, NOW + DAY, None)
    other = Authority.generate(now=NOW)
    with pytest.raises(CertificateError, match="another deployment authority"):
        cert.verify(other.public, NOW, None)
    revocations = authority.revoke(cert.node_id, "radio lost", now=NOW + 5)
    with pytest.raises(RevokedError, match="radio lost"):
        cert.verify(authority.public, NOW + 10, revocations)
    # a revocation list not signed by this authority is refused, not trusted
    with pytest.raises(CertificateError):
        cert.verify(authority.public, NOW + 10, other.revocations)


def test_revocation_list_serials_and_round_trip() -> None:
    authority = Authority.generate(now=NOW)
    first = authority.revocations
    assert first.serial == 0 and not first.entries
    ids = [Identity.generate().node_id for _ in range(3)]
    for node_id in ids:
        authority.revoke(node_id, "compromised", now=NOW)
    latest = authority.revocations
    assert latest.serial == 3 and all(latest.is_revoked(node_id) for node_id in ids)
    assert latest.is_newer_than(first) and not first.is_newer_than(latest)
    assert authority.revoke(ids[0], "again", now=NOW) is latest  # idempotent
    decoded = RevocationList.decode(latest.encode())
    assert decoded == latest
    decoded.verify(authority.public)
    tampered = bytearray(latest.encode())
    tampered[-70] ^= 1
    with pytest.raises(CryptoError):
        RevocationList.decode(bytes(tampered)).verify(authority.public)


def test_revoked_node_cannot_be_enrolled_again() -> None:
    authority = Authority.generate(now=NOW)
    identity = Identity.generate()
    authority.issue(identity.public, frozenset({"relay"}), "Relay", NOW + DAY, now=NOW)
    authority.revoke(identity.node_id, "stolen", now=NOW)
    with pytest.raises(EnrolmentError, match="new identity"):
        authority.issue(identity.public, frozenset({"relay"}), "Relay", NOW + DAY, now=NOW)


def test_short_id_collision_is_refused() -> None:
    """Generate real identities until two share the 3-byte short id (about 5000 on average)."""
    authority = Authority.generate(now=NOW)
    seen: dict[bytes, PublicIdentity] = {}
    for _ in range(60_000):
        public = Identity.generate().public
        first = seen.setdefault(public.node_id[:3], public)
        if first is not public:
            break
    else:
        pytest.fail("no short id collision in 60000 identities")
    authority.issue(first, frozenset({"relay"}), "First", NOW + DAY, now=NOW)
    with pytest.raises(EnrolmentError, match="same short id as enrolled node 'First'"):
        authority.issue(public, frozenset({"relay"}), "Second", NOW + DAY, now=NOW)
    assert len(authority.roster) == 1
    # re-enrolling the same node (renewal) is fine
    renewed = authority.issue(first, frozenset({"relay"}), "First", NOW + 2 * DAY, now=NOW)
    assert renewed.serial == 2 and len(authority.roster) == 1


@pytest.mark.parametrize(
    ("roles", "name", "expires", "message"),
    [
        (frozenset({"Bad Role"}), "ok", NOW + DAY, "role"),
        (frozenset({"relay"}), "", NOW + DAY, "name"),
        (frozenset({"relay"}), "x" * 65, NOW + DAY, "name"),
        (frozenset({"relay"}), "ok", NOW - 1, "future"),
        (frozenset({"relay"}), "ok", 1 << 40, "1970-2106"),
    ],
)
def test_issue_refuses_bad_fields(roles: frozenset[str], name: str, expires: int, message: str) -> None:
    authority = Authority.generate(now=NOW)
    with pytest.raises(CertificateError, match=message):
        authority.issue(Identity.generate().public, roles, name, expires, now=NOW)


def test_authority_save_and_load(tmp_path) -> None:  # type: ignore[no-untyped-def]
    authority = Authority.generate(now=NOW)
    cert = _enrol(authority)
    authority.revoke(Identity.generate().node_id, "test", now=NOW)
    authority.save(tmp_path / "auth")
    assert (tmp_path / "auth" / "authority.key").stat().st_mode & 0o777 == 0o600
    loaded = Authority.load(tmp_path / "auth")
    assert loaded.public == authority.public
    assert loaded.roster == (cert,)
    assert loaded.revocations == authority.revocations
    assert loaded.find(display_id(cert.node_id)) == cert


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_certificate_decode_of_random_bytes_raises_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        Certificate.decode(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_revocation_list_decode_of_random_bytes_raises_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        RevocationList.decode(data)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_certificate_raises_only_crypto_errors(authority: Authority, data: st.DataObject) -> None:
    raw = bytearray(_CERT_BYTES.setdefault("cert", _enrol(authority).encode()))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "grow"]))
        if op == "flip" and raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del raw[data.draw(st.integers(0, len(raw))) :]
        else:
            raw += data.draw(st.binary(min_size=1, max_size=8))
    with contextlib.suppress(CryptoError):
        Certificate.decode(bytes(raw)).verify(authority.public, NOW, None)


_CERT_BYTES: dict[str, bytes] = {}


def test_oversized_inputs_are_refused_before_parsing() -> None:
    with pytest.raises(DecodeError, match="at most"):
        Certificate.decode(b"MC" + bytes(10_000))
    with pytest.raises(DecodeError, match="at most"):
        RevocationList.decode(b"MR" + bytes(1 << 20))
