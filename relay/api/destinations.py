"""Destinations as operators type them: the forms of :meth:`Destination.parse`, or a node's name.

Names come from the certificates this node holds (its roster and the nodes it learned), so
``responder-1`` finds the node enrolled as "Responder 1". Matching ignores case and treats any run
of spaces or punctuation as one ``-``. An unknown name lists the nearest ones; a name two nodes
share is refused with their ids, so a message never goes to the wrong unit.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from crypto.certificate import Certificate
from crypto.identity import display_id
from relay.bundle import NODE_ID_LEN, Destination, DestinationError

_NODE_ID = re.compile(rf"[0-9a-fA-F]{{{2 * NODE_ID_LEN}}}")


def name_key(name: str) -> str:
    """``Field Relay 1`` -> ``field-relay-1``: the form a name is typed in and matched by."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def resolve_destination(text: str, roster: Iterable[Certificate]) -> Destination:
    """``text`` as a destination; raises :class:`DestinationError` saying what would have worked."""
    if ":" in text or text == "all":
        return Destination.parse(text)
    if _NODE_ID.fullmatch(text):
        return Destination.to_node(bytes.fromhex(text))
    certificates = list(roster)
    by_key: dict[str, list[Certificate]] = {}
    for certificate in certificates:
        by_key.setdefault(name_key(certificate.name), []).append(certificate)
    key = name_key(text)
    matches = by_key.get(key, [])
    if len(matches) == 1:
        return Destination.to_node(matches[0].node_id)
    if matches:
        named = ", ".join(f"node:{c.node_id.hex()} ({display_id(c.node_id)})" for c in matches)
        raise DestinationError(f"{text!r} is the name of {len(matches)} nodes: {named}; give the node id")
    hints = []
    if any(text in c.roles for c in certificates):
        hints.append(f"role:{text} for every node with that role")
    hints += difflib.get_close_matches(key, list(by_key), n=3, cutoff=0.6)
    if not hints:
        hints.append("node:<32 hex digits>, role:<name>, group:<name> or all")
    raise DestinationError(f"no node known here is named {text!r}; did you mean {', '.join(hints)}?")
