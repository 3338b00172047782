"""The demo field on one machine: real relay processes on loopback, with traffic flowing.

``mesh112 demo`` makes (or reuses) the demo deployment, wires its nodes in a chain over loopback IP

    responder-1 ⇄ relay-2 ⇄ relay-1 ⇄ command-post (API + dashboard on 127.0.0.1:8112)

plus a LoRa segment on emulated radios (:mod:`field.radio`): command-post, relay-1 and a
building-gateway node (LoRa only) that takes NG112 alarms over SIP on 127.0.0.1:5062; a camera box
(:mod:`field.camera`) and responder-2's helmet camera (:mod:`field.helmet`), which streams live
video over a ``webrtc`` link to the command post, where the console shows it;

writes each node's ``node.toml`` and roster, starts one ``mesh112 relay run`` process per node,
issues a token for the demo operator and prints the dashboard address. A traffic loop then sends
messages from the field through the field nodes' own APIs, and responder-1 reports its position as it
walks, so every bundle crosses real sockets and real stores. Ctrl-C stops every process it started, by PID.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from crypto.identity import Identity
from field.camera import CAMERA_SLUG, start_camera
from field.deployment import DemoDeployment, create_demo_deployment
from field.helmet import HELMET_SLUG, add_webrtc_link, start_helmet
from field.panel import DemoPanel
from field.radio import (
    LORA_PORT,
    PANEL_PORT,
    PANEL_SECRET,
    SIP_PORT,
    observer_radio,
    start_emulator,
    start_gateway,
    write_radio_segment,
)
from relay.api.tokens import issue_token
from relay.daemon import ROSTER_DIR

API_PORT = 8112
IP_PORT = 7112
COMMAND_POST = "command-post"
CHAIN = (COMMAND_POST, "relay-1", "relay-2", "responder-1")
APP_NODE = "responder-1"  # with a display, the responder app runs this node (make run)
TOKEN_DAYS = 7
WALK_CENTRE = (48.2071, 16.3711)  # responder-1 walks round the demo building (degrees north, east)
WALK_STEPS = 60


@dataclass(frozen=True, slots=True)
class FieldNode:
    slug: str
    directory: Path
    api_port: int
    ip_port: int

    @property
    def config(self) -> Path:
        return self.directory / "node.toml"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


def node_config(
    name: str,
    roles: tuple[str, ...],
    api_port: int,
    ip_port: int,
    dial: list[int],
    api_rate: float | None = None,
    command_post: bytes | None = None,
    ip_bitrate: float | None = None,
) -> str:
    """``api_rate``: requests per second per operator (burst the same), for bulk loaders; None: default.
    ``command_post``: the node id this node's position reports go to by default.
    ``ip_bitrate``: bytes/s the IP link paces DATA to; None: the link's default."""
    peers = ", ".join(f'"tcp://127.0.0.1:{port}"' for port in dial)
    bitrate = f"bitrate = {ip_bitrate}\n" if ip_bitrate else ""
    rate = f"rate_per_s = {api_rate}\nrate_burst = {api_rate}\n" if api_rate else ""
    post = f'command_post = "{command_post.hex()}"\n' if command_post else ""
    return f"""# Written by mesh112 demo: a node of the demo field on loopback.
[node]
name = "{name}"
roles = {list(roles)!r}
{post}
[store]
quota_mb = 256

[api]
enabled = true
listen = "127.0.0.1:{api_port}"
{rate}
[[links]]
type = "ip"
name = "ip0"
listen = "tcp://127.0.0.1:{ip_port}"
peers = [{peers}]
{bitrate}""".replace("'", '"')


def write_field(
    deployment: DemoDeployment,
    api_port: int = API_PORT,
    ip_port: int = IP_PORT,
    chain: Sequence[str] = CHAIN,
    api_rate: float | None = None,
    ip_bitrate: float | None = None,
) -> list[FieldNode]:
    """Configs and rosters for ``chain`` (demo node slugs); each node dials the one before it, and
    the others name the command post as where their position reports go."""
    by_slug = {node.directory.name: node for node in deployment.nodes}
    post_id = by_slug[COMMAND_POST].node_id
    field = []
    for index, slug in enumerate(chain):
        node = by_slug[slug]
        dial = [ip_port + index - 1] if index else []
        post = None if slug == COMMAND_POST else post_id
        config = node_config(
            node.name, node.roles, api_port + index, ip_port + index, dial, api_rate, post, ip_bitrate
        )
        node.config.write_text(config)
        roster = node.directory / ROSTER_DIR
        roster.mkdir(exist_ok=True)
        for other in deployment.nodes:
            (roster / f"{other.node_id.hex()}.cert").write_bytes(other.certificate.encode())
        field.append(FieldNode(slug, node.directory, api_port + index, ip_port + index))
    return field


