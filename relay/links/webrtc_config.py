"""What a node.toml ``[[links]]`` table of type "webrtc" may say, validated before aiortc loads.

No STUN server is ever used by default: with the internet down a public one is not there, and
waiting on it costs seconds. Host candidates always; relay candidates from the TURN servers listed
(the command post runs one).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

DEFAULT_BITRATE = 125_000.0  # bytes/s (1 Mbit/s) until the path says otherwise


def _node_id(value: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{32}", value):
        raise ValueError(f"must be a node id (32 hex digits), got {value!r}")
    return value.lower()


def _turn_url(value: str) -> str:
    if not re.fullmatch(r"turns?:[^\s?]+(\?transport=(udp|tcp))?", value):
        raise ValueError(f"must be a TURN URL like turn:192.0.2.1:3478, got {value!r}")
    return value


NodeIdHex = Annotated[str, AfterValidator(_node_id)]
PositiveNumber = Annotated[float, Field(gt=0)]


class TurnServer(BaseModel):
    """A TURN server (RFC 8656) with long-term credentials."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    url: Annotated[str, AfterValidator(_turn_url)]
    username: str = Field(min_length=1)
    credential: str = Field(min_length=1)


class WebRtcLinkOptions(BaseModel):
    """A ``[[links]]`` table of type "webrtc" (keys documented in deploy/node.example.toml)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    type: Literal["webrtc"] = "webrtc"
    name: str = Field(default="webrtc0", min_length=1)
    peers: list[NodeIdHex] = Field(
        default_factory=list, description="node ids this link offers a data channel to (the rest answer)"
    )
    turn: list[TurnServer] = Field(default_factory=list, description="TURN servers for relay candidates")
    ipv6: bool = Field(default=False, description="signal IPv6 host candidates as well")
    bitrate: PositiveNumber = Field(default=DEFAULT_BITRATE, description="bytes/s the scheduler plans with")
    keepalive_interval: PositiveNumber = Field(
        default=2.0, description="seconds between pings on the data channel"
    )
    keepalive_misses: int = Field(
        default=5, ge=1, description="silent intervals before the path counts as gone and ICE restarts"
    )
    connect_timeout: PositiveNumber = Field(
        default=15.0, description="seconds an offer may stay unanswered before a new one is made"
    )
    signal_max_age: PositiveNumber = Field(
        default=300.0, description="seconds a signal stays acceptable (mesh signalling can be slow)"
    )
