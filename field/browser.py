"""How tests and benchmarks start Debian's Chromium: headless, and tied down to this machine.

No background networking, component updates, sync or QUIC: this machine has no route out, and a
browser that tries one floods the closed network with refused connections at every start.
"""

from __future__ import annotations

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Pages that run WebRTC against a node on loopback: host candidates on 127.0.0.1 (not mDNS names,
# which aioice cannot resolve) and video that plays without a click.
WEBRTC_ARGS = [
    *CHROMIUM_ARGS,
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
]
