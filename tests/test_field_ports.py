"""The harness's port ranges: two nodes of one test never get the same port (a CI run once gave
the command post's API and its IP link one port, and the node could not start)."""

from __future__ import annotations

import socket

from field.harness import free_port_base


def test_ranges_handed_out_in_one_process_never_overlap() -> None:
    taken: set[int] = set()
    for _ in range(100):
        base = free_port_base(5)
        ports = set(range(base, base + 5))
        assert not ports & taken
        taken |= ports


def test_a_range_handed_out_is_free_to_listen_on() -> None:
    base = free_port_base(3)
    listeners = [socket.create_server(("127.0.0.1", port)) for port in range(base, base + 3)]
    for listener in listeners:
        listener.close()
