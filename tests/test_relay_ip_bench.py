"""The relay-over-IP benchmark's Mesh112 side runs end to end at small sizes: real relay processes,
every bundle of each phase arrives, and the figures it reports are derived from those arrivals.
(The LXMF side has its own test, tests/test_lxmf_field.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

import bench.relay_ip as relay_ip


def test_three_hop_round_delivers_every_phase_and_reports_its_rates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay_ip, "BACKLOG", {100: 60, 10_000: 20})
    monkeypatch.setattr(relay_ip, "API_MESSAGES", 20)
    monkeypatch.setattr(relay_ip, "API_BATCH_MESSAGES", 300)
    monkeypatch.setattr(relay_ip, "API_SOCKET_MESSAGES", 600)  # 250 + 250 + 100: frames in flight at once
    monkeypatch.setattr(relay_ip, "FLASH_BACKLOG", 400)
    monkeypatch.setattr(relay_ip, "FLASH_AFTER", 50)
    figures, latencies = relay_ip._mesh112_round(tmp_path, hops=3)

    assert figures["durable"] is True and figures["loopback_only"] is True
    rates = ("api_msgs_per_s", "api_batch_ingest_msgs_per_s", "api_batch_msgs_per_s")
    rates += ("api_socket_ingest_msgs_per_s", "api_socket_msgs_per_s")
    for key in ("backlog_100B_bundles_per_s", "backlog_10kB_bundles_per_s", *rates):
        assert figures[key] > 0, key
    assert figures["backlog_10kB_mb_per_s"] == pytest.approx(figures["backlog_10kB_bundles_per_s"] * 0.01)
    assert 0 < figures["backlog_flash_ms"] < 30_000 and 0 <= figures["backlog_after_flash"] <= 350
    assert set(latencies) == {"latency_app", "latency_ws", "latency_post"}  # Unix socket, WebSocket, POST
    for samples in latencies.values():
        assert len(samples) == relay_ip.LATENCY_SAMPLES
        assert all(0 < latency < 30_000 for latency in samples)
    summary = relay_ip._summarise([figures, figures], latencies)
    assert summary["durable"] is True
    for door in ("app", "ws", "post"):
        assert summary[f"latency_{door}_ms_p50"] <= summary[f"latency_{door}_ms_p99"]
