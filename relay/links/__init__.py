"""Convergence layers: the ways one node reaches its neighbours (ip, lora, webrtc, sim)."""
