"""The demo deployment: an authority and five enrolled nodes in one directory, made idempotently.

Re-running reuses what exists (identities are never replaced) and only enrols nodes whose
certificate is missing, expired, revoked or for other roles. The authority creates the group keys
first (``all``, every demo role, the incident group ``incident-1``), so every node, enrolled now or
before, holds its keys and Send to all, a role or the incident group works in the demo. The demo
command and tests that need a small real deployment both start from :func:`create_demo_deployment`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from crypto.certificate import Authority, Certificate
from crypto.errors import CryptoError
from crypto.keystore import has_identity, load_authority_public, load_certificate, load_revocations
from relay.enrolment import ALL_GROUP, distribute_group_keys, enrol_node, group_key, init_node

AUTHORITY_DIR = "authority"
DEMO_DAYS = 365
INCIDENT = "incident-1"  # the demo's incident group: the command post, the relays and the responder


@dataclass(frozen=True, slots=True)
class DemoNodeSpec:
    slug: str  # directory name
    name: str
    roles: tuple[str, ...]
    api: bool = False
    groups: tuple[str, ...] = ()  # incident groups joined


DEMO_NODES = (
    DemoNodeSpec("command-post", "Command Post", ("admin", "dispatcher"), api=True, groups=(INCIDENT,)),
    DemoNodeSpec("relay-1", "Field Relay 1", ("relay",), groups=(INCIDENT,)),
    DemoNodeSpec("relay-2", "Field Relay 2", ("relay",), groups=(INCIDENT,)),
    DemoNodeSpec("responder-1", "Responder 1", ("responder",), groups=(INCIDENT,)),
    DemoNodeSpec("building-gateway", "Building Gateway", ("building",)),
    DemoNodeSpec("camera-1", "Camera 1", ("camera",)),
    DemoNodeSpec("responder-2", "Responder 2", ("responder",), groups=(INCIDENT,)),  # helmet camera
)


@dataclass(frozen=True, slots=True)
class DemoNode:
    name: str
    roles: tuple[str, ...]
    directory: Path
    certificate: Certificate

    @property
    def node_id(self) -> bytes:
        return self.certificate.node_id

    @property
    def config(self) -> Path:
        return self.directory / "node.toml"


@dataclass(frozen=True, slots=True)
class DemoDeployment:
    root: Path
    authority_dir: Path
    authority: Authority
    nodes: tuple[DemoNode, ...]

    def node(self, name: str) -> DemoNode:
        return next(node for node in self.nodes if node.name == name)


def create_demo_deployment(path: Path, now: int | None = None) -> DemoDeployment:
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    authority_dir = root / AUTHORITY_DIR
    now = int(time.time()) if now is None else now
    if (authority_dir / "authority.key").exists():
        authority = Authority.load(authority_dir)
    else:
        authority = Authority.generate(now=now)
        authority.save(authority_dir)
    for group in sorted({ALL_GROUP, INCIDENT, *(role for spec in DEMO_NODES for role in spec.roles)}):
        group_key(authority_dir, group)
    nodes = []
    for spec in DEMO_NODES:
        directory = root / spec.slug
        if not has_identity(directory):
            init_node(directory, spec.name, spec.roles, api_enabled=spec.api)
        certificate = _current_certificate(authority, directory, spec, now)
        if certificate is None:
            certificate = enrol_node(
                authority, authority_dir, directory, spec.roles, DEMO_DAYS, spec.name, now, spec.groups
            )
        else:
            distribute_group_keys(authority, authority_dir, directory, certificate, spec.groups)
        nodes.append(DemoNode(spec.name, spec.roles, directory, certificate))
    return DemoDeployment(root, authority_dir, authority, tuple(nodes))


def _current_certificate(
    authority: Authority, directory: Path, spec: DemoNodeSpec, now: int
) -> Certificate | None:
    """The node's certificate if it is still good for this demo, else ``None`` (enrol again)."""
    try:
        certificate = load_certificate(directory)
        if certificate is None or load_authority_public(directory) != authority.public:
            return None
        if certificate.roles != frozenset(spec.roles):
            return None
        certificate.verify(authority.public, now + 3600, load_revocations(directory))
    except CryptoError:
        return None
    return certificate
