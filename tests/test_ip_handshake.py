"""The IP link's enrolment handshake and authenticated records (sans-I/O, real crypto)."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto.certificate import Authority
from crypto.identity import Identity
from relay.links.ip_handshake import (
    MAX_HANDSHAKE_MESSAGE,
    Credentials,
    Established,
    HandshakeError,
    Initiator,
    Responder,
    Trust,
)
from relay.links.ip_records import (
    MAX_FRAME,
    RecordError,
    RecordKind,
    RecordsLost,
    SessionCipher,
    pack_frames,
    unpack_frames,
)

NOW = int(time.time())


def enrol(authority: Authority, name: str, expires: int = NOW + 3600, now: int = NOW) -> Credentials:
    identity = Identity.generate()
    certificate = authority.issue(identity.public, frozenset({"relay"}), name, expires, now=now)
    return Credentials(identity, certificate)


@pytest.fixture(scope="module")
def authority() -> Authority:
    return Authority.generate(now=NOW - 100_000)


def run_handshake(
    a: Credentials, b: Credentials, trust_a: Trust, trust_b: Trust
) -> tuple[Established, Established]:
    initiator, responder = Initiator(a, trust_a), Responder(b, trust_b)
    hello_r = responder.receive_hello(initiator.start(), NOW)
    auth, at_initiator = initiator.receive(hello_r, NOW)
    return at_initiator, responder.receive_auth(auth)


def test_both_sides_learn_the_peer_and_share_keys(authority: Authority) -> None:
    a, b = enrol(authority, "alpha"), enrol(authority, "bravo")
    trust = Trust(authority.public, authority.revocations)
    at_a, at_b = run_handshake(a, b, trust, trust)
    assert at_a.peer_node_id == b.identity.node_id
    assert at_b.peer_node_id == a.identity.node_id
    record = at_a.cipher.seal(RecordKind.DATA, b"hello")
    assert at_b.cipher.open(record) == (RecordKind.DATA, b"hello")
    reply = at_b.cipher.seal(RecordKind.PING, b"\x00" * 8)
    assert at_a.cipher.open(reply) == (RecordKind.PING, b"\x00" * 8)


def test_stranger_from_another_authority_is_refused(authority: Authority) -> None:
    stranger = enrol(Authority.generate(now=NOW - 10), "stranger")
    member = enrol(authority, "member")
    trust = Trust(authority.public, authority.revocations)
    with pytest.raises(HandshakeError, match="another deployment authority"):
        Responder(member, trust).receive_hello(Initiator(stranger, trust).start(), NOW)
    initiator = Initiator(member, trust)
    with pytest.raises(HandshakeError, match="another deployment authority"):
        initiator.receive(Responder(stranger, trust).receive_hello(initiator.start(), NOW), NOW)


def test_revoked_and_expired_certificates_are_refused() -> None:
    authority = Authority.generate(now=NOW - 100_000)
    member = enrol(authority, "member")
    revoked = enrol(authority, "revoked")
    expired = enrol(authority, "expired", expires=NOW - 50_000, now=NOW - 90_000)
    authority.revoke(revoked.identity.node_id, "lost in the field", now=NOW - 10)
    trust = Trust(authority.public, authority.revocations)
    with pytest.raises(HandshakeError, match="revoked"):
        Responder(member, trust).receive_hello(Initiator(revoked, trust).start(), NOW)
    with pytest.raises(HandshakeError, match="expired"):
        Responder(member, trust).receive_hello(Initiator(expired, trust).start(), NOW)


def test_stolen_certificate_without_its_key_fails_the_signature(authority: Authority) -> None:
    victim, member = enrol(authority, "victim"), enrol(authority, "member2")
    trust = Trust(authority.public, authority.revocations)
    thief = object.__new__(Credentials)  # a hostile peer: the victim's certificate, another key
    object.__setattr__(thief, "identity", Identity.generate())
    object.__setattr__(thief, "certificate", victim.certificate)
    responder = Responder(member, trust)
    hello_r = responder.receive_hello(Initiator(thief, trust).start(), NOW)
    assert hello_r  # the responder cannot tell yet: the proof is the signature in AUTH
    initiator = Initiator(thief, trust)
    responder = Responder(member, trust)
    auth, _ = initiator.receive(responder.receive_hello(initiator.start(), NOW), NOW)
    with pytest.raises(HandshakeError, match="does not hold its key"):
        responder.receive_auth(auth)
    # and as a responder, the thief's HELLO_R signature fails at the initiator
    honest = Initiator(member, trust)
    with pytest.raises(HandshakeError, match="does not hold its key"):
        honest.receive(Responder(thief, trust).receive_hello(honest.start(), NOW), NOW)


def test_replayed_auth_from_an_old_handshake_is_refused(authority: Authority) -> None:
    a, b = enrol(authority, "a3"), enrol(authority, "b3")
    trust = Trust(authority.public, authority.revocations)
    initiator, responder = Initiator(a, trust), Responder(b, trust)
    hello_i = initiator.start()
    auth, _ = initiator.receive(responder.receive_hello(hello_i, NOW), NOW)
    responder.receive_auth(auth)
    fresh = Responder(b, trust)  # a recorded HELLO_I + AUTH_I against a fresh challenge
    fresh.receive_hello(hello_i, NOW)
    with pytest.raises(HandshakeError, match="does not hold its key"):
        fresh.receive_auth(auth)


def test_records_refuse_replay_reorder_and_tampering() -> None:
    sender, receiver = SessionCipher(b"k" * 32, b"r" * 32), SessionCipher(b"r" * 32, b"k" * 32)
    first, second = sender.seal(RecordKind.DATA, b"one"), sender.seal(RecordKind.DATA, b"two")
    with pytest.raises(RecordError, match="expected 0"):
        receiver.open(second)
    assert receiver.open(first) == (RecordKind.DATA, b"one")
    with pytest.raises(RecordError, match="replay"):
        receiver.open(first)
    tampered = bytearray(second)
    tampered[-1] ^= 1
    with pytest.raises(RecordError, match="authentication"):
        receiver.open(bytes(tampered))
    assert receiver.open(second) == (RecordKind.DATA, b"two")  # a refused record changes nothing


def test_an_authentic_record_after_a_gap_says_records_were_lost() -> None:
    sender, receiver = SessionCipher(b"k" * 32, b"r" * 32), SessionCipher(b"r" * 32, b"k" * 32)
    first, _lost, third = (sender.seal(RecordKind.ACK, b"%d" % n) for n in range(3))
    assert receiver.open(first) == (RecordKind.ACK, b"0")
    with pytest.raises(RecordsLost, match="counter 2, expected 1: 1 lost"):
        receiver.open(third)
    forged = bytearray(third)  # a record ahead that is not the peer's: refused as before
    forged[-1] ^= 1
    with pytest.raises(RecordError, match="replay or injection") as refused:
        receiver.open(bytes(forged))
    assert not isinstance(refused.value, RecordsLost)
    assert receiver.opened == 1


@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=50))
def test_frames_round_trip(frames: list[bytes]) -> None:
    assert unpack_frames(pack_frames(frames)) == frames


@given(st.binary(max_size=2000))
def test_hostile_batches_are_refused_with_record_error(body: bytes) -> None:
    try:
        frames = unpack_frames(body)
    except RecordError:
        return
    assert pack_frames(frames) == body


def test_oversized_frame_and_batch_are_refused() -> None:
    with pytest.raises(RecordError):
        pack_frames([b"x" * (MAX_FRAME + 1)])
    with pytest.raises(RecordError, match="frame length"):
        unpack_frames((MAX_FRAME + 1).to_bytes(4, "big") + b"x" * 10)
    with pytest.raises(RecordError, match="exceeds"):
        SessionCipher(b"a" * 32, b"b" * 32).open(b"\x01" * 300_000)


@pytest.fixture(scope="module")
def fuzz_pair(authority: Authority) -> tuple[Credentials, Credentials]:
    """Enrolled once: enrolling per example would fill the roster and hit short-id collisions."""
    return enrol(authority, "fuzzed"), enrol(authority, "peer")


def check_hostile_handshake_bytes(
    authority: Authority, pair: tuple[Credentials, Credentials], data: bytes, which: int
) -> None:
    member, peer = pair
    trust = Trust(authority.public, authority.revocations)
    with pytest.raises(HandshakeError):
        if which == 0:
            Responder(member, trust).receive_hello(data, NOW)
        elif which == 1:
            Initiator(member, trust).receive(data, NOW)
        else:
            responder = Responder(member, trust)
            responder.receive_hello(Initiator(peer, trust).start(), NOW)
            responder.receive_auth(data)


HOSTILE = (st.binary(max_size=MAX_HANDSHAKE_MESSAGE + 10), st.integers(0, 2))
FIXTURES_OK = [HealthCheck.function_scoped_fixture]


@settings(max_examples=300, suppress_health_check=FIXTURES_OK)
@given(*HOSTILE)
def test_fuzz_hostile_handshake_bytes_raise_handshake_error(
    authority: Authority, fuzz_pair: tuple[Credentials, Credentials], data: bytes, which: int
) -> None:
    check_hostile_handshake_bytes(authority, fuzz_pair, data, which)


@pytest.mark.long
@settings(max_examples=10_000, deadline=None, suppress_health_check=FIXTURES_OK)
@given(*HOSTILE)
def test_fuzz_hostile_handshake_bytes_long(
    authority: Authority, fuzz_pair: tuple[Credentials, Credentials], data: bytes, which: int
) -> None:
    check_hostile_handshake_bytes(authority, fuzz_pair, data, which)


@pytest.mark.long
@settings(max_examples=50_000, deadline=None)
@given(st.binary(max_size=5000))
def test_fuzz_hostile_batches_long(body: bytes) -> None:
    test_hostile_batches_are_refused_with_record_error.hypothesis.inner_test(body)  # type: ignore[attr-defined]


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 10_000), st.integers(1, 255))
def test_every_flipped_byte_in_a_real_hello_is_refused(
    authority: Authority, fuzz_pair: tuple[Credentials, Credentials], position: int, flip: int
) -> None:
    a, b = fuzz_pair
    trust = Trust(authority.public, authority.revocations)
    initiator, responder = Initiator(a, trust), Responder(b, trust)
    hello_r = bytearray(responder.receive_hello(initiator.start(), NOW))
    hello_r[position % len(hello_r)] ^= flip
    with pytest.raises(HandshakeError):
        initiator.receive(bytes(hello_r), NOW)
