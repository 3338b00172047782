"""Hop tags: per-direction keys, replay and clock window, 12 bytes on the frame."""

from __future__ import annotations

import pytest

from crypto.hop import HOP_OVERHEAD, HopAuth, HopAuthError
from crypto.identity import Identity

A, B, C = Identity.generate(), Identity.generate(), Identity.generate()


def test_tag_costs_12_bytes_and_verifies_at_the_named_neighbour_only() -> None:
    hop_a, hop_b, hop_c = HopAuth(A), HopAuth(B), HopAuth(C)
    frame = b"\x25" + bytes(100)
    tagged = hop_a.tag(B.public, frame, 1000.0)
    assert len(tagged) == len(frame) + HOP_OVERHEAD == len(frame) + 12
    assert hop_b.check(A.public, tagged, 1000.5) == frame
    with pytest.raises(HopAuthError) as other:
        hop_c.check(A.public, tagged, 1000.5)  # made for B, not C
    assert other.value.reason == "tag"
    with pytest.raises(HopAuthError) as reflected:
        hop_a.check(B.public, tagged, 1000.5)  # the other direction has its own key
    assert reflected.value.reason == "tag"
    with pytest.raises(HopAuthError) as spoofed:
        hop_b.check(C.public, tagged, 1000.5)  # C's name on A's frame
    assert spoofed.value.reason == "tag"


def test_altered_frame_replay_and_stale_stamps_are_refused() -> None:
    hop_a, hop_b = HopAuth(A, window_s=60.0), HopAuth(B, window_s=60.0)
    tagged = hop_a.tag(B.public, b"ack", 500.0)
    altered = bytes([tagged[0] ^ 1]) + tagged[1:]
    with pytest.raises(HopAuthError, match="does not verify"):
        hop_b.check(A.public, altered, 500.0)
    assert hop_b.check(A.public, tagged, 500.0) == b"ack"
    with pytest.raises(HopAuthError) as replay:
        hop_b.check(A.public, tagged, 501.0)
    assert replay.value.reason == "replay"
    old = hop_a.tag(B.public, b"old", 500.0)
    with pytest.raises(HopAuthError) as stale:
        hop_b.check(A.public, old, 561.0)
    assert stale.value.reason == "stale"
    with pytest.raises(HopAuthError) as short:
        hop_b.check(A.public, b"x" * HOP_OVERHEAD, 500.0)
    assert short.value.reason == "short"


def test_identical_frames_in_one_instant_get_distinct_stamps() -> None:
    hop_a, hop_b = HopAuth(A), HopAuth(B)
    first, second = (hop_a.tag(B.public, b"same", 10.0) for _ in range(2))
    assert first != second
    assert hop_b.check(A.public, first, 10.0) == hop_b.check(A.public, second, 10.0) == b"same"


def test_a_restarted_sender_is_accepted_again() -> None:
    hop_b = HopAuth(B)
    assert hop_b.check(A.public, HopAuth(A).tag(B.public, b"one", 100.0), 100.0) == b"one"
    assert hop_b.check(A.public, HopAuth(A).tag(B.public, b"two", 101.0), 101.0) == b"two"


def test_a_frame_tagged_for_several_nodes_tells_each_whether_it_is_the_addressee() -> None:
    """tag_many: the addressee and each overhearing node find their own tag; any other node finds
    none; altered, replayed or stale, it is refused as a single-tag frame is."""
    hop_a, hop_b, hop_c = HopAuth(A, window_s=60.0), HopAuth(B, window_s=60.0), HopAuth(C, window_s=60.0)
    frame = b"\x25" + bytes(100)
    data = hop_a.tag_many(B.public, [C.public], frame, 1000.0)
    assert len(data) == len(frame) + 2 * HOP_OVERHEAD + 1
    assert hop_b.check_many(A.public, data, 1000.5) == (frame, True)
    assert hop_c.check_many(A.public, data, 1000.5) == (frame, False)
    with pytest.raises(HopAuthError) as replay:
        hop_c.check_many(A.public, data, 1001.0)
    assert replay.value.reason == "replay"
    with pytest.raises(HopAuthError) as stranger:
        HopAuth(Identity.generate()).check_many(A.public, data, 1000.5)
    assert stranger.value.reason == "tag"
    with pytest.raises(HopAuthError) as altered:
        HopAuth(C).check_many(A.public, bytes([data[0] ^ 1]) + data[1:], 1000.5)
    assert altered.value.reason == "tag"
    with pytest.raises(HopAuthError) as stale:
        HopAuth(C, window_s=60.0).check_many(A.public, data, 1100.0)
    assert stale.value.reason == "stale"
    for short in (b"", bytes([2]), data[-25:]):  # no room for a frame before its tags
        with pytest.raises(HopAuthError) as cut:
            hop_c.check_many(A.public, short, 1000.5)
        assert cut.value.reason == "short"
