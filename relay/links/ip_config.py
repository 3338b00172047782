"""What a node.toml ``[[links]]`` table of type "ip" may say, validated before any socket opens.

The link itself (:class:`relay.links.ip.IpLinkConfig`) takes TLS material rather than a switch; this
module stays free of pynng so that checking a configuration loads no network code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

SCHEMES = ("tcp://", "tls+tcp://")
# 1 Gbit/s: the sender's pacing and the core's send budget follow it and must not cap a LAN (10 MB/s
# held 10 kB bundles on loopback to 7-8 MB/s); a slower path is found by the window (ip_window.py).
DEFAULT_BITRATE = 125_000_000.0


def _address(value: str) -> str:
    if not value.startswith(SCHEMES) or len(value) <= len("tcp://"):
        raise ValueError(f"must start with tcp:// or tls+tcp:// (like tcp://192.0.2.1:7001), got {value!r}")
    return value


Address = Annotated[
    str, AfterValidator(_address), Field(json_schema_extra={"pattern": "^(tcp|tls\\+tcp)://"})
]
PositiveNumber = Annotated[float, Field(gt=0)]


def check_endpoints(listen: str | None, peers: Sequence[str]) -> None:
    """A link that neither listens nor dials would never come up."""
    if not listen and not peers:
        raise ValueError("give a listen address, peers to dial, or both")


class IpLinkOptions(BaseModel):
    """A ``[[links]]`` table of type "ip" (keys documented in deploy/node.example.toml)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    type: Literal["ip"] = "ip"
    name: str = Field(default="ip0", min_length=1)
    listen: Address | None = Field(
        default=None, description='accept connections, e.g. "tls+tcp://0.0.0.0:7001"'
    )
    peers: list[Address] = Field(default_factory=list, description="addresses to dial")
    tls: bool = Field(
        default=False, description="self-signed TLS material in the data directory; needed for tls+tcp://"
    )
    bitrate: PositiveNumber = Field(default=DEFAULT_BITRATE, description="bytes/s the scheduler plans with")
    keepalive_interval: PositiveNumber = Field(
        default=1.0,
        description="seconds between PINGs on an idle link: 1 for relays; a phone or battery profile "
        "sets a long one (the app's enrolment writes 60), and a relay facing it then only watches its "
        "pings instead of pinging every second",
    )
    keepalive_misses: int = Field(
        default=3, ge=1, description="silent intervals before the peer counts as gone"
    )

    @model_validator(mode="after")
    def _consistent(self) -> IpLinkOptions:
        check_endpoints(self.listen, self.peers)
        tls_addresses = [a for a in (self.listen, *self.peers) if a and a.startswith("tls+tcp://")]
        if tls_addresses and not self.tls:
            raise ValueError(f"{tls_addresses[0]} needs tls = true")
        return self
