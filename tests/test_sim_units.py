"""Unit tests of the simulator's pure parts: LoRa airtime, schedules, the oracle, traffic planning."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.bundle import Priority
from relay.links.base import LinkProfile
from relay.sim.links import Contact, ScheduleSpec, SimLinkSpec, Transmitter
from relay.sim.oracle import Oracle
from relay.sim.phy import PRESETS, frame_airtime, lora_airtime, modem
from relay.sim.schedule import Schedule

LONG_FAST = PRESETS["LONG_FAST"]


# -- LoRa airtime (Semtech AN1200.13, values in research/meshtastic.md §3.1) ------------------


@pytest.mark.parametrize(
    ("preset", "length", "expected_ms"),
    [
        ("LONG_FAST", 36, 518.144),  # a 20-byte Data with the 16-byte header
        ("LONG_FAST", 255, 2156.544),  # a full frame
        ("SHORT_FAST", 36, 42.624),
        ("MEDIUM_FAST", 255, 641.536),
        ("LONG_SLOW", 255, 14295.04),  # low-data-rate optimisation on
    ],
)
def test_airtime_matches_the_preset_table(preset: str, length: int, expected_ms: float) -> None:
    assert lora_airtime(length, PRESETS[preset]) * 1000 == pytest.approx(expected_ms, abs=0.01)


def test_airtime_long_fast_10_and_200_byte_payloads() -> None:
    # Hand computation: T_sym = 2^11/250 kHz = 8.192 ms, preamble (16 + 4.25) T_sym = 165.888 ms.
    # 10 B payload + 16 B header = 26 B: ceil((208 - 44 + 28 + 16) / 44) * 5 + 8 = 33 symbols.
    assert frame_airtime(10, LONG_FAST) == pytest.approx(0.165888 + 33 * 0.008192)
    # 200 B + 16 B = 216 B: ceil((1728 - 44 + 44) / 44) * 5 + 8 = 208 symbols.
    assert frame_airtime(200, LONG_FAST) == pytest.approx(0.165888 + 208 * 0.008192)


def test_airtime_refuses_oversize_frames_and_unknown_presets() -> None:
    with pytest.raises(ValueError, match=r"0\.\.255"):
        lora_airtime(256, LONG_FAST)
    with pytest.raises(ValueError, match="unknown LoRa preset"):
        modem("LONG_FASTER")
    assert modem("long_fast") is LONG_FAST


@given(st.integers(0, 254))
def test_airtime_never_decreases_with_length(length: int) -> None:
    assert lora_airtime(length, LONG_FAST) <= lora_airtime(length + 1, LONG_FAST)


# -- schedules ------------------------------------------------------------------------------


def test_schedule_queries() -> None:
    s = Schedule(((10.0, 20.0), (30.0, 40.0)))
    assert not s.is_up(5) and s.is_up(10) and s.is_up(19.9) and not s.is_up(20) and s.is_up(35)
    assert s.interval_at_or_after(0) == (10.0, 20.0)
    assert s.interval_at_or_after(15) == (10.0, 20.0)
    assert s.interval_at_or_after(20) == (30.0, 40.0)
    assert s.interval_at_or_after(40) is None
    assert s.minus([(15, 35)]).up == ((10.0, 15.0), (35.0, 40.0))
    assert s.intersect(Schedule(((18.0, 32.0),))).up == ((18.0, 20.0), (30.0, 32.0))
    assert Schedule.from_up([(5, 8), (1, 6), (9, 9)]).up == ((1, 8),)
    with pytest.raises(ValueError, match="overlap"):
        Schedule(((0.0, 10.0), (5.0, 20.0)))


def test_random_blocks_are_seeded_and_near_their_fraction() -> None:
    horizon = 1_000_000.0
    a = Schedule.random_blocks(random.Random(7), up_fraction=0.5, mean_cycle_s=600, horizon=horizon)
    b = Schedule.random_blocks(random.Random(7), up_fraction=0.5, mean_cycle_s=600, horizon=horizon)
    assert a == b
    assert a.up_time(horizon) / horizon == pytest.approx(0.5, abs=0.03)
    assert all(0 <= start < end <= horizon for start, end in a.up)


@given(st.floats(0.05, 0.95), st.integers(0, 2**32))
def test_random_blocks_are_valid_schedules(fraction: float, seed: int) -> None:
    s = Schedule.random_blocks(random.Random(seed), up_fraction=fraction, mean_cycle_s=60, horizon=3600)
    Schedule(s.up)  # validates order and disjointness
    assert all(0 <= start < end <= 3600 for start, end in s.up)


# -- oracle ---------------------------------------------------------------------------------


def _ip(name: str, latency: float = 0.1, bitrate: float = 1000.0, mtu: int = 1000) -> SimLinkSpec:
    profile = LinkProfile(name=name, kind="ip", mtu=mtu, bitrate=bitrate)
    return SimLinkSpec(profile, latency, 0.0, ScheduleSpec("always"), ())


def test_oracle_waits_for_the_contact_and_picks_the_faster_path() -> None:
    fast = _ip("fast")
    hop = fast.bundle_time(84)  # (84 + 16) / 1000 + 0.1 = 0.2 s
    assert hop == pytest.approx(0.2)
    contacts = [
        Contact(fast, "a", "b", Schedule(((0.0, 100.0),))),
        Contact(fast, "b", "c", Schedule(((50.0, 60.0),))),  # opens later
        Contact(_ip("slow", latency=30.0), "a", "c", Schedule(((0.0, 100.0),))),
    ]
    oracle = Oracle(contacts)
    assert oracle.earliest_arrival("a", "b", 10.0, 84) == pytest.approx(10.2)
    assert oracle.earliest_arrival("a", "c", 10.0, 84) == pytest.approx(10.0 + 0.1 + 30.0)
    assert oracle.earliest_arrival("a", "c", 45.0, 84) == pytest.approx(50.2)  # via b when it opens


def test_oracle_needs_an_interval_long_enough_for_the_whole_bundle() -> None:
    link = _ip("l", latency=0.0, bitrate=100.0, mtu=100)
    contacts = [Contact(link, "a", "b", Schedule(((0.0, 1.0), (5.0, 20.0))))]
    # 184 + 16 = 200 bytes = 2 s of serialisation: does not fit in [0, 1), fits from 5 s.
    assert Oracle(contacts).earliest_arrival("a", "b", 0.0, 184) == pytest.approx(7.0)
    assert Oracle(contacts).earliest_arrival("a", "b", 19.0, 184) is None
    assert Oracle(contacts).earliest_arrival("a", "zz", 0.0, 8) is None


def test_oracle_stops_at_the_destination_with_the_whole_search_answer() -> None:
    """earliest_arrival ends the search when the destination's time is known: the same time, bit
    for bit, as the search over every node gives, on random fields of contacts that come and go."""
    rng = random.Random(15)
    names = [f"n{i}" for i in range(12)]
    for _ in range(20):
        contacts = []
        for _ in range(30):
            a, b = rng.sample(names, 2)
            starts = sorted(rng.uniform(0.0, 500.0) for _ in range(3))
            up = tuple((start, start + rng.uniform(0.5, 40.0)) for start in starts)
            merged = [up[0]]
            for start, end in up[1:]:  # a schedule's intervals do not overlap
                if start <= merged[-1][1]:
                    merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
                else:
                    merged.append((start, end))
            link = _ip(
                f"l{rng.randrange(3)}", latency=rng.uniform(0.0, 2.0), bitrate=rng.uniform(50.0, 5000.0)
            )
            contacts.append(Contact(link, a, b, Schedule(tuple(merged))))
        oracle = Oracle(contacts)
        t0, size = rng.uniform(0.0, 300.0), rng.randrange(8, 400)
        for src in names:
            everyone = oracle.arrivals(src, t0, size)
            for dst in names:
                assert oracle.earliest_arrival(src, dst, t0, size) == everyone.get(dst)


def test_lora_link_times_use_airtime_and_fragments() -> None:
    profile = LinkProfile(name="lora", kind="lora", mtu=200, bitrate=130.0, compact=True)
    lora = SimLinkSpec(profile, 0.0, 0.1, ScheduleSpec("always"), (), LONG_FAST)
    assert lora.frame_time(10) == pytest.approx(frame_airtime(10, LONG_FAST))
    # 384 + 16 = 400 bytes: two full 200-byte frames.
    assert lora.bundle_time(384) == pytest.approx(2 * frame_airtime(200, LONG_FAST))


def test_transmitter_counts_airtime_and_rolling_hour() -> None:
    profile = LinkProfile(name="lora", kind="lora", mtu=200, bitrate=130.0, compact=True)
    tx = Transmitter("a", SimLinkSpec(profile, 0.0, 0.0, ScheduleSpec("always"), (), LONG_FAST))
    end = tx.start(200, 0.0)
    assert not tx.idle(1.0) and tx.idle(end)
    tx.start(200, 1800.0)
    tx.start(200, 4000.0)  # more than an hour after the first
    assert tx.frames == 3
    assert tx.max_hourly_airtime() == pytest.approx(2 * frame_airtime(200, LONG_FAST))


def test_priorities_are_ordered_as_the_report_expects() -> None:
    assert [p.name for p in Priority] == ["FLASH", "IMMEDIATE", "PRIORITY", "ROUTINE", "BULK"]
