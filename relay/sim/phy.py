"""LoRa physical layer for the simulator: Meshtastic modem presets and Semtech time-on-air.

The simulator charges a LoRa frame the airtime a real radio would spend on it, so duty cycle and
head-of-line blocking come out in the same seconds an operator would see in the field. The formula
is Semtech AN1200.13 with the Meshtastic settings: 16-symbol preamble, explicit header, CRC on,
low-data-rate optimisation when a symbol lasts 16 ms or more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MESHTASTIC_HEADER_LEN = 16  # to, from, id, flags, channel hash, next hop, relay node
MAX_PHY_PAYLOAD = 255  # SX127x/SX126x FIFO: the whole frame including the Meshtastic header
PREAMBLE_SYMBOLS = 16


@dataclass(frozen=True, slots=True)
class LoraPreset:
    name: str
    spreading_factor: int  # 7..12
    bandwidth_hz: float
    coding_rate: int  # denominator of 4/x: 5..8

    @property
    def symbol_s(self) -> float:
        return float(2**self.spreading_factor) / self.bandwidth_hz

    @property
    def low_data_rate_optimise(self) -> bool:
        return self.symbol_s >= 0.016


PRESETS: dict[str, LoraPreset] = {
    p.name: p
    for p in (
        LoraPreset("SHORT_TURBO", 7, 500e3, 5),
        LoraPreset("SHORT_FAST", 7, 250e3, 5),
        LoraPreset("SHORT_SLOW", 8, 250e3, 5),
        LoraPreset("MEDIUM_FAST", 9, 250e3, 5),
        LoraPreset("MEDIUM_SLOW", 10, 250e3, 5),
        LoraPreset("LONG_FAST", 11, 250e3, 5),
        LoraPreset("LONG_MODERATE", 11, 125e3, 8),
        LoraPreset("LONG_TURBO", 11, 500e3, 8),
        LoraPreset("LONG_SLOW", 12, 125e3, 8),
    )
}


def lora_airtime(phy_payload_len: int, preset: LoraPreset) -> float:
    """Seconds on air for a frame of ``phy_payload_len`` bytes (Meshtastic header included)."""
    if not 0 <= phy_payload_len <= MAX_PHY_PAYLOAD:
        raise ValueError(f"a LoRa frame carries 0..{MAX_PHY_PAYLOAD} bytes, not {phy_payload_len}")
    sf = preset.spreading_factor
    de = 1 if preset.low_data_rate_optimise else 0
    numerator = 8 * phy_payload_len - 4 * sf + 28 + 16  # CRC on, explicit header
    payload_symbols = 8 + max(math.ceil(numerator / (4 * (sf - 2 * de))) * (preset.coding_rate), 0)
    return (PREAMBLE_SYMBOLS + 4.25 + payload_symbols) * preset.symbol_s


def frame_airtime(frame_len: int, preset: LoraPreset) -> float:
    """Airtime of one of our frames carried as a Meshtastic packet payload."""
    return lora_airtime(frame_len + MESHTASTIC_HEADER_LEN, preset)


def preset_named(name: str) -> LoraPreset:
    try:
        return PRESETS[name.upper()]
    except KeyError:
        raise ValueError(f"unknown LoRa preset {name!r}; known: {', '.join(PRESETS)}") from None


def lora_frame_overhead(preset: LoraPreset, bytes_per_s: float) -> float:
    """The per-frame time that makes ``overhead + len / bytes_per_s`` never less than the true airtime.

    A link profile describes a link by a fixed cost per frame plus a byte rate; with this overhead
    an engine budgeting duty cycle from the profile never spends more airtime than it thinks.
    """
    top = MAX_PHY_PAYLOAD - MESHTASTIC_HEADER_LEN
    return max(frame_airtime(n, preset) - n / bytes_per_s for n in range(top + 1))
