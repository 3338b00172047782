"""A real full disk for the tests: a small tmpfs mounted for the test and unmounted after it.

Mounting needs root (CI runs the suite as root); without it the test fails and says so, it is never
skipped.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def tmpfs(directory: Path, size: str) -> Iterator[Path]:
    assert os.geteuid() == 0, "the disk-full tests mount a small tmpfs and must run as root (as CI does)"
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=True)


def fill(path: Path) -> int:
    """Write ``path`` until the filesystem under it is full; the bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as file:
        for size in (64 * 1024, 4096, 512):
            with contextlib.suppress(OSError):
                while True:
                    written += file.write(bytes(size))
    return written
