"""Configuration, observable state and errors of the LoRa link, and opening the library interface."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from relay.errors import ConfigError
from relay.links.base import LinkError
from relay.links.lora_phy import modem

BROADCAST_NUM = 0xFFFFFFFF
TRANSPORTS = ("tcp", "serial", "ble")


@dataclass(frozen=True, slots=True)
class LoRaLinkConfig:
    """Which radio to use and how; validated on construction."""

    roster: Mapping[int, str]  # Meshtastic node number -> Mesh112 node id (32 hex digits)
    name: str = "lora0"
    transport: str = "tcp"  # "tcp" | "serial" | "ble"
    address: str = "127.0.0.1"  # TCP host, serial device path, or BLE name/address
    port: int = 4403  # TCP only
    preset: str = "LONG_FAST"
    region: str = "EU_868"
    app_port: int = 300  # private Meshtastic port, 256-511 (257 is taken by ATAK)
    ack_timeout_s: float = 60.0
    connect_timeout_s: float = 30.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    max_reconnect_attempts: int = 10_000

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ConfigError(f"LoRa link {self.name}: transport must be one of {', '.join(TRANSPORTS)}")
        if not 256 <= self.app_port <= 511 or self.app_port == 257:
            raise ConfigError(
                f"LoRa link {self.name}: app_port must be a private port 256-511 other than 257"
            )
        try:
            modem(self.preset)
        except ValueError as exc:
            raise ConfigError(f"LoRa link {self.name}: {exc}") from None
        for num, node_id in self.roster.items():
            if not 0 < num < BROADCAST_NUM:
                raise ConfigError(f"LoRa link {self.name}: roster node number {num} is out of range")
            try:
                if len(bytes.fromhex(node_id)) != 16:
                    raise ValueError
            except ValueError:
                raise ConfigError(
                    f"LoRa link {self.name}: roster entry !{num:08x} needs a 32-hex-digit node id"
                ) from None
        if self.ack_timeout_s <= 0 or self.connect_timeout_s <= 0 or self.reconnect_min_s <= 0:
            raise ConfigError(f"LoRa link {self.name}: timeouts must be positive")


@dataclass(frozen=True, slots=True)
class LoRaLinkState:
    """What an operator sees of the radio: connection, queue and why frames failed."""

    connected: bool
    my_num: int | None
    connects: int
    queue_free: int | None
    frames_sent: int
    frames_received: int
    naks: Mapping[str, int] = field(default_factory=dict)
    airtime_last_hour_s: float = 0.0  # own frames, by the Semtech formula (relays and ACKs not seen)
    ack_timeouts: int = 0
    unknown_senders: int = 0
    refused: Mapping[str, int] = field(default_factory=dict)  # frames dropped before the core, by reason
    last_error: str = ""


class LoRaNakError(LinkError):
    """The radio or the mesh refused a frame; ``reason`` is Meshtastic's Routing.Error name."""

    def __init__(self, reason: str, dest: int) -> None:
        self.reason = reason
        super().__init__(f"LoRa radio refused the frame to !{dest:08x}: {reason}")


def open_interface(config: LoRaLinkConfig) -> Any:
    """Connect the library to the radio (blocking: handshake included)."""
    timeout = max(1, round(config.connect_timeout_s))
    if config.transport == "tcp":
        from meshtastic.tcp_interface import TCPInterface

        return TCPInterface(hostname=config.address, portNumber=config.port, timeout=timeout)
    if config.transport == "serial":
        from meshtastic.serial_interface import SerialInterface

        return SerialInterface(devPath=config.address, timeout=timeout)
    from meshtastic.ble_interface import BLEInterface

    return BLEInterface(address=config.address, timeout=timeout)