def operator_token(deployment: DemoDeployment, roles: frozenset[str], name: str) -> str:
    """A fresh operator identity enrolled with ``roles``, and its API token."""
    now = int(time.time())
    operator = Identity.generate()
    certificate = deployment.authority.issue(operator.public, roles, name, now + TOKEN_DAYS * 86_400, now=now)
    deployment.authority.save(deployment.authority_dir)
    return issue_token(deployment.authority.identity, certificate, now + TOKEN_DAYS * 86_400)


def start_node(node: FieldNode, log_dir: Path) -> subprocess.Popen[bytes]:
    log = (log_dir / f"{node.slug}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "relay", "relay", "run", "--config", str(node.config), "--json-logs"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_healthy(nodes: list[FieldNode], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    for node in nodes:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{node.api}/healthz", timeout=1.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{node.slug} did not answer on {node.api} within {timeout:.0f} s")
            time.sleep(0.2)


def stop_all(processes: list[subprocess.Popen[bytes]], grace: float = 10.0) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def demo_walk(step: int) -> tuple[float, float]:
    """Responder 1's position at ``step``: a slow walk round a circle of about 300 m, a lap per 60 steps."""
    angle = 2 * math.pi * (step % WALK_STEPS) / WALK_STEPS
    return WALK_CENTRE[0] + 0.0027 * math.sin(angle), WALK_CENTRE[1] + 0.004 * math.cos(angle)


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (``timeout``, a service manager) or Ctrl-C stops the field: every child by PID. Any
    later signal is ignored from here, before the clean-up starts: `make run` passes a SIGTERM sent
    to its process group on once more, and one that came before the clean-up's own first line raised
    a second KeyboardInterrupt out of it, leaving the children (in their own sessions) running."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def run_demo(root: Path, *, duration: float | None = None, interval: float = 5.0) -> int:
    deployment = create_demo_deployment(root)
    *field, camera, helmet = write_field(deployment, chain=(*CHAIN, CAMERA_SLUG, HELMET_SLUG))
    post_id = deployment.node("Command Post").node_id
    add_webrtc_link(field[0].config)  # the command post answers video offers, records and relays them
    app_node = next(node for node in field if node.slug == APP_NODE)
    with_app = bool(os.environ.get("DISPLAY"))
    if with_app:  # the responder app is responder-1's node (one store, one process): no relay process
        field = [node for node in field if node is not app_node]
        settings = app_node.directory / "app.toml"
        if not settings.exists():
            settings.write_text(f"position = [{WALK_CENTRE[0]}, {WALK_CENTRE[1]}]\n")
    radio = write_radio_segment(deployment, root)
    observer = observer_radio()
    panel = DemoPanel(PANEL_PORT, lambda line: print(line, flush=True))
    dispatcher = operator_token(deployment, frozenset({"admin", "dispatcher"}), "Demo Dispatcher")
    responder = operator_token(deployment, frozenset({"responder"}), "Demo Responder")
    log_dir = root / "logs"
    log_dir.mkdir(exist_ok=True)
    radio_processes = [start_emulator(radio.emulator_config, log_dir / "lora-emulator.log")]
    processes = [start_node(node, log_dir) for node in field]
    gateway_log = log_dir / "building-gateway.log"
    radio_processes.append(
        start_gateway(radio.gateway_config, radio.buildings, SIP_PORT, gateway_log, radio.command_post)
    )
    radio_processes.append(start_camera(camera.directory, radio.command_post, log_dir / "camera-1.log"))
    clip = camera.directory / "clip.mkv"  # start_camera made it
    radio_processes.append(start_helmet(helmet.directory, post_id, clip, log_dir / f"{HELMET_SLUG}.log"))
    app_command = [sys.executable, "-m", "mobile", "--node", str(app_node.directory)]
    try:
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
        panel.start()
        wait_healthy(field)
        if with_app:
            app_log = (log_dir / "responder-app.log").open("ab")
            processes.append(subprocess.Popen(app_command, stdout=app_log, stderr=subprocess.STDOUT))
        post = field[0]
        walker = None if with_app else app_node  # the app reports its own position
        print("Mesh112 demo field is running:")
        for node, process in zip(field, processes, strict=False):
            print(f"  {node.slug:<13} pid {process.pid:<7} api {node.api}  ip :{node.ip_port}")
        print(f"  {'lora-emulator':<13} pid {radio_processes[0].pid:<7} radios on tcp :{LORA_PORT}..")
        print(f"  {'building-gw':<13} pid {radio_processes[1].pid:<7} sip :{SIP_PORT} (LoRa only)")
        print(f"  {'camera-1':<13} pid {radio_processes[2].pid:<7} ip :{camera.ip_port} (generated clip)")
        print(
            f"  {HELMET_SLUG:<13} pid {radio_processes[3].pid:<7} ip :{helmet.ip_port}"
            " helmet camera: live video over WebRTC to the command post"
        )
        print(
            f"\nSend a building alarm: sipsak -vv -f {radio.alarm_message} -s sip:ng112@127.0.0.1:{SIP_PORT}"
            f" -u fire-panel-17 -a {PANEL_SECRET}"
        )
        print(f"The building's acknowledgements go to its panel, sip:fire-panel-17@127.0.0.1:{PANEL_PORT}")
        print("  (UDP), played here by a small panel that prints each one.")
        print(
            f"Talk as a stock Meshtastic user: meshtastic --host 127.0.0.1:{observer.port} --sendtext 'help'"
        )
        print("  (the observer radio has no node; each emulated radio takes one client at a time, so a stock")
        print("  client on a node's radio knocks that node off the air)")
        if with_app:
            print(
                f"  {'responder-app':<13} pid {processes[-1].pid:<7} the responder app (Kivy) as responder-1"
            )
        else:
            print(f"No display: responder-1 runs as a relay. The responder app: {' '.join(app_command)}")
            print("  (with $DISPLAY set, make run opens it in responder-1's place)")
        print(f"\nDashboard: {post.api}/#token={dispatcher}")
        print("  Live video: Responder 2's helmet camera streams to the command post; click it in the")
        print("  console's Live video panel (recorded in command-post/video/).")
        print(f"API docs:  {post.api}/docs")
        print(f"Operator token (dispatcher) for the CLI:\n  export MESH112_TOKEN={dispatcher}")
        print(f"  mesh112 inbox --api {post.api}\n\nLogs in {log_dir}. Ctrl-C stops everything.", flush=True)
        started = time.monotonic()
        count = step = 0
        while duration is None or time.monotonic() - started < duration:
            for node in field[1:]:
                count += 1
                body = {
                    "to": f"node:{deployment.node('Command Post').node_id.hex()}",
                    "text": f"{node.slug}: status report {count}",
                    "priority": "PRIORITY",
                }
                with contextlib.suppress(httpx.HTTPError):
                    httpx.post(
                        f"{node.api}/api/v1/messages",
                        json=body,
                        timeout=5.0,
                        headers={"Authorization": f"Bearer {responder}"},
                    )
            lat, lon = demo_walk(step)
            step += 1
            with contextlib.suppress(httpx.HTTPError):  # to the command post named in responder-1's node.toml
                if walker is not None:
                    httpx.post(
                        f"{walker.api}/api/v1/positions",
                        json={"lat": lat, "lon": lon, "accuracy_m": 5},
                        timeout=5.0,
                        headers={"Authorization": f"Bearer {responder}"},
                    )
            for process, node in zip(processes, field, strict=False):  # the app's window may be closed
                if process.poll() is not None:
                    print(
                        f"{node.slug} exited with {process.returncode}; see {log_dir / (node.slug + '.log')}"
                    )
                    return 1
            if any(process.poll() is not None for process in radio_processes):
                print(f"the LoRa emulator, the building gateway or a camera exited; see {log_dir}")
                return 1
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        # A second signal must not cut the clean-up short: `make run` passes a SIGTERM sent to its
        # process group on to this process once more, and a second Ctrl-C is common. The children
        # run in their own sessions, so an interrupted stop_all would leave them running.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_all([*processes, *radio_processes])
        panel.stop()
    return 0
