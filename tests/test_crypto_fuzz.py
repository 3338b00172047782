"""Fuzz every crypto decoder and opener with mutated valid inputs: only the specific errors may escape.

A short pass runs by default; ``make fuzz`` runs the long one (``-m long -k fuzz``).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto.certificate import Authority, Certificate, RevocationList
from crypto.errors import CryptoError, DecodeError, KeyFileError, SealError
from crypto.group import GroupKey, GroupKeyring, open_group, seal_group, unwrap_group_key, wrap_group_key
from crypto.hop import HopAuth
from crypto.identity import Identity
from crypto.keyfile import decode_secret, encode_secret
from crypto.seal import open_compact, open_standard, seal_compact, seal_standard

NOW = 1_800_000_000
A, B = Identity.generate(), Identity.generate()
AUTHORITY = Authority.generate(now=NOW)
CERT = AUTHORITY.issue(A.public, frozenset({"relay", "responder"}), "Relay A", NOW + 99, now=NOW)
AUTHORITY.revoke(B.node_id, "test", now=NOW)
GROUP = GroupKey.generate("incident-9", 4)
RING = GroupKeyring([GROUP])
ID = bytes(22)
HOP_FRAME = b"\x25" + bytes(40)

TARGETS: dict[str, tuple[bytes, Callable[[bytes], object], type[CryptoError]]] = {
    "certificate": (
        CERT.encode(),
        lambda data: Certificate.decode(data).verify(AUTHORITY.public, NOW, None),
        CryptoError,
    ),
    "revocations": (
        AUTHORITY.revocations.encode(),
        lambda data: RevocationList.decode(data).verify(AUTHORITY.public),
        CryptoError,
    ),
    "compact": (
        seal_compact(A, B.public, ID, b"aad", b"payload"),
        lambda data: open_compact(B, A.public, ID, b"aad", data),
        SealError,
    ),
    "standard_mac": (
        seal_standard(A, B.public, b"aad", b"payload", sign=False),
        lambda data: open_standard(B, A.public, b"aad", data),
        SealError,
    ),
    "standard_signed": (
        seal_standard(A, B.public, b"aad", b"payload", sign=True),
        lambda data: open_standard(B, A.public, b"aad", data),
        SealError,
    ),
    "group": (
        seal_group(GROUP, ID, b"", b"payload"),
        lambda data: open_group(RING, "incident-9", ID, b"", data, 0.0),
        SealError,
    ),
    "group_key_wrap": (
        wrap_group_key(A, B.public, GROUP),
        lambda data: unwrap_group_key(B, A.public, data),
        CryptoError,
    ),
    "group_key_message": (GROUP.encode(), GroupKey.decode, DecodeError),
    "hop_tags": (  # a LoRa broadcast tagged for its addressee B and for A, which overhears it
        HopAuth(B).tag_many(B.public, [A.public], HOP_FRAME, 1000.0),
        lambda data: HopAuth(A).check_many(B.public, data, 1000.0),
        CryptoError,
    ),
    "key_file": (
        encode_secret(bytes(64), None),
        lambda data: decode_secret(data, None, "fuzz"),
        KeyFileError,
    ),
}


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    raw = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "grow", "splice"]))
        if op == "flip" and raw:
            raw[draw(st.integers(0, len(raw) - 1))] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del raw[draw(st.integers(0, len(raw))) :]
        elif op == "grow":
            raw += draw(st.binary(min_size=1, max_size=16))
        elif raw:
            at = draw(st.integers(0, len(raw) - 1))
            raw[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(raw)


def _fuzz(name: str, examples: int) -> None:
    original, target, allowed = TARGETS[name]

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(mutated(original))
    def check(data: bytes) -> None:
        if data == original:
            return
        try:
            result = target(data)
        except allowed:
            return
        if isinstance(result, GroupKey):  # unauthenticated message: it must at least be canonical
            assert result.encode() == data
        elif name == "hop_tags":  # B's tag is not A's to check: only the frame A's tag covers counts
            assert result == (HOP_FRAME, False), data.hex()
        else:  # authenticated: no mutation may be accepted
            pytest.fail(f"mutated {name} was accepted: {data.hex()}")

    check()


@pytest.mark.parametrize("name", TARGETS)
def test_fuzz_short(name: str) -> None:
    _fuzz(name, 60)


@pytest.mark.long
@pytest.mark.parametrize("name", TARGETS)
def test_fuzz_long(name: str) -> None:
    _fuzz(name, 5_000)
