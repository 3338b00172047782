"""Reticulum configuration for the LXMF benchmark peers, and the checks that keep them on loopback.

Reticulum creates a default config (with AutoInterface, which multicasts on the LAN) when none exists,
so every peer writes its own config file first, verifies it, and only then starts Reticulum. After the
start, the peer and the orchestrator both look at the process's sockets: anything bound to or connected
to a non-loopback address stops the benchmark.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import psutil

LOOPBACK = "127.0.0.1"
SERVER_NAME = "Bench TCP server"
CLIENT_NAME = "Bench TCP client"
# Interface type -> the only keys it may carry, and which of them holds the address.
ALLOWED_INTERFACES = {
    "TCPServerInterface": ({"type", "enabled", "listen_ip", "listen_port"}, "listen_ip"),
    "TCPClientInterface": ({"type", "enabled", "target_host", "target_port"}, "target_host"),
}
# Everything in rns 1.5.7 that could open a socket besides the configured interfaces, forced off.
SWITCHED_OFF = (
    "share_instance",
    "discover_interfaces",
    "respond_to_probes",
    "enable_remote_management",
    "publish_blackhole",
)


class LoopbackViolation(RuntimeError):
    """A peer's config or sockets would reach beyond 127.0.0.1; the benchmark must not run."""


@dataclass(frozen=True)
class PeerNetwork:
    """What one peer listens on and connects to (ports on 127.0.0.1), and whether it forwards."""

    listen_port: int | None
    connect_port: int | None
    transport: bool


def config_text(network: PeerNetwork) -> str:
    """The whole Reticulum config file for one peer: TCP interfaces on 127.0.0.1 only."""
    lines = [
        "[reticulum]",
        f"  enable_transport = {'Yes' if network.transport else 'No'}",
        *(f"  {option} = No" for option in SWITCHED_OFF),
        "",
        "[logging]",
        "  loglevel = 2",
        "",
        "[interfaces]",
    ]
    if network.listen_port is not None:
        lines += [
            f"  [[{SERVER_NAME}]]",
            "    type = TCPServerInterface",
            "    enabled = Yes",
            f"    listen_ip = {LOOPBACK}",
            f"    listen_port = {network.listen_port}",
        ]
    if network.connect_port is not None:
        lines += [
            f"  [[{CLIENT_NAME}]]",
            "    type = TCPClientInterface",
            "    enabled = Yes",
            f"    target_host = {LOOPBACK}",
            f"    target_port = {network.connect_port}",
        ]
    return "\n".join(lines) + "\n"


def interface_names(network: PeerNetwork) -> set[str]:
    """Names of the interfaces the config defines: the peer waits until each of them is online."""
    return {
        name
        for name, port in ((SERVER_NAME, network.listen_port), (CLIENT_NAME, network.connect_port))
        if port is not None
    }


def write_config(configdir: Path, network: PeerNetwork) -> Path:
    """Write the config into a fresh directory and verify it before anything reads it."""
    configdir.mkdir(parents=True, exist_ok=False)
    path = configdir / "config"
    path.write_text(config_text(network))
    verify_config(path, network)
    return path


def verify_config(path: Path, network: PeerNetwork) -> None:
    """Re-read the file the way Reticulum will and refuse anything but loopback TCP interfaces."""
    from RNS.vendor.configobj import ConfigObj  # Reticulum's own parser: what it sees is what we check

    config = ConfigObj(str(path))
    options = config["reticulum"]
    for option in SWITCHED_OFF:
        if options.as_bool(option):
            raise LoopbackViolation(f"{path}: [reticulum] {option} must be No")
    if options.as_bool("enable_transport") != network.transport:
        raise LoopbackViolation(f"{path}: enable_transport must be {network.transport}")
    interfaces = config["interfaces"]
    expected = (network.listen_port is not None) + (network.connect_port is not None)
    if len(interfaces) != expected:
        raise LoopbackViolation(f"{path}: expected {expected} interfaces, found {list(interfaces)}")
    for name in interfaces:
        section = interfaces[name]
        kind = section.get("type")
        if kind not in ALLOWED_INTERFACES:
            raise LoopbackViolation(f"{path}: interface {name!r} has type {kind!r}; only TCP on loopback")
        allowed_keys, address_key = ALLOWED_INTERFACES[kind]
        if set(section) - allowed_keys or section.get(address_key) != LOOPBACK:
            raise LoopbackViolation(f"{path}: interface {name!r} must only use {address_key} = {LOOPBACK}")


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def verify_loopback_sockets(pid: int) -> int:
    """Raise if process ``pid`` has an inet socket off loopback; return how many inet sockets it has."""
    connections = psutil.Process(pid).net_connections(kind="inet")
    for connection in connections:
        ends = [connection.laddr, connection.raddr]
        for end in ends:
            if end and not _is_loopback(end.ip):
                raise LoopbackViolation(
                    f"process {pid} has a socket {connection.laddr} -> {connection.raddr or '-'} "
                    f"({connection.status}) off loopback; stop and check its Reticulum config"
                )
    return len(connections)
