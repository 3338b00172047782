"""Meshtastic's radio-level ARQ, as the simulator's LoRa link models it.

The real LoRa link (``relay.links.lora``) sends every unicast frame with ``want_ack`` and waits for
the radio's answer before it sends the next one, except FLASH frames: up to
``relay.links.lora_phy.FLASH_ALONGSIDE`` go while others await their answers. The firmware
(ReliableRouter) transmits the packet
up to three times, waiting a retransmission timeout after each transmission for the receiver's
routing ACK, and then reports ``MAX_RETRANSMIT``, which the link raises as a ``LinkError``: the node
logs it and the core's custody timer takes over. The receiving radio ACKs every copy it decodes but
hands only the first to its client. Broadcasts are not acknowledged.

The numbers are those of the device emulator (``field/lora_emulator/radio.py``), which models the
firmware for the real ``meshtastic`` library; ``tests/test_sim_arq.py`` checks that both agree.
"""

from __future__ import annotations

import random

from relay.links.lora_phy import Modem

RELIABLE_TRANSMISSIONS = 3  # the first send and two retries, then MAX_RETRANSMIT
CW_MIN, CW_MAX = 3, 8  # contention window exponents, mapped from the channel utilisation
PROCESSING_ALLOWANCE_S = 4.5  # the firmware's allowance in its retransmission timer
ACK_DATA_LEN = 11  # an encoded routing ACK (Data: ROUTING_APP, Routing NONE, request_id)
UTILISATION_WINDOW_S = 60.0  # the firmware measures channel utilisation over the last minute


def channel_utilisation(airtime_s: float) -> float:
    """Channel utilisation, 0..1, from a radio's own airtime in the last minute.

    The firmware counts all airtime heard and sent; the simulator has no shared channel, so it
    counts what the radio sent. (The emulator takes a radio's last hour times 60, which saturates
    the contention window at 1.7 % of an hour's airtime; the firmware's minute does not.)
    """
    return min(1.0, airtime_s / UTILISATION_WINDOW_S)


def contention_window(utilisation: float) -> int:
    """The firmware's contention window exponent: CW_MIN on an idle channel, CW_MAX on a busy one."""
    value = min(max(utilisation, 0.0), 1.0)
    return int(CW_MIN + value * (CW_MAX - CW_MIN))


def contention_delay(rng: random.Random, utilisation: float, preset: Modem) -> float:
    """The random wait before a radio transmits a retry or an ACK: 0..2^CW - 1 slots."""
    return rng.randint(0, 2 ** contention_window(utilisation) - 1) * preset.slot_time_s()


def retransmit_timeout(airtime_s: float, utilisation: float, preset: Modem) -> float:
    """Seconds from the end of a transmission to its retry when no ACK came (firmware formula)."""
    slots = 2 ** contention_window(utilisation) + 2 * CW_MAX + 2 ** ((CW_MAX + CW_MIN) // 2)
    return float(2 * airtime_s + slots * preset.slot_time_s() + PROCESSING_ALLOWANCE_S)
