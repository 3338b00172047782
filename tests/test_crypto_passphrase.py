"""A node whose key is passphrase-protected (``mesh112 init --encrypt``) starts as a real process when
the daemon is given the passphrase, and says where it looks for one when it is not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from crypto.keyfile import save_identity_file
from crypto.keystore import IDENTITY_FILE, load_identity
from field.deployment import create_demo_deployment
from field.harness import free_port_base
from field.processes import FieldNode, wait_healthy, write_field
from relay.daemon import PASSPHRASE_CREDENTIAL, node_passphrase
from relay.errors import ConfigError

PASSPHRASE = "ladder truck at the north gate"


@pytest.fixture
def encrypted_post(tmp_path: Path) -> FieldNode:
    deployment = create_demo_deployment(tmp_path / "field")
    port = free_port_base(2)
    (node,) = write_field(deployment, api_port=port, ip_port=port + 1, chain=("command-post",))
    key = node.directory / IDENTITY_FILE
    identity = load_identity(node.directory)
    key.unlink()
    save_identity_file(key, identity, PASSPHRASE)  # what mesh112 init --encrypt writes
    return node


def _run(node: FieldNode, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "relay", "relay", "run", "--config", str(node.config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("MESH112_PASS")} | env,
    )


def test_an_encrypted_node_starts_with_its_passphrase_file(encrypted_post: FieldNode, tmp_path: Path) -> None:
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE + "\n")
    secret.chmod(0o600)
    process = _run(encrypted_post, {"MESH112_PASSPHRASE_FILE": str(secret)})
    try:
        wait_healthy([encrypted_post])
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr


def test_an_encrypted_node_without_its_passphrase_says_where_to_put_it(encrypted_post: FieldNode) -> None:
    process = _run(encrypted_post, {})
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    text = stderr.decode()
    assert "Traceback" not in text
    assert "is encrypted" in text and "MESH112_PASSPHRASE" in text and PASSPHRASE_CREDENTIAL in text


def test_passphrase_sources_in_order(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    assert node_passphrase({}) is None
    assert node_passphrase({"CREDENTIALS_DIRECTORY": str(credentials)}) is None
    (credentials / PASSPHRASE_CREDENTIAL).write_text("from systemd\n")
    assert node_passphrase({"CREDENTIALS_DIRECTORY": str(credentials)}) == "from systemd"
    named = tmp_path / "named"
    named.write_text("from a file\r\n")
    both = {"CREDENTIALS_DIRECTORY": str(credentials), "MESH112_PASSPHRASE_FILE": str(named)}
    assert node_passphrase(both) == "from a file"
    assert node_passphrase({**both, "MESH112_PASSPHRASE": "from the environment"}) == "from the environment"
    with pytest.raises(ConfigError, match="cannot read the node key's passphrase"):
        node_passphrase({"MESH112_PASSPHRASE_FILE": str(tmp_path / "missing")})
