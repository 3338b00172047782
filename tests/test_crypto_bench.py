"""The crypto benchmark runs end to end (a short pass) and reports what the LoRa budget promises."""

from __future__ import annotations

import pytest

from bench import crypto as crypto_bench


def test_bench_short_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crypto_bench, "ROUNDS", 1)
    monkeypatch.setattr(crypto_bench, "ROUND_SECONDS", 0.01)
    figures = crypto_bench.run()
    ours = figures["mesh112"]
    # ARCHITECTURE §4: end-to-end crypto <= 32 bytes per LoRa bundle, on top of the 16-byte header.
    assert ours["compact_cached_pair_key"]["overhead_bytes"] == 24 <= 32  # 8-byte nonce salt + tag
    assert ours["compact_cached_pair_key"]["with_compact_bundle_header_bytes"] == 24 + 16
    assert ours["group"]["overhead_bytes"] == 26 <= 32
    assert ours["standard_hpke_mac"]["overhead_bytes"] == 65
    assert ours["standard_hpke_signed"]["overhead_bytes"] == 113
    assert ours["compact_tagged_10kB"]["overhead_bytes"] == 25  # the mode byte + the compact seal
    assert ours["standard_hpke_mac_10kB"]["overhead_bytes"] == 65
    lxmf = figures["lxmf_opportunistic"]
    assert lxmf["container_overhead_bytes"] == 111  # matches the research note's measurement
    assert lxmf["overhead_bytes"] > ours["standard_hpke_signed"]["overhead_bytes"]
    assert all(mode["seal_per_s"] > 0 and mode["open_per_s"] > 0 for mode in ours.values())
