"""The Mesh112 node: bundle, store, sans-I/O core, links, node, relay API, CLI and simulator.

Every participant (command post, field relay, phone, building gateway, camera box) runs this same
node; they differ only in configuration. ``relay`` imports ``crypto`` and nothing above it:
applications (``ng112``, ``analytics_edge``) register their payload kinds with the node.
"""
