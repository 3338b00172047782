"""The simulator's LoRa radio ARQ (relay/sim/arq.py): ACKs, retries with the firmware's timing, and
MAX_RETRANSMIT, with two real engines and their stores; and its numbers against the device
emulator's firmware model (field/lora_emulator/radio.py), so sim and emulator agree."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest
from meshtastic.protobuf import mesh_pb2, portnums_pb2

from field.lora_emulator import radio as emulated
from field.lora_emulator.medium import LoRaMedium
from relay.bundle import Priority
from relay.errors import ConfigError
from relay.links.lora_phy import modem
from relay.sim import arq
from relay.sim.links import SimLinkSpec
from relay.sim.loop import InlineExecutorLoop
from relay.sim.report import Report
from relay.sim.scenario import parse_scenario
from relay.sim.world import World

SEND_AT_S = 300.0
BIG = 150  # bytes: a frame longer than this carries the test's PRIORITY bundle
LATENCY_S = 0.05


def _scenario(priority: str = "FLASH", size: int = 60) -> dict[str, Any]:
    send = {"src": "a", "dst": "b", "priority": priority, "size": size, "lifetime_s": 3600}
    return {
        "name": "arq",
        "seed": 5,
        "duration_s": 400.0,
        "drain_s": 100.0,
        "node": [{"name": "a", "role": "responder"}, {"name": "b", "role": "command_post"}],
        "link": [
            {
                "name": "lora",
                "kind": "lora",
                "preset": "LONG_FAST",
                "duty_cycle": 0.1,
                "loss": 0.0,
                "radio_arq": True,
                "latency_s": LATENCY_S,
                "pairs": [["a", "b"]],
            }
        ],
        "traffic": [{**send, "at_s": [SEND_AT_S]}],
    }


class _LosingWorld(World):
    """Loses the first ``lose`` transmissions of the PRIORITY bundle's DATA frame (the only frame
    longer than :data:`BIG`), nothing else. Not a FLASH bundle: the custody timer's copy of a FLASH
    goes while the radio still retries the first (``flash_alongside``), and these tests time the
    radio's retries alone."""

    lose = 0
    data_frames: list[tuple[float, int]]  # (when it was decided, frame length)

    def _heard(self, link: SimLinkSpec, frame: bytes | None) -> bool:
        if frame is not None and len(frame) > BIG:
            self.data_frames.append((self.now, len(frame)))
            if self.lose > 0:
                self.lose -= 1
                return False
        return super()._heard(link, frame)


def _run(lose: int) -> tuple[_LosingWorld, Report]:
    scenario = parse_scenario(_scenario("PRIORITY", BIG + 30))
    with tempfile.TemporaryDirectory(prefix="mesh112-arq-") as tmp:
        world = _LosingWorld.create(scenario, Path(tmp))
        assert isinstance(world, _LosingWorld)
        world.lose = lose
        world.data_frames = []
        with asyncio.Runner(loop_factory=InlineExecutorLoop) as runner:
            report = runner.run(world.run())
    return world, report


def _delivered_after(report: Report, priority: Priority = Priority.PRIORITY) -> float:
    figures = report.by_class(priority)
    assert figures.delivered == 1, f"{priority.name} not delivered: {figures.missing}"
    assert figures.latency_max_s is not None
    return figures.latency_max_s


def _timeout(world: World, frame_len: int) -> tuple[float, float]:
    """The retransmission timeout on an idle channel and the longest contention delay before it."""
    link = world.scenario.links[0]
    assert link.lora is not None
    airtime = link.frame_time(frame_len)
    slot = link.lora.slot_time_s()
    return arq.retransmit_timeout(airtime, 0.0, link.lora), (2**arq.CW_MIN - 1) * slot


def test_a_frame_lost_once_arrives_after_one_radio_retry() -> None:
    _, clean = _run(lose=0)
    world, report = _run(lose=1)
    a, b = world.nodes["a"].transmitters["lora"], world.nodes["b"].transmitters["lora"]
    (first_at, frame_len), (retry_at, _) = world.data_frames[:2]
    airtime = world.scenario.links[0].frame_time(frame_len)
    timeout, contention = _timeout(world, frame_len)
    # the radio retries one timeout after the first transmission ended (after a contention delay)
    assert retry_at == pytest.approx(first_at + airtime + timeout)
    latency = _delivered_after(report)
    assert latency == pytest.approx(_delivered_after(clean) + (retry_at - first_at), abs=contention + 0.01)
    assert latency < 2 * (airtime + timeout), "one retry, not a custody timeout after MAX_RETRANSMIT"
    assert a.retries == 1 and a.max_retransmit == 0
    # airtime counts the retry and every ACK: a's log holds the DATA frame twice, b's its ACKs
    ack_s = world.scenario.links[0].frame_time(arq.ACK_DATA_LEN)
    assert sum(1 for _, s in a.airtime_log if s == airtime) >= 2
    assert b.acks >= 1 and sum(1 for _, s in b.airtime_log if s == ack_s) >= b.acks
    for t in (a, b):
        assert len(t.airtime_log) == t.frames + t.acks
        assert t.airtime_s == pytest.approx(sum(s for _, s in t.airtime_log))


