"""The LoRa link reads the radio's own region and preset on connecting, through the real meshtastic
library against the emulated radios on 127.0.0.1, and stays down when they differ from its config."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import pytest

from crypto.errors import CertificateError
from crypto.hop import HopAuth
from crypto.identity import Identity, PublicIdentity
from field.lora_emulator.device import DeviceServer
from field.lora_emulator.medium import LoRaMedium
from field.lora_emulator.radio import EmulatedRadio
from relay.links.lora import LoRaLink
from relay.links.lora_config import LoRaLinkConfig

NUM = 0xA0000001
KEY = Identity.generate()


def no_peers(node_id: bytes, now: float) -> PublicIdentity:
    raise CertificateError("no peers in this test")


class Events:
    def __init__(self) -> None:
        self.ups: list[bytes] = []

    def link_up(self, link: str, peer: bytes) -> None:
        self.ups.append(peer)

    def link_down(self, link: str, peer: bytes) -> None:
        pass

    def frame_received(self, link: str, peer: bytes, frame: bytes) -> None:
        pass


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline and not predicate():
        await asyncio.sleep(0.02)
    return predicate()


class Radio:
    """One emulated radio set to ``region`` on a medium running ``preset``, and the links on it."""

    def __init__(self, region: str, preset: str) -> None:
        self.medium = LoRaMedium(preset, seed=3, speedup=50)
        self.radio = EmulatedRadio(self.medium, NUM, region=region, seed=3)
        self.server = DeviceServer(self.radio)
        self.server.start()
        self.links: list[LoRaLink] = []

    async def link(self, **options: object) -> LoRaLink:
        config = LoRaLinkConfig.model_validate(
            {"port": self.server.port, "reconnect_min_s": 0.2, "connect_timeout_s": 5.0, **options}
        )
        link = LoRaLink(config, HopAuth(KEY), no_peers)
        self.links.append(link)
        await link.start(Events())
        return link

    async def close(self) -> None:
        for link in self.links:
            await link.stop()
        self.server.stop()
        self.medium.close()


@pytest.fixture
async def radios() -> AsyncIterator[list[Radio]]:
    made: list[Radio] = []
    yield made
    for radio in made:
        await radio.close()


async def test_matching_eu_866_radio_connects_and_budgets_2_5_percent(radios: list[Radio]) -> None:
    radios.append(Radio("EU_866", "LITE_FAST"))
    link = await radios[0].link(region="EU_866", preset="LITE_FAST")
    assert await until(lambda: link.state().connected)
    assert link.profile.duty_cycle == 0.025 and radios[0].radio.duty_cycle == 0.025
    assert link.state().last_error == ""


@pytest.mark.parametrize(
    ("radio_region", "radio_preset", "config", "message"),
    [
        (
            "US",
            "LONG_FAST",
            {},
            "the radio is set to region US with LONG_FAST, but link lora0 is configured "
            "for EU_868 with LONG_FAST",
        ),
        (
            "EU_868",
            "SHORT_FAST",
            {"name": "lora-b"},
            "the radio is set to region EU_868 with SHORT_FAST, "
            "but link lora-b is configured for EU_868 with LONG_FAST",
        ),
    ],
)
async def test_a_radio_on_another_region_or_preset_keeps_the_link_down(
    radios: list[Radio],
    caplog: pytest.LogCaptureFixture,
    radio_region: str,
    radio_preset: str,
    config: dict[str, object],
    message: str,
) -> None:
    radios.append(Radio(radio_region, radio_preset))
    with caplog.at_level(logging.WARNING, logger="relay.links.lora"):
        link = await radios[0].link(**config)
        assert message in link.state().last_error

        # It keeps checking (an operator may fix the radio) and stays down each time.
        def refusals() -> list[logging.LogRecord]:
            return [r for r in caplog.records if message in r.getMessage()]

        assert await until(lambda: len(refusals()) >= 2, timeout=20), caplog.text
    state = link.state()
    assert not state.connected and state.connects == 0 and state.frames_sent == 0
    assert message in state.last_error
    assert all(r.levelno == logging.WARNING for r in refusals())


def test_a_radio_on_custom_modem_settings_is_refused_too() -> None:
    from meshtastic.protobuf import config_pb2

    from relay.links.lora_config import RadioMismatchError, check_radio

    lora = config_pb2.Config.LoRaConfig
    config = LoRaLinkConfig(region="EU_866", preset="LITE_SLOW")
    check_radio(config, lora(use_preset=True, region=lora.EU_866, modem_preset=lora.LITE_SLOW))
    custom = lora(use_preset=False, region=lora.EU_866, bandwidth=125, spread_factor=10, coding_rate=5)
    with pytest.raises(RadioMismatchError, match="region EU_866 with custom modem settings"):
        check_radio(config, custom)
    with pytest.raises(RadioMismatchError, match="region UNSET with LONG_FAST"):
        check_radio(config, lora(use_preset=True))
