"""A relay process settles its interpreter once start-up is done (relay/daemon.py,
``settle_interpreter``): what start-up made frozen out of the cycle collector, a young generation of
``GC_FIRST_GENERATION`` objects, and a GIL switch interval of ``SWITCH_INTERVAL_S``. The daemon runs
in this process, so the test puts the interpreter's settings back after it."""

from __future__ import annotations

import asyncio
import gc
import sys
from pathlib import Path

from field.harness import running_field
from relay import daemon
from relay.config import load_config
from relay.node import Node


def test_the_daemon_settles_the_interpreter_when_started(tmp_path: Path, interpreter_restored: None) -> None:
    seen: dict[str, float] = {}
    switch = sys.getswitchinterval()

    async def start_and_stop(config_path: Path) -> None:
        stop = asyncio.Event()

        def ready(node: Node) -> None:
            seen.update(
                switch=sys.getswitchinterval(), young=gc.get_threshold()[0], frozen=gc.get_freeze_count()
            )
            stop.set()

        async with asyncio.timeout(60):
            await daemon.run(load_config(config_path), stop, ready=ready)

    with running_field(tmp_path, ("command-post", "responder-1"), started=()) as field:
        asyncio.run(start_and_stop(field.node("responder-1").config))
    assert seen["switch"] == daemon.SWITCH_INTERVAL_S < switch
    assert seen["young"] == daemon.GC_FIRST_GENERATION
    assert seen["frozen"] > 0
