"""An emulated Meshtastic radio network for tests, the demo field and benchmarks.

The LoRa numbers (presets, airtime, regional duty cycle) live in ``relay.links.lora_phy``, shared
with the link. ``medium`` is the shared air (distance, SNR, loss, collisions, scaled or virtual
time), ``radio`` the firmware model of one node (TX queue, managed flooding, ACK/NAK), ``device``
the stream-API TCP server the real ``meshtastic`` library connects to, ``serial_pty`` a serial
front for it, and ``runner`` starts a set of them from a TOML file.
"""
