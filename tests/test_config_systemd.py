"""Running under systemd: the notify protocol over a real AF_UNIX datagram socket the test binds, the
real ``mesh112 relay run`` sending READY=1, WATCHDOG=1 and STOPPING=1, and $STATE_DIRECTORY as the
default data directory; the shipped unit file says so."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.systemd import Notifier, NotifyError

REPO = Path(__file__).resolve().parents[1]
MESH112 = str(Path(sys.executable).parent / "mesh112")  # the running venv's console script


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[Path, socket.socket]]:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10.0)
    yield path, sock
    sock.close()


def test_notifier_reads_what_systemd_sets() -> None:
    assert Notifier.from_environ({}) is None
    plain = Notifier.from_environ({"NOTIFY_SOCKET": "/run/systemd/notify"})
    assert plain == Notifier("/run/systemd/notify", None)
    watched = Notifier.from_environ({"NOTIFY_SOCKET": "@sd", "WATCHDOG_USEC": "30000000"})
    assert watched == Notifier("\0sd", 15.0)
    other_pid = {"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier.from_environ(other_pid) == Notifier("/n", None)  # the watchdog is another process's
    with pytest.raises(NotifyError, match="only AF_UNIX"):
        Notifier.from_environ({"NOTIFY_SOCKET": "vsock:2:1234"})


def test_notify_and_watchdog_reach_the_socket(notify_socket: tuple[Path, socket.socket]) -> None:
    import asyncio

    path, sock = notify_socket
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "100000"})
    assert notifier is not None and notifier.watchdog_interval_s == 0.05
    notifier.notify("READY=1", "STATUS=up")
    assert sock.recv(4096) == b"READY=1\nSTATUS=up"

    async def ping_for_a_while() -> None:
        task = asyncio.create_task(notifier.watchdog())
        await asyncio.sleep(0.5)
        task.cancel()

    asyncio.run(ping_for_a_while())
    pings = []
    sock.settimeout(0.5)
    with pytest.raises(TimeoutError):
        while True:
            pings.append(sock.recv(4096))
    assert set(pings) == {b"WATCHDOG=1"} and 3 <= len(pings) <= 11  # every 0.05 s for 0.5 s


def test_relay_run_under_type_notify_uses_the_state_directory(
    tmp_path: Path, notify_socket: tuple[Path, socket.socket]
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MESH112_PASSPHRASE", "STATE_DIRECTORY")}
    for args in (
        ["authority", "init", "auth"],
        ["init", "state", "--name", "Unit Test", "--roles", "relay"],
        ["authority", "enroll", "--authority", "auth", "state", "--days", "1"],
    ):
        done = subprocess.run(
            [MESH112, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
    # As under the shipped unit: the config in its own (read-only) directory, the data in the state one.
    etc = tmp_path / "etc"
    etc.mkdir()
    shutil.move(tmp_path / "state" / "node.toml", etc / "node.toml")
    path, sock = notify_socket
    sock.settimeout(30.0)  # a loaded CI machine may take a while to start the node
    env |= {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000", "STATE_DIRECTORY": str(tmp_path / "state")}
    process = subprocess.Popen(
        [MESH112, "relay", "run", "--config", str(etc / "node.toml")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = sock.recv(4096)
        assert ready == b"READY=1\nSTATUS=node Unit Test running"
        started = time.monotonic()
        pings = [sock.recv(4096) for _ in range(3)]
        assert pings == [b"WATCHDOG=1"] * 3 and time.monotonic() - started < 2.0
        assert (tmp_path / "state" / "store.sqlite3").exists()  # data in $STATE_DIRECTORY
        assert not (etc / "store.sqlite3").exists()
        process.send_signal(signal.SIGTERM)
        while (message := sock.recv(4096)) == b"WATCHDOG=1":
            pass
        assert message == b"STOPPING=1"
        assert process.wait(timeout=30) == 0, process.stderr.read() if process.stderr else ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_the_unit_file_runs_the_node_under_notify_with_a_state_directory() -> None:
    unit = (REPO / "deploy" / "mesh112-node.service").read_text()
    lines = {line.partition("=")[0]: line.partition("=")[2] for line in unit.splitlines() if "=" in line}
    assert lines["Type"] == "notify" and lines["NotifyAccess"] == "main"
    assert lines["WatchdogSec"] and lines["StateDirectory"] == "mesh112" and lines["LimitNOFILE"] == "65536"
    assert (
        lines["ExecStart"].startswith("/")
        and " relay run --config /etc/mesh112/node.toml" in lines["ExecStart"]
    )
    assert "ProtectSystem" in lines and lines["ProtectSystem"] == "strict"


def test_systemd_accepts_the_unit_file(tmp_path: Path) -> None:
    """systemd's own checker, with ExecStart pointed at this checkout's mesh112 (the only change)."""
    unit = (REPO / "deploy" / "mesh112-node.service").read_text()
    assert "ExecStart=/usr/local/bin/mesh112 " in unit
    copy = tmp_path / "mesh112-node.service"
    copy.write_text(unit.replace("ExecStart=/usr/local/bin/mesh112 ", f"ExecStart={MESH112} "))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
