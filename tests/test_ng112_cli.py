"""``mesh112 ng112 parse`` and ``mesh112 ng112 gateway`` through the real console script."""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from field.harness import free_port
from relay.cli import main

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "ng112"
WIRE = CORPUS / "sip" / "synthetic-sipp-fire-alarm-message.sip"


def test_parse_sip_shows_decision_record_and_canonical_cap(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ng112", "parse", str(WIRE)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["outcome"] == "accepted" and out["response"] == "200 OK"
    assert out["bytes_on_air"] <= 219 and "<msgType>Alert</msgType>" in out["canonical_cap"]


def test_parse_hostile_cap_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ng112", "parse", str(CORPUS / "cap" / "google-xxe-attack.cap")]) == 1
    assert "DTD or entity declaration refused" in capsys.readouterr().err


def test_gateway_command_takes_an_alarm(tmp_path: Path) -> None:
    script = shutil.which("mesh112", path=str(Path(sys.executable).parent))
    assert script is not None
    port = free_port(socket.SOCK_DGRAM)
    args = [script, "ng112", "gateway", "--data", str(tmp_path), "--udp-port", str(port), "--tcp-port", "0"]
    process = subprocess.Popen([*args, "--duration", "4"], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert "listening" in process.stdout.readline()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(3)
            sock.sendto(WIRE.read_bytes(), ("127.0.0.1", port))
            response, _ = sock.recvfrom(65536)
        assert response.startswith(b"SIP/2.0 200 OK")
        process.wait(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    with sqlite3.connect(tmp_path / "ng112-gateway.sqlite") as db:
        assert db.execute("SELECT count(*) FROM alarm").fetchone()[0] == 1
