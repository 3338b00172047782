"""Links from a node's ``[[links]]`` tables (keys documented in deploy/node.example.toml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crypto.keystore import NodeKeys
from relay.config import LinkSection
from relay.errors import ConfigError
from relay.links.base import Link
from relay.trust import TrustStore


def _options(section: LinkSection, allowed: set[str]) -> dict[str, Any]:
    options = {k: v for k, v in section.options.items() if k not in ("type", "name")}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(
            f"link {section.name}: unknown key(s) {', '.join(unknown)}; allowed: {sorted(allowed)}"
        )
    return options


def build_link(section: LinkSection, node_keys: NodeKeys, data_dir: Path, trust: TrustStore) -> Link:
    """The link a ``[[links]]`` table describes (keys documented in deploy/node.example.toml).
    ``trust`` names the neighbours a LoRa link may hear: their hop-tag keys come from it."""
    if section.type == "ip":
        from relay.links import ip_tls
        from relay.links.ip import IpLink, IpLinkConfig
        from relay.links.ip_handshake import Credentials, Trust

        timing = {"bitrate", "keepalive_interval", "keepalive_misses"}
        options = _options(section, {"listen", "peers", "tls"} | timing)
        numbers = {key: options[key] for key in timing & set(options)}
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers.values()):
            raise ConfigError(f"link {section.name}: {', '.join(sorted(numbers))} must be numbers")
        peers = options.get("peers", [])
        if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
            raise ConfigError(f"link {section.name}: peers must be a list of addresses")
        tls = ip_tls.ensure_self_signed(data_dir) if options.get("tls", False) else None
        config = IpLinkConfig(
            name=section.name,
            listen=options.get("listen"),
            peers=tuple(peers),
            tls=tls,
            bitrate=float(numbers.get("bitrate", 10_000_000.0)),
            keepalive_interval=float(numbers.get("keepalive_interval", 1.0)),
            keepalive_misses=int(numbers.get("keepalive_misses", 3)),
        )
        credentials = Credentials(node_keys.identity, node_keys.certificate)
        return IpLink(config, credentials, Trust(node_keys.authority, node_keys.revocations))
    if section.type == "lora":
        from crypto.hop import HopAuth
        from relay.links.lora import LoRaLink, LoRaLinkConfig

        fields = {"transport", "address", "port", "preset", "region", "app_port", "roster"}
        options = _options(section, fields)
        roster = options.pop("roster", {})
        if not isinstance(roster, dict):
            raise ConfigError(f"link {section.name}: roster must be a table of node number = node id")
        try:
            parsed = {int(num): str(node_id) for num, node_id in roster.items()}
        except ValueError:
            raise ConfigError(f"link {section.name}: roster keys must be Meshtastic node numbers") from None
        config = LoRaLinkConfig(roster=parsed, name=section.name, **options)
        return LoRaLink(config, HopAuth(node_keys.identity), trust.check)
    raise ConfigError(f"link {section.name}: type {section.type!r} cannot run in a daemon")
