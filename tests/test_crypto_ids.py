"""Bundle sequence numbers: unique per second, unpredictable without the origin's keys."""

from __future__ import annotations

from crypto.identity import Identity
from crypto.ids import SeqPermutation


def test_every_counter_gets_its_own_sequence_number_and_no_order_shows() -> None:
    ids = SeqPermutation(Identity.generate())
    seqs = [ids.seq(1000, counter) for counter in range(1 << 16)]
    assert sorted(seqs) == list(range(1 << 16))  # a permutation: ids stay unique
    # no order shows: 16 in a row come out unsorted (4 were sorted by chance once in 24 runs)
    assert seqs[:16] != sorted(seqs[:16])
    assert [ids.seq(1001, c) for c in range(4)] != seqs[:4]  # another second, another permutation


def test_same_keys_same_sequence_other_keys_other_sequence() -> None:
    identity = Identity.generate()
    first = [SeqPermutation(identity).seq(5, c) for c in range(8)]
    restored = Identity.from_private_bytes(identity.private_bytes())
    again = [SeqPermutation(restored).seq(5, c) for c in range(8)]
    other = [SeqPermutation(Identity.generate()).seq(5, c) for c in range(8)]
    assert first == again and first != other
