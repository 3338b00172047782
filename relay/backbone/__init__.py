"""The backbone between command posts: NATS JetStream leaf nodes and a regional centre.

:mod:`~relay.backbone.fold` merges record events deterministically (sans I/O),
:mod:`~relay.backbone.shared` carries messages and unit sightings beside them,
:mod:`~relay.backbone.config` is the ``[backbone]`` table of node.toml,
:mod:`~relay.backbone.servers` writes nats-server configurations (hub and leaf nodes), and
:mod:`~relay.backbone.post` is the asyncio adapter that publishes a post's events and applies the
region's. See docs/regional.md.
"""
