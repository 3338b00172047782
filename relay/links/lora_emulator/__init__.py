"""An emulated Meshtastic radio network for tests, the demo field and benchmarks.

``phy`` holds the LoRa numbers (presets, airtime, regional duty cycle), ``medium`` the shared air
(distance, SNR, loss, collisions, scaled or virtual time), ``radio`` the firmware model of one
node (TX queue, managed flooding, ACK/NAK), ``device`` the stream-API TCP server the real
``meshtastic`` library connects to, and ``runner`` starts a set of them from a TOML file.
"""
