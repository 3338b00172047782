"""One LXMF/Reticulum peer of the benchmark, run as its own process (RNS is one instance per process).

``python -m bench._lxmf_peer --role receiver|transport|sender --configdir DIR [--listen-port P]
[--connect-port P] --timeout S``

It writes and verifies its Reticulum config (TCP on 127.0.0.1 only) before starting Reticulum, checks
its sockets after start, then talks to the orchestrator (``bench/_lxmf_field.py``) in JSON lines:
commands on stdin, events on stdout. Reticulum's own log goes to ``DIR/logfile``; anything else that
prints goes to stderr, so stdout carries only events. A watchdog ends the process after ``--timeout``
seconds whatever happens; end of stdin (the orchestrator is gone) ends it too.

Message texts start with ``<tag>-<index>`` so the receiver can report which message arrived.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from bench._lxmf_config import PeerNetwork, interface_names, verify_loopback_sockets, write_config

HARD_TIMEOUT_EXIT = 3
ONLINE_WAIT = 20.0
PATH_REQUEST_EVERY = 2.0


class PeerTimeout(RuntimeError):
    """A bounded wait inside the peer ran out; the message says what it was waiting for."""


class Events:
    """JSON lines to the orchestrator, one per event; callbacks arrive on RNS threads, hence the lock."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields})
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


def label_text(tag: str, index: int, size: int) -> str:
    """A text of exactly ``size`` characters: ``tag-index`` then random base64 (nothing to compress)."""
    head = f"{tag}-{index:06d} "
    if size < len(head) + 4:
        raise ValueError(
            f"body of {size} B is too small for the label {head!r}; use at least {len(head) + 4}"
        )
    return head + base64.b64encode(os.urandom(size)).decode()[: size - len(head)]


def parse_label(text: str) -> tuple[str, int]:
    tag, _, index = text.split(" ", 1)[0].rpartition("-")
    return tag, int(index)


