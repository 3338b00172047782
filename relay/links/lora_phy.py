"""LoRa physical-layer numbers: Meshtastic modem presets, Semtech time on air, regional duty cycle.

Written from Semtech AN1200.13 and Meshtastic firmware's tables (``RadioInterface.cpp``: the
``regions[]`` table with each region's duty cycle, and ``modemPresetToParams``; sub-GHz bands). The
names are the firmware's ``Config.LoRaConfig`` enum names; a name the firmware's region table does
not list (``UNSET``, or a newer protobuf name the firmware does not act on yet) is not a region here,
so nothing is ever budgeted with a guessed duty cycle. The link uses these to budget airtime; the
emulated medium uses them to time frames on the air.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

MESHTASTIC_HEADER_LEN = 16  # to, from, id, flags, channel hash, next hop, relay node
MAX_LORA_PAYLOAD_LEN = 255  # SX12xx FIFO: the whole PHY payload including the header
# FLASH frames a LoRa link hands its radio while another frame awaits its ACK: few enough that the
# radio's TX queue (16 packets, with its routing ACKs and retries) never fills and blocks a send
FLASH_ALONGSIDE = 4
PKI_OVERHEAD = 12  # AES-CCM 8-byte tag + 4-byte extra nonce on PKI direct messages
MAX_DM_PAYLOAD = 219  # largest PRIVATE_APP payload in a PKI direct message
MAX_CHANNEL_PAYLOAD = 231  # largest PRIVATE_APP payload on a channel (broadcast)


@dataclass(frozen=True, slots=True)
class Modem:
    """One LoRa modulation: spreading factor, bandwidth and coding rate 4/``cr``."""

    name: str
    sf: int
    bw_hz: float
    cr: int
    preamble: int = 16

    @property
    def symbol_s(self) -> float:
        return float(2**self.sf) / self.bw_hz

    @property
    def ldro(self) -> bool:
        """Low-data-rate optimisation is on when a symbol lasts 16 ms or more."""
        return self.symbol_s >= 0.016

    @property
    def bitrate_bps(self) -> float:
        """Raw LoRa bit rate: SF * BW / 2^SF * 4/CR."""
        return self.sf * self.bw_hz / float(2**self.sf) * 4.0 / self.cr

    @property
    def preamble_s(self) -> float:
        """Airtime every frame pays before its first payload symbol."""
        return (self.preamble + 4.25) * self.symbol_s

    @property
    def snr_threshold_db(self) -> float:
        """Lowest SNR at which the demodulator still decodes this spreading factor."""
        return -7.5 - 2.5 * (self.sf - 7)

    def airtime_s(self, phy_len: int) -> float:
        """Semtech time on air of ``phy_len`` bytes (Meshtastic header included), explicit header, CRC."""
        de = 1 if self.ldro else 0
        numerator = 8 * phy_len - 4 * self.sf + 28 + 16
        n_payload = 8 + max(math.ceil(numerator / (4 * (self.sf - 2 * de))) * self.cr, 0)
        return self.preamble_s + n_payload * self.symbol_s

    def slot_time_s(self) -> float:
        """Contention slot: channel activity detection (2.5 symbols) plus 7.6 ms turnaround."""
        return (2.5 * self.symbol_s * 1000.0 + 7.6) / 1000.0


Preset = Literal[
    "SHORT_TURBO",
    "SHORT_FAST",
    "SHORT_SLOW",
    "MEDIUM_FAST",
    "MEDIUM_SLOW",
    "LONG_FAST",
    "LONG_MODERATE",
    "LONG_TURBO",
    "LONG_SLOW",
    "LITE_FAST",
    "LITE_SLOW",
    "NARROW_FAST",
    "NARROW_SLOW",
]  # VERY_LONG_SLOW is gone: deprecated in firmware 2.5, which no longer knows its parameters

PRESETS: dict[str, Modem] = {
    m.name: m
    for m in (
        Modem("SHORT_TURBO", 7, 500e3, 5),
        Modem("SHORT_FAST", 7, 250e3, 5),
        Modem("SHORT_SLOW", 8, 250e3, 5),
        Modem("MEDIUM_FAST", 9, 250e3, 5),
        Modem("MEDIUM_SLOW", 10, 250e3, 5),
        Modem("LONG_FAST", 11, 250e3, 5),
        Modem("LONG_MODERATE", 11, 125e3, 8),
        Modem("LONG_TURBO", 11, 500e3, 8),
        Modem("LONG_SLOW", 12, 125e3, 8),
        Modem("LITE_FAST", 9, 125e3, 5),  # EU_866
        Modem("LITE_SLOW", 10, 125e3, 5),  # EU_866
        Modem("NARROW_FAST", 7, 62.5e3, 6),  # EU_N_868
        Modem("NARROW_SLOW", 8, 62.5e3, 6),  # EU_N_868
    )
}

Region = Literal[
    "US",
    "EU_433",
    "EU_868",
    "CN",
    "JP",
    "ANZ",
    "ANZ_433",
    "RU",
    "KR",
    "TW",
    "IN",
    "NZ_865",
    "TH",
    "UA_433",
    "UA_868",
    "MY_433",
    "MY_919",
    "SG_923",
    "PH_433",
    "PH_868",
    "PH_915",
    "KZ_433",
    "KZ_863",
    "NP_865",
    "BR_902",
    "LORA_24",
    "EU_866",
    "EU_N_868",
]

# Regions whose firmware entry limits the duty cycle; every other region above transmits freely.
# EU_866 allows 10 % to fixed ROUTER nodes and 2.5 % to everyone else: a relay budgets the 2.5 %.
_LIMITED: dict[str, float] = {
    "EU_433": 0.10,
    "EU_868": 0.10,
    "TH": 0.10,
    "UA_433": 0.10,
    "UA_868": 0.01,
    "EU_866": 0.025,
    "EU_N_868": 0.10,
}

# Fraction of each rolling hour a node may transmit, per Meshtastic region.
REGION_DUTY_CYCLE: dict[str, float] = {region: _LIMITED.get(region, 1.0) for region in get_args(Region)}


def modem(preset: str) -> Modem:
    """The modem for a preset name such as ``LONG_FAST``; ValueError names the valid ones."""
    try:
        return PRESETS[preset.upper()]
    except KeyError:
        raise ValueError(f"unknown LoRa preset {preset!r}; use one of {', '.join(PRESETS)}") from None


def duty_cycle(region: str) -> float:
    """The region's duty cycle as a fraction (1.0 where the region sets no limit, e.g. US).

    ValueError for a region the firmware table does not list: budgeting it at 100 % would be a
    regulatory fault."""
    try:
        return REGION_DUTY_CYCLE[region.upper()]
    except KeyError:
        known = ", ".join(REGION_DUTY_CYCLE)
        raise ValueError(f"unknown LoRa region {region!r}; use one of {known}") from None


def frame_airtime_s(preset: str, payload_len: int, pki: bool = False) -> float:
    """Airtime of one Meshtastic frame carrying ``payload_len`` application bytes on PRIVATE_APP.

    The Data protobuf adds 3 bytes for port 256, 2 for the bitfield the firmware always sets and 2-3
    for the payload's tag and length: 219 bytes in a PKI DM fill the 255-byte LoRa frame exactly.
    """
    data_len = 3 + 2 + 1 + (1 if payload_len < 128 else 2) + payload_len
    phy_len = MESHTASTIC_HEADER_LEN + data_len + (PKI_OVERHEAD if pki else 0)
    return modem(preset).airtime_s(phy_len)
