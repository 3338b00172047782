"""The LXMF/Reticulum peer harness of the relay-over-IP benchmark: real RNS/LXMF processes on loopback."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import psutil
import pytest

from bench._lxmf_config import (
    LoopbackViolation,
    PeerNetwork,
    config_text,
    verify_config,
    verify_loopback_sockets,
    write_config,
)
from bench._lxmf_field import LxmfBenchError, measure_lxmf
from bench._lxmf_peer import label_text, parse_label


def _peer_children() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "bench._lxmf_peer" in child.cmdline():
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.mark.timeout(90)
@pytest.mark.parametrize("hops", [1, 3])
def test_every_message_arrives_once_over_loopback_only(tmp_path: Path, hops: int) -> None:
    result = measure_lxmf(tmp_path, hops=hops, count=10, api_count=10, latency_samples=5, timeout=60)

    assert result["path_hops"] == hops
    for mode in ("api", "bulk"):
        assert result[f"{mode}_delivered"] == 10, result
        assert result[f"{mode}_duplicates"] == 0
        assert result[f"{mode}_failed"] == 0
        assert result[f"{mode}_unsettled"] == 0
        assert result[f"{mode}_msgs_per_s"] > 0
        assert result[f"{mode}_seconds"] > 0
    assert result["bulk_mb_per_s"] == pytest.approx(result["bulk_msgs_per_s"] * 100 / 1e6, rel=0.01)
    assert len(result["latency_ms_samples"]) == result["latency_samples"] == 5
    assert all(sample > 0 for sample in result["latency_ms_samples"])
    assert 0 < result["latency_ms_p50"] <= result["latency_ms_p99"]
    assert result["loopback_only"] is True
    peers = hops + 1
    assert result["loopback_socket_checks"] == 2 * 2 * peers  # inside and outside, after start and at end
    assert result["durable"] is False and "RAM" in result["durable_reason"]
    assert result["rns_version"] and result["lxmf_version"]

    configs = sorted(tmp_path.glob("*/config"))
    assert len(configs) == peers
    for path in configs:
        assert "AutoInterface" not in path.read_text()
        assert "0.0.0.0" not in path.read_text()
    assert _peer_children() == []


@pytest.mark.timeout(60)
def test_a_dead_peer_fails_the_run_with_its_error_and_leaves_no_process(tmp_path: Path) -> None:
    (tmp_path / "sender").mkdir()  # a used config dir: the sender refuses to start in it
    with pytest.raises(LxmfBenchError, match=r"(?s)sender exited early.*FileExistsError"):
        measure_lxmf(tmp_path, hops=1, count=1, latency_samples=1, timeout=30)
    assert _peer_children() == []


def test_peer_config_has_only_loopback_tcp(tmp_path: Path) -> None:
    network = PeerNetwork(listen_port=40001, connect_port=40002, transport=True)
    path = write_config(tmp_path / "peer", network)
    verify_config(path, network)
    text = path.read_text()
    assert "share_instance = No" in text and "enable_transport = Yes" in text
    with pytest.raises(FileExistsError):
        write_config(tmp_path / "peer", network)  # never reuses a config dir


@pytest.mark.parametrize(
    ("change", "mistake"),
    [
        (("listen_ip = 127.0.0.1", "listen_ip = 0.0.0.0"), "listen_ip"),
        (("target_host = 127.0.0.1", "target_host = 192.0.2.7"), "target_host"),
        (("type = TCPClientInterface", "type = AutoInterface"), "AutoInterface"),
        (("share_instance = No", "share_instance = Yes"), "share_instance"),
        (("discover_interfaces = No", "discover_interfaces = Yes"), "discover_interfaces"),
        (("enable_transport = No", "enable_transport = Yes"), "enable_transport"),
        (("    listen_port = 40001", "    listen_port = 40001\n    device = eth0"), "listen_ip"),
    ],
)
def test_non_loopback_config_is_refused(tmp_path: Path, change: tuple[str, str], mistake: str) -> None:
    network = PeerNetwork(listen_port=40001, connect_port=40002, transport=False)
    path = tmp_path / "config"
    path.write_text(config_text(network).replace(*change))
    with pytest.raises(LoopbackViolation, match=mistake):
        verify_config(path, network)


def test_socket_off_loopback_is_detected() -> None:
    assert verify_loopback_sockets(os.getpid()) >= 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as wildcard:
        wildcard.bind(("0.0.0.0", 0))  # bound only; nothing is sent
        with pytest.raises(LoopbackViolation, match="off loopback"):
            verify_loopback_sockets(os.getpid())


def test_labels_round_trip_at_exact_size() -> None:
    text = label_text("bulk", 42, 100)
    assert len(text) == 100
    assert parse_label(text) == ("bulk", 42)
    with pytest.raises(ValueError, match="too small"):
        label_text("bulk", 1, 8)
