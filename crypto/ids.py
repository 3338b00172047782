"""Unpredictable bundle sequence numbers: a keyed permutation of the store's 16-bit counter.

A bundle id is (origin, creation second, sequence). With the sequence counting from 0 each second,
anyone could name the next id of any node and send a bundle with it first; relays deduplicate on the
id, so the real one would be taken for a copy. Passing the counter through a permutation keyed by a
secret of the origin keeps every id unique (a permutation never maps two counters to one value) and
makes the next one a 1 in 65,536 guess for everyone else. The key is derived from the node's private
keys, so it survives restarts without another file.

The permutation is a four-round Feistel network on two 8-bit halves with keyed BLAKE2b rounds,
tweaked by the creation second.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crypto.identity import Identity

SEQ_BITS = 16
_ROUNDS = 4
_INFO = b"mesh112/bundle-seq-permutation/v1"


class SeqPermutation:
    """Maps a counter 0..65535 to a sequence number, one permutation per creation second."""

    def __init__(self, identity: Identity) -> None:
        self._key = HKDF(hashes.SHA256(), 32, None, _INFO).derive(identity.private_bytes())

    def seq(self, created: int, counter: int) -> int:
        if not 0 <= counter < 1 << SEQ_BITS:
            raise ValueError(f"counter must be 0-{(1 << SEQ_BITS) - 1}")
        left, right = counter >> 8, counter & 0xFF
        tweak = created.to_bytes(8, "big", signed=True)
        for round_ in range(_ROUNDS):
            mixed = hashlib.blake2b(tweak + bytes((round_, right)), key=self._key, digest_size=1).digest()[0]
            left, right = right, left ^ mixed
        return left << 8 | right
