"""Debian tools the tests drive as real peers: installed on first use, never skipped."""

from __future__ import annotations

import shutil
import subprocess


def require_tool(name: str, package: str) -> str:
    """The path of ``name``, installing Debian ``package`` if it is missing (fails if it cannot)."""
    path = shutil.which(name)
    if path is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, timeout=300)
        path = shutil.which(name)
    assert path is not None, f"{name} ({package}) is required"
    return path
