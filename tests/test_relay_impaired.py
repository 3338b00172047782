"""Two relay processes whose IP link runs through a user-space impairment proxy the test owns
(delay, bandwidth cap, loss as connection resets, blackhole then heal, resets): everything arrives
exactly once, and FLASH/IMMEDIATE sent behind a BULK backlog overtake it.

    command-post  <-ip-  [impair proxy]  <-ip-  responder-1
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from relay_field import ProxyThread

from field.harness import (
    journal_count,
    journal_messages,
    preload,
    running_field,
    send_many,
    wait_until,
)
from field.processes import FieldNode
from relay.bundle import Priority

CHAIN = ("command-post", "responder-1")
BACKLOG = 2000
CAP = 30_000.0  # bytes/s through the proxy while the backlog drains
SLOW_CAP = 3_000.0  # a cellular path squeezed to a trickle
SLOW_BACKLOG = 500


def test_impaired_link_delivers_everything_in_priority_order(tmp_path: Path) -> None:
    with running_field(tmp_path, CHAIN, started=("command-post",)) as field:
        post, responder = field.nodes
        to_post = f"node:{field.node_id('command-post')}"
        with ProxyThread(post.ip_port) as path:
            proxy = path.proxy
            _dial_through(responder, post, proxy.address)

            # Delay and a bandwidth cap; a BULK backlog, then urgent traffic behind it.
            backlog = [f"bulk {i:05d}" for i in range(BACKLOG)]
            asyncio.run(
                preload(responder, bytes.fromhex(field.node_id("command-post")), backlog, Priority.BULK)
            )
            proxy.delay, proxy.bandwidth = 0.05, CAP
            proxy.blackhole = True  # the path is dark while the node starts: the backlog is queued
            field.start_healthy("responder-1")
            urgent = [f"flash {i}" for i in range(5)]
            asyncio.run(send_many(responder, field.token, to_post, urgent, priority="FLASH", concurrency=1))
            immediate = [f"immediate {i}" for i in range(5)]
            asyncio.run(send_many(responder, field.token, to_post, immediate, priority="IMMEDIATE"))
            proxy.blackhole = False  # the path comes back (a dark TCP stream is broken: reset it)
            path.call(proxy.reset_all)
            wait_until(lambda: _count(post, "flash ", "immediate "), 10, 60, "FLASH and IMMEDIATE")
            bulk_before = _count(post, "bulk ")
            assert bulk_before < BACKLOG // 2, f"{bulk_before} BULK bundles arrived before the urgent ones"

            # Loss: the path drops (connection resets) on some chunks.
            proxy.delay, proxy.bandwidth, proxy.reset_probability = 0.0, None, 0.05
            lossy = [f"lossy {i}" for i in range(40)]
            asyncio.run(send_many(responder, field.token, to_post, lossy))
            time.sleep(2.0)
            proxy.reset_probability = 0.0

            # Blackhole: accepted, nothing forwarded; then the path heals (the operator resets it).
            wait_until(lambda: journal_count(post), BACKLOG + 50, 180, "everything before the blackhole")
            proxy.blackhole = True
            dark = [f"dark {i}" for i in range(20)]
            asyncio.run(send_many(responder, field.token, to_post, dark))
            time.sleep(2.0)
            assert _count(post, "dark ") == 0
            proxy.blackhole = False
            path.call(proxy.reset_all)

            # Resets in the middle of a transfer.
            reset = [f"reset {i}" for i in range(40)]
            asyncio.run(send_many(responder, field.token, to_post, reset))
            path.call(proxy.reset_all)

            expected = [*backlog, *urgent, *immediate, *lossy, *dark, *reset]
            wait_until(lambda: journal_count(post), len(expected), 180, "everything after healing")
            time.sleep(1.0)
            arrived = journal_messages(post)
            assert sorted(text for _, _, text, _ in arrived) == sorted(expected)  # once each
            assert proxy.resets > 0 and proxy.connections_accepted > 1


def test_a_trickle_of_a_path_keeps_the_link_up_and_flash_overtakes_the_backlog(tmp_path: Path) -> None:
    """At 3 kB/s the link's send window keeps the path's queue short: the peers never declare each
    other dead, and a FLASH message waits behind about one window of BULK, not the whole backlog."""
    with running_field(tmp_path, CHAIN, started=("command-post",)) as field:
        post, responder = field.nodes
        with ProxyThread(post.ip_port) as path:
            proxy = path.proxy
            _dial_through(responder, post, proxy.address)
            backlog = [f"bulk {i:05d}" for i in range(SLOW_BACKLOG)]
            asyncio.run(
                preload(responder, bytes.fromhex(field.node_id("command-post")), backlog, Priority.BULK)
            )
            proxy.delay, proxy.bandwidth = 0.05, SLOW_CAP
            field.start_healthy("responder-1")
            wait_until(lambda: _count(post, "bulk "), 20, 60, "the first BULK bundles")
            to_post = f"node:{field.node_id('command-post')}"
            asyncio.run(send_many(responder, field.token, to_post, ["flash 0"], priority="FLASH"))
            # A window holds about a second of the path; the FLASH bundle and its custody signal
            # cross it a few times over; the backlog alone needs about 15 s at this rate.
            wait_until(lambda: _count(post, "flash "), 1, 8, "the FLASH bundle behind the backlog")
            assert _count(post, "bulk ") < SLOW_BACKLOG
            wait_until(lambda: journal_count(post), SLOW_BACKLOG + 1, 180, "the whole backlog")
            # read before the proxy closes its connections (that is a real "down")
            logs = "".join(log.read_text() for log in (field.root / "logs").iterdir())
        assert " up" in logs and " down: " not in logs, "a peer was declared dead on a slow but live path"
        assert sorted(text for _, _, text, _ in journal_messages(post)) == sorted([*backlog, "flash 0"])


def _dial_through(node: FieldNode, target: FieldNode, address: str) -> None:
    """Make ``node`` dial ``target`` through ``address`` (the proxy) instead of directly."""
    direct = f'peers = ["tcp://127.0.0.1:{target.ip_port}"]'
    config = node.config.read_text()
    assert direct in config
    node.config.write_text(config.replace(direct, f'peers = ["{address}"]'))


def _count(node: FieldNode, *prefixes: str) -> int:
    return sum(1 for _, _, text, _ in journal_messages(node) if text.startswith(prefixes))