def _wait(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise PeerTimeout(f"gave up after {seconds:.0f} s waiting for {what}")
        time.sleep(0.005)


class Receiver:
    """An LXMF router with one delivery destination; reports every delivery with its wall-clock time."""

    def __init__(self, configdir: Path, events: Events) -> None:
        import LXMF
        import RNS

        self._events = events
        identity = RNS.Identity()
        identity.to_file(str(configdir / "identity"))
        self._router = LXMF.LXMRouter(identity=identity, storagepath=str(configdir / "lxmf"))
        self.destination = self._router.register_delivery_identity(identity, display_name="bench-rx")
        self._router.register_delivery_callback(self._delivered)

    def ready_fields(self) -> dict[str, Any]:
        return {"destination": self.destination.hash.hex()}

    def _delivered(self, message: Any) -> None:
        at = time.time()
        tag, index = parse_label(message.content_as_string())
        self._events.emit("delivered", tag=tag, index=index, at=at, bytes=len(message.content))

    def handle(self, command: dict[str, Any]) -> None:
        if command["cmd"] != "announce":
            raise ValueError(f"receiver does not know command {command['cmd']!r}")
        self._router.announce(self.destination.hash)
        self._events.emit("announced")


class Sender:
    """An LXMF router that sends DIRECT messages over one link to the receiver, in the three modes."""

    def __init__(self, configdir: Path, events: Events) -> None:
        import LXMF
        import RNS

        self._events = events
        identity = RNS.Identity()
        identity.to_file(str(configdir / "identity"))
        self._router = LXMF.LXMRouter(identity=identity, storagepath=str(configdir / "lxmf"))
        self._source = self._router.register_delivery_identity(identity, display_name="bench-tx")
        self._destination: Any = None

    def ready_fields(self) -> dict[str, Any]:
        return {"destination": self._source.hash.hex()}

    def handle(self, command: dict[str, Any]) -> None:
        actions: dict[str, Callable[..., None]] = {
            "connect": self._connect,
            "api": self._api,
            "bulk": self._bulk,
            "latency_one": self._one,
        }
        if command["cmd"] not in actions:
            raise ValueError(f"sender does not know command {command['cmd']!r}")
        arguments = {key: value for key, value in command.items() if key != "cmd"}
        actions[command["cmd"]](**arguments)

    def _message(self, tag: str, index: int, body_bytes: int) -> Any:
        import LXMF

        text = label_text(tag, index, body_bytes)
        return LXMF.LXMessage(self._destination, self._source, text, desired_method=LXMF.LXMessage.DIRECT)

    def _connect(self, destination: str, body_bytes: int, timeout: float) -> None:
        """Find the path (requesting it if the announce has not arrived), then warm the link up."""
        import LXMF
        import RNS

        started = time.monotonic()
        target = bytes.fromhex(destination)
        last_request = -PATH_REQUEST_EVERY
        path_requests = 0
        deadline = started + timeout
        while not RNS.Transport.has_path(target):
            now = time.monotonic()
            if now > deadline:
                raise PeerTimeout(
                    f"no path to {destination} after {timeout:.0f} s ({path_requests} requests)"
                )
            if now - last_request >= PATH_REQUEST_EVERY:
                RNS.Transport.request_path(target)
                last_request, path_requests = now, path_requests + 1
            time.sleep(0.01)
        identity = RNS.Identity.recall(target)
        if identity is None:
            raise PeerTimeout(f"path to {destination} known but its identity was not recalled")
        self._destination = RNS.Destination(
            identity, RNS.Destination.OUT, RNS.Destination.SINGLE, "lxmf", "delivery"
        )
        warm = self._message("warm", 0, body_bytes)
        self._router.handle_outbound(warm)
        _wait(
            lambda: warm.state in (LXMF.LXMessage.DELIVERED, LXMF.LXMessage.FAILED),
            max(1.0, deadline - time.monotonic()),
            "the warm-up message to be confirmed",
        )
        if warm.state != LXMF.LXMessage.DELIVERED:
            raise PeerTimeout("the warm-up message over the new link FAILED")
        self._events.emit(
            "connected",
            hops=RNS.Transport.hops_to(target),
            path_requests=path_requests,
            seconds=time.monotonic() - started,
        )

    def _api(self, count: int, body_bytes: int, timeout: float) -> None:
        """``count`` messages through ``handle_outbound()``, one after another, as apps send them."""
        messages = []
        for index in range(count):
            message = self._message("api", index, body_bytes)
            at = time.time()
            self._router.handle_outbound(message)
            self._events.emit("submitted", tag="api", index=index, at=at)
            messages.append(message)
        self._conclude("api", messages, timeout)

    def _bulk(self, count: int, body_bytes: int, timeout: float) -> None:
        """Upper bound of the stack: what ``handle_outbound()`` does, minus its 50 ms busy-wait per message,
        then one ``process_outbound()`` pass for all (LXMF internals, as the research note measured)."""
        import LXMF

        started = time.time()
        messages = [self._message("bulk", index, body_bytes) for index in range(count)]
        for message in messages:
            message.state = LXMF.LXMessage.OUTBOUND
            message.pack()
            message.determine_transport_encryption()
        self._router.pending_outbound.extend(messages)
        self._events.emit("submitted", tag="bulk", index=0, at=started)
        # process_outbound() returns at once if the router's own 4 s job pass holds the lock: retry.
        deadline = time.monotonic() + timeout
        while any(message.state == LXMF.LXMessage.OUTBOUND for message in messages):
            if time.monotonic() > deadline:
                raise PeerTimeout("bulk messages never left the outbound queue")
            _wait(lambda: not self._router.outbound_processing_lock.locked(), timeout, "the outbound lock")
            self._router.process_outbound()
        self._conclude("bulk", messages, max(1.0, deadline - time.monotonic()))

    def _one(self, index: int, body_bytes: int) -> None:
        message = self._message("lat", index, body_bytes)
        at = time.time()
        self._router.handle_outbound(message)
        self._events.emit("submitted", tag="lat", index=index, at=at)

    def _conclude(self, tag: str, messages: list[Any], timeout: float) -> None:
        """Wait (bounded) until LXMF settles every message, then report its final states."""
        import LXMF

        final = (
            LXMF.LXMessage.DELIVERED,
            LXMF.LXMessage.FAILED,
            LXMF.LXMessage.REJECTED,
            LXMF.LXMessage.CANCELLED,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(m.state not in final for m in messages):
            time.sleep(0.02)
        states = [m.state for m in messages]
        self._events.emit(
            "done",
            tag=tag,
            delivered=states.count(LXMF.LXMessage.DELIVERED),
            failed=states.count(LXMF.LXMessage.FAILED),
            unsettled=sum(state not in final for state in states),
        )


class Transport:
    """A forwarding node (enable_transport = Yes) with no application on it."""

    def __init__(self, configdir: Path, events: Events) -> None:
        del configdir, events

    def ready_fields(self) -> dict[str, Any]:
        return {}

    def handle(self, command: dict[str, Any]) -> None:
        raise ValueError(f"transport does not know command {command['cmd']!r}")


ROLES: dict[str, type[Receiver | Sender | Transport]] = {
    "receiver": Receiver,
    "sender": Sender,
    "transport": Transport,
}


def _take_stdout() -> IO[str]:
    """Keep the real stdout for events and point file descriptor 1 at stderr for everything else."""
    events = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return events


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench._lxmf_peer", description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=sorted(ROLES), required=True)
    parser.add_argument("--configdir", type=Path, required=True, help="fresh directory for this peer")
    parser.add_argument("--listen-port", type=int, help="run a TCPServerInterface on 127.0.0.1:PORT")
    parser.add_argument("--connect-port", type=int, help="run a TCPClientInterface to 127.0.0.1:PORT")
    parser.add_argument("--timeout", type=float, required=True, help="hard limit on this process, seconds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    events = Events(_take_stdout())
    watchdog = threading.Timer(args.timeout, os._exit, (HARD_TIMEOUT_EXIT,))
    watchdog.daemon = True
    watchdog.start()

    network = PeerNetwork(args.listen_port, args.connect_port, transport=args.role == "transport")
    write_config(args.configdir, network)

    import LXMF
    import RNS

    RNS.Reticulum(configdir=str(args.configdir), loglevel=RNS.LOG_WARNING, logdest=RNS.LOG_FILE)
    configured = interface_names(network)
    _wait(
        lambda: configured <= {i.name for i in RNS.Transport.interfaces if i.online},
        ONLINE_WAIT,
        f"the interfaces {sorted(configured)} to come online",
    )
    sockets = verify_loopback_sockets(os.getpid())
    peer = ROLES[args.role](args.configdir, events)
    events.emit(
        "ready",
        role=args.role,
        pid=os.getpid(),
        sockets=sockets,
        rns_version=RNS.__version__,
        lxmf_version=LXMF.__version__,
        **peer.ready_fields(),
    )
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "quit":
            break
        if command["cmd"] == "check":
            events.emit("checked", sockets=verify_loopback_sockets(os.getpid()))
        else:
            peer.handle(command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
