"""Configuration, observable state and errors of the LoRa link, and opening the library interface."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from relay.links.base import LinkError
from relay.links.lora_phy import Preset, Region

BROADCAST_NUM = 0xFFFFFFFF

NodeNum = Annotated[int, Field(gt=0, lt=BROADCAST_NUM)]


def _node_id(value: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{32}", value):
        raise ValueError(f"must be a Mesh112 node id (32 hex digits), got {value!r}")
    return value


NodeIdHex = Annotated[
    str, AfterValidator(_node_id), Field(json_schema_extra={"pattern": "^[0-9a-fA-F]{32}$"})
]
Seconds = Annotated[float, Field(gt=0)]


class LoRaLinkConfig(BaseModel):
    """A ``[[links]]`` table of type "lora": which radio to use and how.

    Strict: ``port = "4403"`` is refused, not read as a number, and a region or preset the
    Meshtastic firmware does not list is refused rather than budgeted at 100 % airtime.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    type: Literal["lora"] = "lora"
    name: str = Field(default="lora0", min_length=1)
    transport: Literal["tcp", "serial", "ble"] = "tcp"
    address: str = Field(
        default="127.0.0.1", min_length=1, description="TCP host, serial device path, or BLE name"
    )
    port: int = Field(default=4403, ge=1, le=65535, description="TCP only")
    preset: Preset = "LONG_FAST"
    region: Region = Field(default="EU_868", description="must match the radio's own; sets the duty cycle")
    app_port: int = Field(
        default=300, ge=256, le=511, description="private Meshtastic port, 256-511 but not 257"
    )
    roster: dict[NodeNum, NodeIdHex] = Field(
        default_factory=dict,
        description="Meshtastic node number = Mesh112 node id (32 hex digits)",
        json_schema_extra={"propertyNames": {"pattern": "^[0-9]+$"}},
    )
    implicit_ack: bool = Field(
        default=True,
        description="a relay forwarding a FLASH it got on this link sends no custody ACK: its forward goes "
        "as a channel broadcast tagged for the next hop and for the neighbours it acknowledges",
    )
    ack_timeout_s: Seconds = 60.0
    connect_timeout_s: Seconds = 30.0
    reconnect_min_s: Seconds = 0.5
    reconnect_max_s: Seconds = 30.0
    max_reconnect_attempts: int = Field(default=10_000, ge=1)

    @field_validator("roster", mode="before")
    @classmethod
    def _numbers_from_toml_keys(cls, value: object) -> object:
        """TOML keys are text: ``[links.roster]`` ``12345 = "..."`` names node number 12345."""
        if isinstance(value, dict):
            return {int(k) if isinstance(k, str) and k.isdecimal() else k: v for k, v in value.items()}
        return value

    @field_validator("app_port")
    @classmethod
    def _not_atak(cls, value: int) -> int:
        if value == 257:
            raise ValueError("257 is ATAK's port; use another private port 256-511")
        return value


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
    # implicit custody ACKs: neighbours our forwards acknowledged, forwards of others we took as
    # our ACK, and tagged broadcasts none of whose tags was ours (a neighbour's forward to others,
    # or garbage under a rostered radio's number)
    implicit_acks_sent: int = 0
    frames_overheard: int = 0
    broadcasts_for_others: int = 0
    last_error: str = ""


class LoRaNakError(LinkError):
    """The radio or the mesh refused a frame; ``reason`` is Meshtastic's Routing.Error name."""

    def __init__(self, reason: str, dest: int) -> None:
        self.reason = reason
        super().__init__(f"LoRa radio refused the frame to !{dest:08x}: {reason}")


class RadioMismatchError(LinkError):
    """The radio runs another region or preset than the configuration: the link stays down rather
    than budget airtime for a band and modulation the radio is not using."""


def check_radio(config: LoRaLinkConfig, lora: Any) -> None:
    """Compare the radio's own ``localConfig.lora`` (as the library read it on connecting) with
    ``config``; RadioMismatchError says what differs and how to fix it."""
    from meshtastic.protobuf import config_pb2

    names = config_pb2.Config.LoRaConfig
    region = names.RegionCode.Name(lora.region)
    preset = names.ModemPreset.Name(lora.modem_preset) if lora.use_preset else "custom modem settings"
    if (region, preset) != (config.region, config.preset):
        raise RadioMismatchError(
            f"the radio is set to region {region} with {preset}, but link {config.name} is configured "
            f"for {config.region} with {config.preset}; set the radio (meshtastic --set lora.region ..., "
            "--set lora.modem_preset ...) or the link's region and preset to what is legal here"
        )


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
