"""LoRa numbers, the stream framing, the emulator config and the seeded medium in virtual time."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from meshtastic.protobuf import mesh_pb2

from field.lora_emulator.device import DeviceServer
from field.lora_emulator.medium import AirFrame, LoRaMedium
from field.lora_emulator.radio import EmulatedRadio
from field.lora_emulator.runner import parse_config
from field.lora_emulator.stream import MAX_FRAME_PAYLOAD, FrameTooLarge, StreamDecoder, encode_frame
from relay.errors import ConfigError
from relay.links.lora_phy import PRESETS, duty_cycle, frame_airtime_s, modem


def test_preset_airtimes_match_the_research_table() -> None:
    long_fast = modem("LONG_FAST")
    assert round(long_fast.airtime_s(255) * 1000) == 2157
    assert round(long_fast.airtime_s(36) * 1000) == 518
    assert round(PRESETS["SHORT_FAST"].airtime_s(255) * 1000) == 204
    assert round(PRESETS["LONG_SLOW"].airtime_s(255) * 1000) == 14295
    assert round(long_fast.bitrate_bps) == 1074
    assert round(long_fast.preamble_s * 1000) == 166  # (16 + 4.25) symbols of 8.192 ms
    assert frame_airtime_s("LONG_FAST", 219, pki=True) == long_fast.airtime_s(255)  # a full frame
    assert frame_airtime_s("LONG_FAST", 231) == long_fast.airtime_s(255)


def test_region_duty_cycles_and_unknown_preset() -> None:
    assert duty_cycle("EU_868") == 0.10 and duty_cycle("UA_868") == 0.01 and duty_cycle("US") == 1.0
    with pytest.raises(ValueError, match="unknown LoRa preset"):
        modem("LONG_SUPERFAST")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=600), max_size=8))
def test_stream_decoder_round_trips_frames_between_noise(payloads: list[bytes]) -> None:
    decoder = StreamDecoder()
    wire = b"\xc3" * 32  # the library's wake-up bytes
    expected = [p for p in payloads if len(p) <= MAX_FRAME_PAYLOAD]
    for payload in expected:
        wire += encode_frame(payload) + b"log line\n"
    out: list[bytes] = []
    for i in range(0, len(wire), 7):  # arbitrary TCP segmentation
        out += decoder.feed(wire[i : i + 7])
    assert out == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_stream_decoder_never_raises_or_grows_past_one_frame(noise: bytes) -> None:
    decoder = StreamDecoder()
    for payload in decoder.feed(noise):
        assert len(payload) <= MAX_FRAME_PAYLOAD
    assert len(decoder._buf) <= MAX_FRAME_PAYLOAD + 4


def test_oversize_frames_are_refused() -> None:
    with pytest.raises(FrameTooLarge, match="512-byte limit"):
        encode_frame(b"x" * 513)
    decoder = StreamDecoder()
    assert decoder.feed(b"\x94\xc3\x02\x01" + b"x" * 513 + encode_frame(b"ok")) == [b"ok"]
    assert decoder.oversize_frames == 1


def test_hostile_bytes_on_the_device_socket_leave_it_serving() -> None:
    medium = LoRaMedium(seed=1, speedup=50)
    radio = EmulatedRadio(medium, 0xA1)
    server = DeviceServer(radio)
    port = server.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(encode_frame(b"\xff\xff\xff\xff") + b"\x94\xc3\xff\xff" + b"\x00" * 100)
            sock.sendall(encode_frame(mesh_pb2.ToRadio(want_config_id=42).SerializeToString()))
            decoder = StreamDecoder()
            answers: list[bytes] = []
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                answers += decoder.feed(sock.recv(4096))
                if any(mesh_pb2.FromRadio.FromString(a).config_complete_id == 42 for a in answers):
                    break
            first = mesh_pb2.FromRadio.FromString(answers[0])
            assert first.my_info.my_node_num == 0xA1
        assert radio.sent_from_phone == []
    finally:
        server.stop()
        medium.close()


def test_config_errors_name_the_key() -> None:
    good = {"radio": [{"num": 0xA1, "position": [0, 0]}]}
    assert parse_config(good).radios[0].num == 0xA1
    bad_cases: list[tuple[dict[str, Any], str]] = [
        ({"preset": "WARP"}, "unknown preset"),
        ({"radio": []}, "between 1 and"),
        ({"radio": [{"num": 0}]}, "'num'"),
        ({"radio": [{"num": 1, "position": "here"}]}, "'position'"),
        ({"radio": [{"num": 1, "role": "KING"}]}, "unknown role"),
        ({"radio": [{"num": 1}, {"num": 1}]}, "share a 'num'"),
        ({"speedup": -1, "radio": [{"num": 1}]}, "'speedup'"),
    ]
    for data, message in bad_cases:
        with pytest.raises(ConfigError, match=message):
            parse_config(data)


def _run_chain(seed: int) -> tuple[list[str], list[bytes]]:
    """Three radios in a line, virtual time: the far end floods 10 packets to the near end."""
    medium = LoRaMedium("LONG_FAST", seed=seed, virtual_time=True, extra_loss=0.2)
    a = EmulatedRadio(medium, 0xA1, position=(0, 0), seed=seed)
    EmulatedRadio(medium, 0xB2, position=(900, 0), seed=seed)
    c = EmulatedRadio(medium, 0xC3, position=(1800, 0), seed=seed)
    for i in range(10):
        c.send_from_app(bytes([i]) * 20, portnum=300, to=a.num, want_ack=True)
        medium.scheduler.advance(30.0)
    medium.scheduler.advance(300.0)
    delivered = [p.decoded.payload for p in a.delivered_to_phone if p.decoded.portnum == 300]
    medium.close()
    return medium.trace, delivered


def test_seeded_medium_is_deterministic_in_virtual_time() -> None:
    trace1, delivered1 = _run_chain(seed=5)
    trace2, delivered2 = _run_chain(seed=5)
    trace3, _ = _run_chain(seed=6)
    assert trace1 == trace2 and delivered1 == delivered2
    assert trace1 != trace3
    assert any("LOST" in line for line in trace1)
    assert len(set(delivered1)) >= 8  # retries get most packets through 20 % loss per hop


def test_hidden_transmitters_collide_at_the_receiver() -> None:
    medium = LoRaMedium(seed=1, virtual_time=True)
    a = EmulatedRadio(medium, 0xA1, position=(0, 0))
    b = EmulatedRadio(medium, 0xB2, position=(900, 0))
    c = EmulatedRadio(medium, 0xC3, position=(1800, 0))
    data = mesh_pb2.Data(portnum=300, payload=b"x").SerializeToString()
    with medium.lock:
        for sender in (a, c):
            frame = AirFrame(b.num, sender.num, sender.num, 0, 0, False, 0, data, phy_len=30)
            medium.transmit(sender.num, frame)
    medium.scheduler.advance(5.0)
    assert medium.stats.collided == 2 and b.delivered_to_phone == []
    medium.close()


_packets = st.builds(
    lambda to, pid, hop, ack, chan, port, payload, prio, enc: mesh_pb2.MeshPacket(
        to=to,
        id=pid,
        hop_limit=hop,
        want_ack=ack,
        channel=chan,
        priority=prio,
        **({"encrypted": payload} if enc else {"decoded": mesh_pb2.Data(portnum=port, payload=payload)}),
    ),
    st.sampled_from([0, 0xA1, 0xB2, 0xFFFFFFFF, 0x12345678]),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.booleans(),
    st.integers(0, 7),
    st.integers(0, 511),
    st.binary(max_size=480),
    st.sampled_from([0, 1, 10, 64, 70, 100, 110, 120, 127]),
    st.booleans(),
)


def _hostile_phone_packets(packets: list[Any]) -> None:
    medium = LoRaMedium(seed=2, virtual_time=True)
    a = EmulatedRadio(medium, 0xA1)
    b = EmulatedRadio(medium, 0xB2, position=(500, 0))
    for packet in packets:
        status = a.from_phone(packet)
        assert 0 <= status.free <= 16
        medium.scheduler.advance(5.0)
    medium.scheduler.advance(600.0)
    for delivered in b.delivered_to_phone:  # whatever crossed the air is well formed and within limits
        assert len(delivered.decoded.payload) <= 233 and delivered.hop_limit <= 7
    medium.close()


@settings(max_examples=60, deadline=None)
@given(st.lists(_packets, max_size=20))
def test_arbitrary_phone_packets_never_break_the_radio(packets: list[Any]) -> None:
    _hostile_phone_packets(packets)


@pytest.mark.long
@settings(max_examples=3000, deadline=None)
@given(st.lists(_packets, max_size=40))
def test_fuzz_phone_packets_long(packets: list[Any]) -> None:
    _hostile_phone_packets(packets)


@pytest.mark.long
@settings(max_examples=20000, deadline=None)
@given(st.binary(max_size=4000))
def test_fuzz_stream_decoder_long(noise: bytes) -> None:
    decoder = StreamDecoder()
    for payload in decoder.feed(noise):
        assert len(payload) <= MAX_FRAME_PAYLOAD
