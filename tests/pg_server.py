"""One real PostgreSQL server for a test, from Debian's ``postgresql`` package.

``initdb`` into a temporary directory, ``postgres`` on a free port on 127.0.0.1 (trust
authentication, loopback only), stopped by its PID. As root the server runs as the ``postgres``
user (``runuser -u postgres``), as PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.backbone_servers import free_port, wait_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextmanager
def postgres() -> Iterator[str]:
    """A running server; yields its ``postgresql://`` address (database ``mesh112``). Its directory
    is its own under /tmp (the postgres user cannot enter pytest's root-only tmp_path), removed after."""
    directory = Path(tempfile.mkdtemp(prefix="mesh112-pg-"))
    try:
        with _server(directory) as dsn:
            yield dsn
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def _server(directory: Path) -> Iterator[str]:
    if not (PG_BIN / "initdb").exists():
        raise FileNotFoundError(
            f"{PG_BIN}/initdb is missing: apt-get install postgresql (deploy/install-system-deps.sh)"
        )
    data = directory / "pgdata"
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    subprocess.run(
        _as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "mesh112", "--no-sync"]),
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = (directory / "postgres.log").open("wb")
    process = subprocess.Popen(
        _as_postgres(
            [
                str(PG_BIN / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={directory}",
                "-c",
                "fsync=on",
            ]
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_port(port, 30)
        deadline = time.monotonic() + 30
        while True:
            created = subprocess.run(
                [str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mesh112", "mesh112"],
                capture_output=True,
            )
            if created.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"createdb failed: {created.stderr.decode()}")
            time.sleep(0.2)
        yield f"postgresql://mesh112@127.0.0.1:{port}/mesh112"
    finally:
        pid = (
            int((data / "postmaster.pid").read_text().split()[0])
            if (data / "postmaster.pid").exists()
            else None
        )
        if pid is not None:
            os.kill(pid, signal.SIGINT)  # fast shutdown
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()
