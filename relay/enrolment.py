"""Creating node directories and enrolling them: the steps behind ``mesh112 init`` / ``authority``.

Shared by the CLI and the demo deployment, so both produce the same layout: the key directory of
``crypto.keystore`` plus a commented ``node.toml`` made from the packaged example.

Group keys: the authority keeps one key per group (``all``, each role, each incident group) in
``<authority>/groups/<name>-<epoch>.key`` (0600) and hands a node each key it may use, sealed to the
node and signed by the authority, as ``<node>/groups/<name>-<epoch>.sealed``. A node gets ``all``,
its own roles and the incident groups it joins; a dispatcher or admin node gets every key, so it
can send to any role or group. The node loads them with :func:`load_keyring` when it starts; a
rotation (on revocation) is a new epoch file, and the epoch before it stays readable for the
keyring's grace period. The authority notes who was given each group
(``<authority>/groups/<name>.members``), so :func:`rotate_group_keys` can seal the next epoch to
exactly the members still valid; a running deployment receives them as ``GROUP_KEY`` bundles
(``mesh112 authority revoke --via``) and each node keeps them with :func:`save_group_key`.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path

from crypto.certificate import Authority, Certificate, check_name, check_role
from crypto.errors import CryptoError
from crypto.group import GroupKey, GroupKeyring, check_group_name, unwrap_group_key, wrap_group_key
from crypto.identity import Identity, PublicIdentity
from crypto.keyfile import write_atomic
from crypto.keystore import (
    has_identity,
    load_public_identity,
    save_certificate,
    save_identity,
    save_revocations,
)
from relay.bundle import to_epoch
from relay.config import load_config
from relay.errors import ConfigError

CONFIG_FILE = "node.toml"
DAY_S = 86_400
GROUPS_DIR = "groups"
JOINED_FILE = "joined"  # incident groups the node is a member of, one a line
ALL_GROUP = "all"
SENDS_TO_EVERY_GROUP = frozenset({"admin", "dispatcher"})  # roles given every group's key


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
    incident_groups: tuple[str, ...] = (),
) -> Certificate:
    """Issue a certificate for the node in ``node_dir`` and write it there with the trust anchor
    and its group keys.

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
    distribute_group_keys(authority, authority_dir, node_dir, certificate, incident_groups)
    return certificate


class GroupKeyFileError(CryptoError):
    """A group key file in a node or authority directory is damaged or sealed by someone else."""


def group_key(authority_dir: Path, group: str) -> GroupKey:
    """The authority's current key for ``group``, created (epoch 0) on first use."""
    check_group_name(group)
    directory = authority_dir / GROUPS_DIR
    held = sorted(directory.glob(f"{group}-*.key"), key=lambda p: int(p.stem.rpartition("-")[2]))
    if held:
        try:
            return GroupKey.decode(held[-1].read_bytes())
        except CryptoError as exc:
            raise GroupKeyFileError(f"{held[-1]} is damaged: {exc}") from None
    key = GroupKey.generate(group)
    directory.mkdir(mode=0o700, exist_ok=True)
    write_atomic(directory / f"{group}-{key.epoch}.key", key.encode(), 0o600)
    return key


def deployment_groups(authority_dir: Path) -> list[str]:
    """Every group the authority holds a key for."""
    return sorted({p.stem.rpartition("-")[0] for p in (authority_dir / GROUPS_DIR).glob("*.key")})


def groups_for(certificate: Certificate, authority_dir: Path, incident_groups: tuple[str, ...]) -> list[str]:
    """The groups whose keys a node gets: all, its roles, its incident groups; every group for a
    dispatcher or admin."""
    names = {ALL_GROUP, *certificate.roles, *incident_groups}
    if certificate.roles & SENDS_TO_EVERY_GROUP:
        names |= set(deployment_groups(authority_dir))
    return sorted(names)


