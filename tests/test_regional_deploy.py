"""deploy/regional/: every node.toml validates, every nats-server configuration is accepted by the
pinned nats-server itself, and systemd accepts the backbone's unit file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from relay.config import load_config
from tests.backbone_servers import NATS_SERVER

REGIONAL = Path(__file__).resolve().parent.parent / "deploy" / "regional"


@pytest.mark.parametrize("name", ["centre", "post-a", "post-b", "post-c"])
def test_node_configs_validate(name: str) -> None:
    config = load_config(REGIONAL / f"{name}.node.toml")
    assert config.backbone is not None
    assert config.backbone.role == ("centre" if name == "centre" else "post")
    if name == "centre":
        assert config.backbone.posts == ("a", "b", "c")
    else:
        assert config.backbone.domain == name.removeprefix("post-")


@pytest.mark.parametrize("name", ["hub", "post-a", "post-b", "post-c"])
def test_nats_server_accepts_the_configs(name: str, tmp_path: Path) -> None:
    """``nats-server -t`` checks the file; the TLS files and the store directory are this machine's,
    so they are pointed at throwaway ones (the only change)."""
    text = (REGIONAL / f"{name}.conf").read_text()
    assert 'store_dir: "/var/lib/mesh112-nats"' in text
    text = text.replace("/var/lib/mesh112-nats", str(tmp_path / "store"))
    text = re.sub(r"\n\s*tls \{[^}]*\}", "", text)  # checked without the region's certificates
    copy = tmp_path / f"{name}.conf"
    copy.write_text(text)
    done = subprocess.run(
        [str(NATS_SERVER), "-t", "-c", str(copy)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_systemd_accepts_the_backbone_unit(tmp_path: Path) -> None:
    unit = (REGIONAL / "mesh112-nats.service").read_text()
    assert "ExecStart=/usr/local/bin/nats-server " in unit
    copy = tmp_path / "mesh112-nats.service"
    copy.write_text(unit.replace("ExecStart=/usr/local/bin/nats-server ", f"ExecStart={NATS_SERVER} "))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
