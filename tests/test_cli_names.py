"""Destinations by name: ``responder-1`` finds "Responder 1" among the certificates a node holds;
an unknown name lists the near ones, a shared name is refused with the ids, ids still work."""

from __future__ import annotations

import time

import pytest

from crypto.certificate import Authority, Certificate
from crypto.identity import Identity
from relay.api.destinations import name_key, resolve_destination
from relay.bundle import Destination, DestinationError

NOW = int(time.time())


@pytest.fixture(scope="module")
def roster() -> list[Certificate]:
    authority = Authority.generate(now=NOW)

    def enrol(name: str, role: str) -> Certificate:
        return authority.issue(Identity.generate().public, frozenset({role}), name, NOW + 86_400, now=NOW)

    return [
        enrol("Responder 1", "responder"),
        enrol("Responder 2", "responder"),
        enrol("Field Relay 1", "relay"),
        enrol("Engine 7", "responder"),
        enrol("Engine 7", "responder"),
    ]


def test_names_are_typed_lower_case_with_dashes() -> None:
    assert name_key("Field Relay 1") == "field-relay-1"
    assert name_key("  Engine #7 (north) ") == "engine-7-north"


@pytest.mark.parametrize("typed", ["responder-1", "Responder 1", "RESPONDER_1", "responder 1"])
def test_a_name_resolves_to_its_node(roster: list[Certificate], typed: str) -> None:
    assert resolve_destination(typed, roster) == Destination.to_node(roster[0].node_id)


def test_ids_and_the_prefixed_forms_still_work(roster: list[Certificate]) -> None:
    node_id = roster[2].node_id
    assert resolve_destination(node_id.hex(), roster) == Destination.to_node(node_id)
    assert resolve_destination(f"node:{node_id.hex()}", roster) == Destination.to_node(node_id)
    assert resolve_destination("role:responder", roster) == Destination.to_role("responder")
    assert resolve_destination("all", []) == Destination.everyone()


def test_an_unknown_name_lists_the_near_ones(roster: list[Certificate]) -> None:
    with pytest.raises(DestinationError) as caught:
        resolve_destination("responder-3", roster)
    message = str(caught.value)
    assert message.startswith("no node known here is named 'responder-3'; did you mean ")
    assert "responder-1" in message and "responder-2" in message and "engine-7" not in message


def test_a_role_typed_as_a_name_is_pointed_at_the_role(roster: list[Certificate]) -> None:
    with pytest.raises(DestinationError, match="did you mean role:responder for every node with that role"):
        resolve_destination("responder", roster)


def test_a_name_two_nodes_share_is_refused_with_both_ids(roster: list[Certificate]) -> None:
    with pytest.raises(DestinationError) as caught:
        resolve_destination("engine-7", roster)
    message = str(caught.value)
    assert "'engine-7' is the name of 2 nodes" in message
    assert roster[3].node_id.hex() in message and roster[4].node_id.hex() in message


def test_a_bad_node_id_is_a_clear_error(roster: list[Certificate]) -> None:
    with pytest.raises(DestinationError, match=r"^node:zz: a node id is 32 hex digits$"):
        resolve_destination("node:zz", roster)
