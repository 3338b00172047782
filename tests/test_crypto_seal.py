"""Compact, standard and group sealing; group key rotation; replay protection."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.certificate import Authority
from crypto.errors import DecodeError, ReplayError, SealError, StaleEpochError
from crypto.group import (
    EPOCH_GRACE_S,
    GROUP_OVERHEAD,
    GroupKey,
    GroupKeyManager,
    GroupKeyring,
    open_group,
    seal_group,
    unwrap_group_key,
    wrap_group_key,
)
from crypto.identity import Identity
from crypto.replay import ReplayGuard
from crypto.seal import (
    COMPACT_OVERHEAD,
    COMPACT_TAGGED_OVERHEAD,
    STANDARD_OVERHEAD_MAC,
    STANDARD_OVERHEAD_SIGNED,
    SealContext,
    open_compact,
    open_standard,
    seal_compact,
    seal_standard,
)

ALICE, BOB, EVE = Identity.generate(), Identity.generate(), Identity.generate()
BUNDLE_ID = bytes(range(22))
AAD = b"M112 header fields"


def _flips(data: bytes) -> list[bytes]:
    out = []
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01
        out.append(bytes(bad))
    return out


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=40), st.binary(min_size=1, max_size=64))
def test_compact_round_trip(plaintext: bytes, aad: bytes, nonce_input: bytes) -> None:
    sealed = seal_compact(ALICE, BOB.public, nonce_input, aad, plaintext)
    assert len(sealed) == len(plaintext) + COMPACT_OVERHEAD
    assert open_compact(BOB, ALICE.public, nonce_input, aad, sealed) == plaintext


def test_compact_overhead_is_within_the_lora_budget() -> None:
    assert COMPACT_OVERHEAD <= 32
    assert GROUP_OVERHEAD <= 32


def test_compact_tampering_wrong_parties_and_inputs_are_refused() -> None:
    sealed = seal_compact(ALICE, BOB.public, BUNDLE_ID, AAD, b"SOS at gate 3")
    for bad in _flips(sealed):
        with pytest.raises(SealError):
            open_compact(BOB, ALICE.public, BUNDLE_ID, AAD, bad)
    for bad_aad in _flips(AAD):
        with pytest.raises(SealError):
            open_compact(BOB, ALICE.public, BUNDLE_ID, bad_aad, sealed)
    for bad_id in _flips(BUNDLE_ID):
        with pytest.raises(SealError):
            open_compact(BOB, ALICE.public, bad_id, AAD, sealed)
    with pytest.raises(SealError):  # wrong recipient
        open_compact(EVE, ALICE.public, BUNDLE_ID, AAD, sealed)
    with pytest.raises(SealError):  # claimed sender is someone else
        open_compact(BOB, EVE.public, BUNDLE_ID, AAD, sealed)
    with pytest.raises(SealError):  # reflected back to the sender: keys are per direction
        open_compact(ALICE, BOB.public, BUNDLE_ID, AAD, sealed)
    with pytest.raises(SealError):
        open_compact(BOB, ALICE.public, BUNDLE_ID, AAD, sealed[: COMPACT_OVERHEAD - 1])


def test_seal_context_caches_pair_keys_and_interoperates() -> None:
    alice, bob = SealContext(ALICE, max_peers=2), SealContext(BOB)
    for seq in range(5):
        nonce_input = BUNDLE_ID[:-1] + bytes((seq,))
        sealed = alice.seal_compact(BOB.public, nonce_input, AAD, b"x" * seq)
        assert bob.open_compact(ALICE.public, nonce_input, AAD, sealed) == b"x" * seq
        assert open_compact(BOB, ALICE.public, nonce_input, AAD, sealed) == b"x" * seq
    for _ in range(4):
        alice.seal_compact(Identity.generate().public, BUNDLE_ID, AAD, b"")
    assert len(alice._keys) == 2  # bounded


@pytest.mark.parametrize("sign", [False, True])
def test_standard_round_trip_overhead_and_tampering(sign: bool) -> None:
    plaintext = b"order: evacuate sector B"
    sealed = seal_standard(ALICE, BOB.public, AAD, plaintext, sign)
    overhead = STANDARD_OVERHEAD_SIGNED if sign else STANDARD_OVERHEAD_MAC
    assert len(sealed) == len(plaintext) + overhead
    assert open_standard(BOB, ALICE.public, AAD, sealed) == plaintext
    for bad in _flips(sealed):
        with pytest.raises(SealError):
            open_standard(BOB, ALICE.public, AAD, bad)
    with pytest.raises(SealError):
        open_standard(BOB, ALICE.public, AAD + b"!", sealed)
    with pytest.raises(SealError):
        open_standard(EVE, ALICE.public, AAD, sealed)
    with pytest.raises(SealError):
        open_standard(BOB, EVE.public, AAD, sealed)
    for cut in (0, 10, len(sealed) - 1):
        with pytest.raises(SealError):
            open_standard(BOB, ALICE.public, AAD, sealed[:cut])


def test_tagged_compact_seal_round_trip_overhead_and_tampering() -> None:
    """The compact seal for bundles of any size: 25 bytes on 10 kB, every bit and input bound."""
    alice, bob = SealContext(ALICE), SealContext(BOB)
    plaintext = bytes(range(256)) * 40
    sealed = alice.seal_compact_tagged(BOB.public, BUNDLE_ID, AAD, plaintext)
    assert len(sealed) == len(plaintext) + COMPACT_TAGGED_OVERHEAD == len(plaintext) + 25
    assert bob.open_tagged(ALICE.public, BUNDLE_ID, AAD, sealed) == plaintext
    short = alice.seal_compact_tagged(BOB.public, BUNDLE_ID, AAD, b"status: all units clear")
    for bad in _flips(short):  # the mode byte too: flipped, it names a standard seal that fails
        with pytest.raises(SealError):
            bob.open_tagged(ALICE.public, BUNDLE_ID, AAD, bad)
    for bad_aad in _flips(AAD):
        with pytest.raises(SealError):
            bob.open_tagged(ALICE.public, BUNDLE_ID, bad_aad, sealed)
    for bad_id in _flips(BUNDLE_ID):
        with pytest.raises(SealError):
            bob.open_tagged(ALICE.public, bad_id, AAD, sealed)
    with pytest.raises(SealError):  # wrong recipient
        SealContext(EVE).open_tagged(ALICE.public, BUNDLE_ID, AAD, sealed)
    with pytest.raises(SealError):  # an outsider's seal to Bob, claiming to be Alice
        bob.open_tagged(
            ALICE.public,
            BUNDLE_ID,
            AAD,
            SealContext(EVE).seal_compact_tagged(BOB.public, BUNDLE_ID, AAD, plaintext),
        )
    with pytest.raises(SealError):  # reflected back to the sender: keys are per direction
        alice.open_tagged(BOB.public, BUNDLE_ID, AAD, sealed)


@pytest.mark.parametrize("sign", [False, True])
def test_open_tagged_still_opens_standard_seals(sign: bool) -> None:
    """Bundles sealed before the tagged compact seal (standard MAC above 172 B) keep opening."""
    plaintext = b"order: evacuate sector B " * 20
    sealed = seal_standard(ALICE, BOB.public, AAD, plaintext, sign)
    assert SealContext(BOB).open_tagged(ALICE.public, BUNDLE_ID, AAD, sealed) == plaintext
    with pytest.raises(SealError):
        SealContext(BOB).open_tagged(EVE.public, BUNDLE_ID, AAD, sealed)


def test_standard_signed_record_is_provable_to_a_third_party() -> None:
    sealed = seal_standard(ALICE, BOB.public, AAD, b"alarm acknowledged", sign=True)
    proof = SealContext(BOB).open_standard_proof(ALICE.public, AAD, sealed)
    proof.verify(ALICE.public)  # anyone with Alice's public key
    assert proof.plaintext == b"alarm acknowledged"
    unsigned = SealContext(BOB).open_standard_proof(
        ALICE.public, AAD, seal_standard(ALICE, BOB.public, AAD, b"x", sign=False)
    )
    assert unsigned.signature is None


def test_an_outsider_cannot_forge_a_standard_seal_by_encrypting_to_the_recipient() -> None:
    """HPKE base mode alone lets anyone encrypt to Bob; the MAC or signature must catch Eve."""
    forged_mac = seal_standard(EVE, BOB.public, AAD, b"fake order", sign=False)
    forged_sig = seal_standard(EVE, BOB.public, AAD, b"fake order", sign=True)
    for forged in (forged_mac, forged_sig):
        with pytest.raises(SealError):
            open_standard(BOB, ALICE.public, AAD, forged)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_opening_random_bytes_raises_only_seal_error(data: bytes) -> None:
    for opener in (
        lambda: open_compact(BOB, ALICE.public, BUNDLE_ID, AAD, data),
        lambda: open_standard(BOB, ALICE.public, AAD, data),
        lambda: SealContext(BOB).open_tagged(ALICE.public, BUNDLE_ID, AAD, data),
        lambda: open_group(GroupKeyring([GroupKey("g", 0, bytes(32))]), "g", BUNDLE_ID, AAD, data, 0.0),
    ):
        with pytest.raises(SealError):
            opener()


def test_group_seal_round_trip_and_tampering() -> None:
    key = GroupKey.generate("incident-42")
    ring = GroupKeyring([key])
    sealed = seal_group(key, BUNDLE_ID, AAD, b"all units: staging at north gate")
    assert len(sealed) == 32 + GROUP_OVERHEAD
    assert open_group(ring, "incident-42", BUNDLE_ID, AAD, sealed, 0.0).startswith(b"all units")
    for bad in _flips(sealed):
        with pytest.raises(SealError):
            open_group(ring, "incident-42", BUNDLE_ID, AAD, bad, 0.0)
    with pytest.raises(SealError):
        open_group(ring, "incident-43", BUNDLE_ID, AAD, sealed, 0.0)
    with pytest.raises(SealError):
        open_group(
            GroupKeyring([GroupKey.generate("incident-42")]), "incident-42", BUNDLE_ID, AAD, sealed, 0.0
        )


def test_group_key_wrapping_is_signed_by_the_issuer() -> None:
    key = GroupKey.generate("role:medic", 3)
    wrapped = wrap_group_key(ALICE, BOB.public, key)
    assert unwrap_group_key(BOB, ALICE.public, wrapped) == key
    with pytest.raises(SealError):
        unwrap_group_key(BOB, EVE.public, wrapped)
    with pytest.raises(SealError):
        unwrap_group_key(EVE, ALICE.public, wrapped)
    with pytest.raises(DecodeError):
        GroupKey.decode(key.encode() + b"x")


def test_revoked_member_cannot_read_after_rotation() -> None:
    authority = Authority.generate(now=1_800_000_000)
    members = {name: Identity.generate() for name in ("cp", "medic", "thief")}
    manager = GroupKeyManager(authority.identity)
    rings = {name: GroupKeyring() for name in members}
    for node_id, wrapped in manager.create("incident-7", [m.public for m in members.values()]).items():
        name = next(n for n, m in members.items() if m.node_id == node_id)
        rings[name].add(unwrap_group_key(members[name], authority.public, wrapped), 0.0)
    before = seal_group(manager.current("incident-7"), b"id-1", AAD, b"before")
    assert all(
        open_group(ring, "incident-7", b"id-1", AAD, before, 0.0) == b"before" for ring in rings.values()
    )

    revocations = authority.revoke(members["thief"].node_id, "phone stolen", now=1_800_000_100)
    rotations = manager.apply_revocations(revocations)
    assert set(rotations["incident-7"]) == {members["cp"].node_id, members["medic"].node_id}
    assert manager.current("incident-7").epoch == 1
    for name in ("cp", "medic"):
        wrapped = rotations["incident-7"][members[name].node_id]
        rings[name].add(unwrap_group_key(members[name], authority.public, wrapped), 100.0)
        with pytest.raises(SealError):  # the thief cannot open another member's wrapped key
            unwrap_group_key(members["thief"], authority.public, wrapped)
    after = seal_group(manager.current("incident-7"), b"id-2", AAD, b"after")
    assert open_group(rings["medic"], "incident-7", b"id-2", AAD, after, 100.0) == b"after"
    with pytest.raises(SealError, match="epoch 1"):
        open_group(rings["thief"], "incident-7", b"id-2", AAD, after, 100.0)
    assert manager.apply_revocations(revocations) == {}  # nothing more to rotate
    # The thief still holds epoch 0 and seals with it: members take that only within the grace.
    injected = seal_group(
        GroupKey("incident-7", 0, rings["thief"].get("incident-7", 0).key), b"id-3", AAD, b"x"
    )
    assert open_group(rings["medic"], "incident-7", b"id-3", AAD, injected, 100.0 + EPOCH_GRACE_S - 1) == b"x"
    with pytest.raises(StaleEpochError, match="replaced by epoch 1"):
        open_group(rings["medic"], "incident-7", b"id-3", AAD, injected, 100.0 + EPOCH_GRACE_S)


def test_only_the_newest_epoch_and_the_one_before_it_open() -> None:
    keys = [GroupKey.generate("incident-8", epoch) for epoch in range(3)]
    ring = GroupKeyring(grace_s=60.0)
    for at, key in enumerate(keys):
        ring.add(key, at * 1000.0)
    sealed = {key.epoch: seal_group(key, BUNDLE_ID, AAD, b"m") for key in keys}
    assert open_group(ring, "incident-8", BUNDLE_ID, AAD, sealed[2], 9e9) == b"m"
    assert open_group(ring, "incident-8", BUNDLE_ID, AAD, sealed[1], 2059.0) == b"m"
    with pytest.raises(StaleEpochError):  # past the grace
        open_group(ring, "incident-8", BUNDLE_ID, AAD, sealed[1], 2060.0)
    with pytest.raises(StaleEpochError):  # two epochs back: never, grace or not
        open_group(ring, "incident-8", BUNDLE_ID, AAD, sealed[0], 2000.0)


def test_a_repeated_bundle_id_never_repeats_a_nonce() -> None:
    """A node that lost its store repeats an id: the salt gives each seal its own nonce."""
    first = seal_compact(ALICE, BOB.public, BUNDLE_ID, AAD, b"alarm: smoke in hall 2")
    second = seal_compact(ALICE, BOB.public, BUNDLE_ID, AAD, b"alarm: fire in hall 2!")
    salt_len = COMPACT_OVERHEAD - 16
    assert first[:salt_len] != second[:salt_len]
    # With one nonce the two ciphertexts would XOR to the XOR of the plaintexts.
    xor = bytes(a ^ b for a, b in zip(first[salt_len:-16], second[salt_len:-16], strict=True))
    assert xor != bytes(
        a ^ b for a, b in zip(b"alarm: smoke in hall 2", b"alarm: fire in hall 2!", strict=True)
    )
    key = GroupKey.generate("g")
    assert seal_group(key, BUNDLE_ID, AAD, b"x")[2:10] != seal_group(key, BUNDLE_ID, AAD, b"x")[2:10]
    fixed = SealContext(ALICE, random=lambda n: bytes(n))  # the salt is what makes them differ
    assert fixed.seal_compact(BOB.public, BUNDLE_ID, AAD, b"a") == fixed.seal_compact(
        BOB.public, BUNDLE_ID, AAD, b"a"
    )


def test_replay_guard_refuses_repeats_and_out_of_lifetime() -> None:
    guard = ReplayGuard(max_entries=3, clock_skew=60)
    guard.check_and_remember(b"a", created=100, expires=200, now=150)
    with pytest.raises(ReplayError, match="already accepted"):
        guard.check_and_remember(b"a", created=100, expires=200, now=151)
    with pytest.raises(ReplayError, match="expired"):
        guard.check_and_remember(b"b", created=100, expires=150, now=150)
    with pytest.raises(ReplayError, match="future"):
        guard.check_and_remember(b"c", created=300, expires=400, now=150)
    guard.check_and_remember(b"d", created=100, expires=300, now=150)
    guard.check_and_remember(b"e", created=100, expires=300, now=150)
    with pytest.raises(ReplayError, match="full"):
        guard.check_and_remember(b"f", created=100, expires=300, now=150)
    guard.check_and_remember(b"f", created=100, expires=300, now=250)  # "a" expired and was forgotten
    assert len(guard) == 3
    with pytest.raises(ReplayError):  # forgotten ids stay refused by the lifetime check
        guard.check_and_remember(b"a", created=100, expires=200, now=250)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.binary(min_size=1, max_size=3), st.integers(0, 50), st.integers(1, 50)), max_size=60
    )
)
def test_replay_guard_memory_is_bounded_by_live_ids(events: list[tuple[bytes, int, int]]) -> None:
    guard = ReplayGuard()
    accepted: dict[bytes, int] = {}
    now = 0
    for id_key, step, lifetime in events:
        now += step
        expires = now + lifetime
        live = {k for k, e in accepted.items() if e > now}
        if id_key in live:
            with pytest.raises(ReplayError):
                guard.check_and_remember(id_key, now, expires, now)
        else:
            guard.check_and_remember(id_key, now, expires, now)
            accepted[id_key] = expires
        assert len(guard) <= len({k for k, e in accepted.items() if e > now})
