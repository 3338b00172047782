"""Links from a node's validated ``[[links]]`` tables (:data:`relay.config.LinkOptions`)."""

from __future__ import annotations

import time
from pathlib import Path

from crypto.keystore import NodeKeys
from relay.bundle import to_epoch
from relay.config import LinkOptions
from relay.links.base import Link
from relay.trust import TrustStore


def build_link(options: LinkOptions, node_keys: NodeKeys, data_dir: Path, trust: TrustStore) -> Link:
    """The link a ``[[links]]`` table describes. An IP link with ``tls = true`` gets (and on first
    use makes) the self-signed TLS material in ``data_dir`` and teaches ``trust`` the certificates
    its peers prove; a LoRa link checks hop tags against ``trust``, so revocations apply to it at
    once, and learns the certificates of radios that introduce themselves (``lora_hello``)."""
    if options.type == "ip":
        from relay.links import ip_tls
        from relay.links.ip import IpLink, IpLinkConfig
        from relay.links.ip_handshake import Credentials, Trust

        config = IpLinkConfig(
            name=options.name,
            listen=options.listen,
            peers=tuple(options.peers),
            tls=ip_tls.ensure_self_signed(data_dir) if options.tls else None,
            bitrate=options.bitrate,
            keepalive_interval=options.keepalive_interval,
            keepalive_misses=options.keepalive_misses,
        )
        credentials = Credentials(node_keys.identity, node_keys.certificate)
        return IpLink(
            config,
            credentials,
            Trust(node_keys.authority, node_keys.revocations),
            learn=lambda certificate: trust.learn(certificate, to_epoch(time.time())),
        )
    if options.type == "webrtc":
        from relay.links.webrtc import WebRtcLink

        return WebRtcLink(options, node_keys.identity, trust.check)
    from crypto.hop import HopAuth
    from relay.links.lora import LoRaLink
    from relay.links.lora_hello import LoRaHello

    hop = HopAuth(node_keys.identity)
    hello = LoRaHello(
        hop, node_keys.certificate, lambda certificate: trust.learn(certificate, to_epoch(time.time()))
    )
    return LoRaLink(options, hop, trust.check, hello=hello)