def test_a_frame_lost_on_every_transmission_fails_as_max_retransmit() -> None:
    world, report = _run(lose=arq.RELIABLE_TRANSMISSIONS)
    a = world.nodes["a"].transmitters["lora"]
    assert a.max_retransmit == 1
    assert a.retries == arq.RELIABLE_TRANSMISSIONS - 1
    figures = next(f for f in report.links if f.node == "a")
    assert (figures.retries, figures.max_retransmit) == (a.retries, 1)
    # the radio gave up; the engine, not told (the real link only logs the LinkError), sent the
    # bundle again on its custody timer, and that copy arrived
    assert len(world.data_frames) > arq.RELIABLE_TRANSMISSIONS
    _, frame_len = world.data_frames[0]
    timeout, _ = _timeout(world, frame_len)
    airtime = world.scenario.links[0].frame_time(frame_len)
    gave_up_at = world.data_frames[arq.RELIABLE_TRANSMISSIONS - 1][0] + airtime + timeout
    assert world.data_frames[arq.RELIABLE_TRANSMISSIONS][0] >= gave_up_at - 1e-9
    assert _delivered_after(report) >= gave_up_at - SEND_AT_S


def test_timing_and_ack_size_agree_with_the_device_emulator() -> None:
    assert arq.RELIABLE_TRANSMISSIONS == emulated.RELIABLE_TRANSMISSIONS
    assert (arq.CW_MIN, arq.CW_MAX) == (emulated.CW_MIN, emulated.CW_MAX)
    assert arq.PROCESSING_ALLOWANCE_S == emulated.PROCESSING_ALLOWANCE_S
    routing = mesh_pb2.Routing(error_reason=mesh_pb2.Routing.NONE)
    ack = mesh_pb2.Data(
        portnum=portnums_pb2.ROUTING_APP, payload=routing.SerializeToString(), request_id=0xFFFFFFFF
    )
    assert len(ack.SerializeToString()) == arq.ACK_DATA_LEN
    medium = LoRaMedium("LONG_FAST", virtual_time=True)
    radio = emulated.EmulatedRadio(medium, 0x1234)
    preset = modem("LONG_FAST")
    for utilisation in (0.0, 0.3, 1.0):
        radio._channel_utilisation = lambda u=utilisation: u  # type: ignore[method-assign]
        assert radio._contention_window() == arq.contention_window(utilisation)
        for phy_len in (40, 120, 255):
            frame: Any = type("Frame", (), {"phy_len": phy_len})()
            airtime = preset.airtime_s(phy_len)
            assert radio._retransmit_timeout(frame) == pytest.approx(
                arq.retransmit_timeout(airtime, utilisation, preset)
            )


def test_radio_arq_is_a_lora_option_read_as_true_or_false() -> None:
    data = _scenario()
    data["link"][0]["radio_arq"] = "yes"
    with pytest.raises(ConfigError, match="radio_arq must be true or false"):
        parse_scenario(data)
    data["link"][0]["radio_arq"] = False
    assert not parse_scenario(data).links[0].radio_arq


class _SilentPeerWorld(World):
    """Loses every transmission of the PRIORITY bundle's frames (longer than :data:`BIG`): the
    radio retries them and gives up, as towards a neighbour that does not answer."""

    def _heard(self, link: SimLinkSpec, frame: bytes | None) -> bool:
        if frame is not None and len(frame) > BIG:
            return False
        return super()._heard(link, frame)


def test_a_flash_frame_goes_while_a_lower_class_frame_awaits_the_radio_answer() -> None:
    data = _scenario()
    flash = dict(data["traffic"][0], at_s=[SEND_AT_S + 2])
    data["traffic"] = [_scenario("PRIORITY", BIG + 30)["traffic"][0], flash]
    scenario = parse_scenario(data)
    with tempfile.TemporaryDirectory(prefix="mesh112-arq-") as tmp:
        world = _SilentPeerWorld.create(scenario, Path(tmp))
        with asyncio.Runner(loop_factory=InlineExecutorLoop) as runner:
            report = runner.run(world.run())
    link = world.scenario.links[0]
    full_frame = link.frame_time(link.profile.mtu)
    # Before: the alarm waited for the PRIORITY frame's three transmissions (about 24 s).
    assert _delivered_after(report, Priority.FLASH) < 3 * full_frame
    assert world.nodes["a"].transmitters["lora"].max_retransmit >= 1
    assert report.flash_max_wait_frames <= 1.0
