"""LoRa airtime as the simulator charges it: the link's own PHY model (``relay.links.lora_phy``).

The simulator charges a LoRa frame the airtime a real radio would spend on it, so duty cycle and
head-of-line blocking come out in the same seconds an operator would see in the field. It reuses the
Semtech AN1200.13 formula with the Meshtastic settings that the LoRa link and the device emulator use,
and adds what only the simulator needs: a frame of ours carried whole in one Meshtastic packet, and the
per-frame overhead that makes a link profile's budget a safe upper bound.
"""

from __future__ import annotations

from relay.links.lora_phy import MAX_LORA_PAYLOAD_LEN, MESHTASTIC_HEADER_LEN, PRESETS, Modem, modem

__all__ = ["PRESETS", "Modem", "frame_airtime", "lora_airtime", "lora_frame_overhead", "modem"]


def lora_airtime(phy_payload_len: int, preset: Modem) -> float:
    """Seconds on air for a frame of ``phy_payload_len`` bytes (Meshtastic header included)."""
    if not 0 <= phy_payload_len <= MAX_LORA_PAYLOAD_LEN:
        raise ValueError(f"a LoRa frame carries 0..{MAX_LORA_PAYLOAD_LEN} bytes, not {phy_payload_len}")
    return preset.airtime_s(phy_payload_len)


def frame_airtime(frame_len: int, preset: Modem) -> float:
    """Airtime of one of our frames carried as a Meshtastic packet payload."""
    return lora_airtime(frame_len + MESHTASTIC_HEADER_LEN, preset)


def lora_frame_overhead(preset: Modem, bytes_per_s: float) -> float:
    """The per-frame time that makes ``overhead + len / bytes_per_s`` never less than the true airtime.

    A link profile describes a link by a fixed cost per frame plus a byte rate; with this overhead
    an engine budgeting duty cycle from the profile never spends more airtime than it thinks.
    """
    top = MAX_LORA_PAYLOAD_LEN - MESHTASTIC_HEADER_LEN
    return max(frame_airtime(n, preset) - n / bytes_per_s for n in range(top + 1))
