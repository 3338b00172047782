"""Shared fixtures: a real command post and field relay on loopback (API and dashboard tests), and the
IP link tests' impairment proxy and started links."""

from __future__ import annotations

import gc
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from impair_proxy import ImpairProxy

from field.deployment import create_demo_deployment
from field.harness import free_port_base
from field.processes import FieldNode, operator_token, start_node, stop_all, wait_healthy, write_field
from relay.api.permissions import ROLES
from relay.links.ip import IpLink


@dataclass
class Field:
    post: FieldNode
    relay: FieldNode
    tokens: dict[str, str]
    field_token: str
    post_id: str
    relay_id: str


@pytest.fixture(scope="session")
def field(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Field]:
    root = tmp_path_factory.mktemp("api-field")
    deployment = create_demo_deployment(root)
    nodes = write_field(deployment, api_port=free_port_base(4), ip_port=free_port_base(4))
    (root / "logs").mkdir()
    processes = [start_node(node, root / "logs") for node in nodes[:2]]
    try:
        wait_healthy(nodes[:2])
        tokens = {role: operator_token(deployment, frozenset({role}), f"{role} op") for role in ROLES}
        yield Field(
            nodes[0],
            nodes[1],
            tokens,
            operator_token(deployment, frozenset({"responder"}), "field op"),
            deployment.node("Command Post").node_id.hex(),
            deployment.node("Field Relay 1").node_id.hex(),
        )
    finally:
        stop_all(processes)
        for log in (root / "logs").iterdir():
            sys.stderr.write(f"--- {log.name}\n{log.read_text()[-2000:]}\n")


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def interpreter_restored() -> Iterator[None]:
    """For a test that runs the relay daemon in process: its start-up settles the interpreter
    (``relay.daemon.settle_interpreter``: GIL switch interval, young generation, frozen objects);
    put back after, so the tests that follow in the worker run on CPython's settings."""
    switch, threshold = sys.getswitchinterval(), gc.get_threshold()
    yield
    sys.setswitchinterval(switch)
    gc.set_threshold(*threshold)
    gc.unfreeze()


@pytest.fixture
async def proxy() -> AsyncIterator[ImpairProxy]:
    """An impairment proxy on 127.0.0.1; ``proxy.via(port)`` points it at a listener."""
    started = ImpairProxy(0)
    await started.start()
    yield started
    await started.stop()


@pytest.fixture
async def links() -> AsyncIterator[list[IpLink]]:
    """IP links a test started; each is stopped at the end."""
    started: list[IpLink] = []
    yield started
    for link in started:
        await link.stop()