def distribute_group_keys(
    authority: Authority,
    authority_dir: Path,
    node_dir: Path,
    certificate: Certificate,
    incident_groups: tuple[str, ...] = (),
) -> list[str]:
    """Seal the current key of each of the node's groups to it (skipping keys it already holds);
    returns the groups."""
    names = groups_for(certificate, authority_dir, incident_groups)
    directory = node_dir / GROUPS_DIR
    directory.mkdir(mode=0o700, exist_ok=True)
    joined = sorted(set(joined_groups(node_dir)) | set(incident_groups))
    write_atomic(directory / JOINED_FILE, "".join(f"{g}\n" for g in joined).encode(), 0o644)
    for name in names:
        key = group_key(authority_dir, name)
        path = directory / f"{name}-{key.epoch}.sealed"
        if not path.exists():
            write_atomic(path, wrap_group_key(authority.identity, certificate.public, key), 0o600)
        _note_member(authority_dir, name, certificate.node_id)
    return names


def _members_file(authority_dir: Path, group: str) -> Path:
    return authority_dir / GROUPS_DIR / f"{group}.members"


def _members(authority_dir: Path, group: str) -> set[bytes]:
    path = _members_file(authority_dir, group)
    return {bytes.fromhex(line) for line in path.read_text().split()} if path.exists() else set()


def _note_member(authority_dir: Path, group: str, node_id: bytes) -> None:
    members = _members(authority_dir, group)
    if node_id not in members:
        text = "".join(f"{m.hex()}\n" for m in sorted(members | {node_id}))
        write_atomic(_members_file(authority_dir, group), text.encode(), 0o600)


def rotate_group_keys(authority: Authority, authority_dir: Path, now: int) -> dict[bytes, list[bytes]]:
    """After a revocation: the next epoch of every group, sealed to each member still valid at
    ``now`` (node id -> wrapped keys). Revoked and expired members get nothing."""
    rotated = []
    for group in deployment_groups(authority_dir):
        key = GroupKey.generate(group, group_key(authority_dir, group).epoch + 1)
        write_atomic(authority_dir / GROUPS_DIR / f"{group}-{key.epoch}.key", key.encode(), 0o600)
        rotated.append(key)
    roster = {certificate.node_id: certificate for certificate in authority.roster}
    wrapped: dict[bytes, list[bytes]] = {}
    for key in rotated:
        for node_id in sorted(_members(authority_dir, key.group)):
            certificate = roster.get(node_id)
            if certificate is None or not _valid(certificate, authority, now):
                continue
            sealed = wrap_group_key(authority.identity, certificate.public, key)
            wrapped.setdefault(node_id, []).append(sealed)
    return wrapped


def _valid(certificate: Certificate, authority: Authority, now: int) -> bool:
    try:
        certificate.verify(authority.public, now, authority.revocations)
    except CryptoError:
        return False
    return True


def save_group_key(node_dir: Path, key: GroupKey, wrapped: bytes) -> None:
    """Keep a group key that arrived while running, as enrolment would have written it."""
    directory = node_dir / GROUPS_DIR
    directory.mkdir(mode=0o700, exist_ok=True)
    write_atomic(directory / f"{key.group}-{key.epoch}.sealed", wrapped, 0o600)


def load_keyring(node_dir: Path, identity: Identity, authority: PublicIdentity) -> GroupKeyring:
    """Every group key sealed to this node by the authority (an empty keyring if it holds none)."""
    ring = GroupKeyring()
    for path in sorted((node_dir / GROUPS_DIR).glob("*.sealed")):
        try:
            key = unwrap_group_key(identity, authority, path.read_bytes())
        except CryptoError as exc:
            raise GroupKeyFileError(f"{path} does not open with this node's key: {exc}") from None
        ring.add(key, to_epoch(path.stat().st_mtime))  # arrival time: the previous epoch's grace
    return ring


def joined_groups(node_dir: Path) -> list[str]:
    """The incident groups this node is a member of (it receives what is sent to them)."""
    path = node_dir / GROUPS_DIR / JOINED_FILE
    return path.read_text().split() if path.exists() else []


def held_groups(node_dir: Path) -> list[str]:
    """Names of the groups this node holds a key for (from the file names; no key is opened)."""
    return sorted({p.stem.rpartition("-")[0] for p in (node_dir / GROUPS_DIR).glob("*.sealed")})
