"""The node as an Android foreground service, so it keeps running when the app is in the background.

``deploy/android/buildozer.spec`` declares it
(``services = node:mobile/android_service.py:foreground:sticky``): python-for-android runs this
file in the service's own process, shows the foreground notification and restarts it if Android
kills it (sticky); the node directory comes as the service argument (``PYTHON_SERVICE_ARGUMENT``).
The node and its links run headless (:func:`mobile.runtime.run_headless`): they keep relaying,
receive into the node's store (deliveries wait there for the window) and send what is queued,
including an SOS the window confirmed into the app's table but the node never stored.
On Linux it runs the same way for tests: ``python -m mobile.android_service --node DIR``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from mobile.runtime import run_headless
from mobile.settings import AppSettings
from relay.logs import setup_logging

log = logging.getLogger("mesh112.mobile.service")


def node_directory(argv: Sequence[str]) -> Path:
    """The service argument on Android, ``--node DIR`` elsewhere."""
    argument = os.environ.get("PYTHON_SERVICE_ARGUMENT")
    if argument:
        return Path(argument)
    parser = argparse.ArgumentParser(prog="python -m mobile.android_service", description=__doc__)
    parser.add_argument("--node", type=Path, required=True, help="the node directory (node.toml, keys)")
    return Path(parser.parse_args(argv).node)


async def serve(node_dir: Path) -> None:
    """Until SIGTERM or SIGINT (Android stopping the service): then the node stops cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await run_headless(
        node_dir, AppSettings.load(node_dir), stop, on_ready=lambda _: log.info("service ready")
    )


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging("info", False)
    asyncio.run(serve(node_directory(sys.argv[1:] if argv is None else argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
