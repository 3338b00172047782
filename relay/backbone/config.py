"""``[backbone]`` in node.toml: how a command post (or the regional centre) joins the backbone."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


def _name(value: str) -> str:
    if not NAME.fullmatch(value):
        raise ValueError(
            f"must be 1-32 letters, digits, '-' or '_' (it names subjects and streams), got {value!r}"
        )
    return value


class BackboneSection(BaseModel):
    """``[backbone]``: this node's place on the NATS JetStream backbone between command posts."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    role: Literal["post", "centre"] = Field(
        "post", description="post: publishes its records and mirrors the region's; centre: sources every post"
    )
    name: str = Field(description="this post's (or centre's) name, unique in the region")
    url: str = Field("nats://127.0.0.1:4222", description="the local nats-server (the post's leaf node)")
    domain: str = Field(description="the local nats-server's JetStream domain")
    hub_domain: str = Field("hub", description="the regional centre's JetStream domain")
    region: str = Field("region", description="subject prefix shared by the region")
    posts: tuple[str, ...] = Field(
        default=(), strict=False, description="centre only: the posts whose streams it sources"
    )

    @field_validator("name", "domain", "hub_domain", "region")
    @classmethod
    def _names(cls, value: str) -> str:
        return _name(value)

    @field_validator("posts")
    @classmethod
    def _posts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_name(post) for post in value)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.fullmatch(r"(nats|tls)://[^\s/]+:\d{1,5}", value):
            raise ValueError(f"must be nats://HOST:PORT (or tls://), got {value!r}")
        return value

    @model_validator(mode="after")
    def _centre_has_posts(self) -> BackboneSection:
        if self.role == "centre" and not self.posts:
            raise ValueError('the centre must list the posts it sources (posts = ["a", "b"])')
        if self.role == "post" and self.posts:
            raise ValueError("posts is for the centre; a post mirrors the region")
        return self

    def post_stream(self, post: str) -> str:
        return f"POST_{post}"

    def post_subject(self, post: str, what: str = "events") -> str:
        """Where a post publishes: ``events`` (records), ``shared`` (messages, unit sightings)."""
        return f"{self.region}.{post}.{what}"
