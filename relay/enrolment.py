"""Creating node directories and enrolling them: the steps behind ``mesh112 init`` / ``authority``.

Shared by the CLI and the demo deployment, so both produce the same layout: the key directory of
``crypto.keystore`` plus a commented ``node.toml`` made from the packaged example.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path

from crypto.certificate import Authority, Certificate, check_name, check_role
from crypto.identity import Identity
from crypto.keystore import (
    has_identity,
    load_public_identity,
    save_certificate,
    save_identity,
    save_revocations,
)
from relay.config import load_config
from relay.errors import ConfigError

CONFIG_FILE = "node.toml"
DAY_S = 86_400


def example_config() -> str:
    return resources.files("relay").joinpath("node.example.toml").read_text()


def render_node_config(name: str, roles: tuple[str, ...], api_enabled: bool = False) -> str:
    """The example config with this node's name, roles and API switch filled in."""
    text = example_config()
    replacements = {
        'name = "NODE_NAME"': f"name = {json.dumps(name, ensure_ascii=False)}",
        "roles = []": f"roles = {json.dumps(list(roles))}",
        "enabled = false": f"enabled = {'true' if api_enabled else 'false'}",
    }
    for old, new in replacements.items():
        if old not in text:
            raise ConfigError(f"the packaged node.example.toml lacks the line {old!r}")
        text = text.replace(old, new, 1)
    return text


def parse_roles(text: str) -> tuple[str, ...]:
    roles = tuple(sorted({part.strip() for part in text.split(",") if part.strip()}))
    for role in roles:
        check_role(role)
    return roles


def init_node(
    directory: Path,
    name: str,
    roles: tuple[str, ...],
    passphrase: str | None = None,
    api_enabled: bool = False,
) -> Identity:
    """Create ``directory`` with a new identity and a ``node.toml``; refuses an existing identity."""
    check_name(name)
    for role in roles:
        check_role(role)
    identity = Identity.generate()
    save_identity(directory, identity, passphrase)
    config = directory / CONFIG_FILE
    if not config.exists():
        config.write_text(render_node_config(name, roles, api_enabled))
    return identity


def node_name(directory: Path) -> str | None:
    config = directory / CONFIG_FILE
    return load_config(config).node.name if config.exists() else None


def enrol_node(
    authority: Authority,
    authority_dir: Path,
    node_dir: Path,
    roles: tuple[str, ...],
    days: int,
    name: str | None = None,
    now: int | None = None,
) -> Certificate:
    """Issue a certificate for the node in ``node_dir`` and write it there with the trust anchor.

    Reads only the node's public keys (``identity.pub``), never its private key; the authority's
    roster is saved at once, so a crash cannot forget an issued certificate.
    """
    if not has_identity(node_dir):
        raise ConfigError(f"{node_dir} has no identity.key; run mesh112 init {node_dir} --name NAME first")
    if not 1 <= days <= 3650:
        raise ConfigError("--days must be between 1 and 3650")
    name = name or node_name(node_dir) or node_dir.resolve().name
    issued = int(time.time()) if now is None else now
    public = load_public_identity(node_dir)
    certificate = authority.issue(public, frozenset(roles), name, issued + days * DAY_S, now=issued)
    authority.save(authority_dir)
    save_certificate(node_dir, certificate, authority.public)
    save_revocations(node_dir, authority.revocations)
    return certificate
