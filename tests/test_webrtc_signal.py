"""The WebRTC signalling codec: real aiortc descriptions in at most 200 bytes, rebuilt into SDP
aiortc accepts; property tests of encoding, decoding, signatures and size limits."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import SessionDescription
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto.identity import Identity
from relay.links.webrtc_signal import (
    MAX_CANDIDATES,
    MAX_SIGNAL,
    Candidate,
    CandidateType,
    Flags,
    Signal,
    SignalError,
    SignalType,
    decode,
    encode,
    from_sdp,
    to_sdp,
)

ALICE, BOB = Identity.generate(), Identity.generate()
ICE_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"

candidates = st.builds(
    Candidate,
    st.one_of(
        st.ip_addresses(v=4).map(str),
        st.ip_addresses(v=6).map(lambda a: str(ipaddress.IPv6Address(a))),
    ),
    st.integers(1, 65535),
    st.sampled_from(CandidateType),
)
signals = st.builds(
    Signal,
    st.sampled_from(SignalType),
    st.just(ALICE.node_id),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.text(ICE_CHARS, min_size=4, max_size=32),
    st.text(ICE_CHARS, min_size=22, max_size=64),
    st.binary(min_size=32, max_size=32),
    st.lists(candidates, max_size=MAX_CANDIDATES).map(tuple),
    st.sampled_from([0, int(Flags.SOS), int(Flags.VIDEO), int(Flags.SOS | Flags.VIDEO)]),
    st.just(b""),
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
).map(lambda s: s if s.video else dataclasses.replace(s, video_ssrcs=(0, 0)))  # SSRCs go with video only


async def _description(offer: RTCSessionDescription | None = None) -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel("mesh112", ordered=True, negotiated=True, id=0)
    if offer is None:
        await pc.setLocalDescription(await pc.createOffer())
    else:
        await pc.setRemoteDescription(offer)
        await pc.setLocalDescription(await pc.createAnswer())
    return pc, pc.localDescription.sdp


async def test_real_offer_and_answer_fit_one_lora_frame_and_rebuild_into_sdp_aiortc_accepts() -> None:
    offerer, offer_sdp = await _description()
    offer = from_sdp(offer_sdp, SignalType.OFFER, ALICE.node_id, 7, 1000).sign(ALICE, BOB.node_id)
    wire_offer = encode(offer)
    answerer, answer_sdp = await _description(RTCSessionDescription(to_sdp(decode(wire_offer)), "offer"))
    answer = from_sdp(answer_sdp, SignalType.ANSWER, BOB.node_id, 7, 1001).sign(BOB, ALICE.node_id)
    wire_answer = encode(answer)
    await offerer.setRemoteDescription(RTCSessionDescription(to_sdp(decode(wire_answer)), "answer"))
    print(
        f"offer {len(offer_sdp)} B SDP -> {len(wire_offer)} B; answer {len(answer_sdp)} -> {len(wire_answer)}"
    )
    assert len(wire_offer) <= 200 and len(wire_answer) <= 200
    for sdp, wire in ((offer_sdp, wire_offer), (answer_sdp, wire_answer)):
        original, rebuilt = (
            SessionDescription.parse(sdp).media[0],
            SessionDescription.parse(to_sdp(decode(wire))).media[0],
        )
        assert rebuilt.ice.usernameFragment == original.ice.usernameFragment
        assert rebuilt.ice.password == original.ice.password
        sha256 = [f.value for f in original.dtls.fingerprints if f.algorithm == "sha-256"]
        assert [f.value for f in rebuilt.dtls.fingerprints] == sha256
        v4 = [(c.ip, c.port) for c in original.ice_candidates if ":" not in c.ip]
        assert [(c.ip, c.port) for c in rebuilt.ice_candidates] == v4 and v4
    assert offerer.signalingState == answerer.signalingState == "stable"
    await asyncio.gather(offerer.close(), answerer.close())


@settings(max_examples=300, deadline=None)
@given(signals)
def test_every_signal_survives_encoding_and_verifies(signal: Signal) -> None:
    signed = signal.sign(ALICE, BOB.node_id)
    wire = encode(signed)
    assert len(wire) <= MAX_SIGNAL
    back = decode(wire)
    assert back == signed
    back.verify(ALICE.public, BOB.node_id)
    with pytest.raises(SignalError, match="bad signature"):
        back.verify(ALICE.public, ALICE.node_id)  # addressed to another node


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(signals, st.data())
def test_any_change_to_the_signed_part_is_caught_and_candidates_may_be_rewritten(
    signal: Signal, data: st.DataObject
) -> None:
    signed = signal.sign(ALICE, BOB.node_id)
    wire = bytearray(encode(signed))
    signed_len = len(signed.signed_part(BOB.node_id)) - len(b"mesh112/webrtc/signal/v1") - 16
    at = data.draw(st.integers(0, signed_len - 1))
    wire[at] ^= data.draw(st.integers(1, 255))
    with pytest.raises(SignalError):
        decode(bytes(wire)).verify(ALICE.public, BOB.node_id)
    relayed = dataclasses.replace(signed, candidates=(Candidate("198.51.100.7", 3478, CandidateType.RELAY),))
    decode(encode(relayed)).verify(ALICE.public, BOB.node_id)  # a relay on the path may rewrite them


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=MAX_SIGNAL + 16), signals, st.integers(0, 255), st.binary(max_size=24))
def test_decoding_arbitrary_or_mangled_bytes_raises_only_signal_error(
    data: bytes, signal: Signal, at: int, splice: bytes
) -> None:
    wire = encode(signal.sign(ALICE, BOB.node_id))
    mangled = wire[:at] + splice + wire[at + len(splice) :]
    for candidate in (data, mangled):
        with contextlib.suppress(SignalError):
            decode(candidate)


@settings(max_examples=300, deadline=None)
@given(signals, st.integers(0, 400))
def test_every_truncation_is_refused(signal: Signal, cut: int) -> None:
    wire = encode(signal.sign(ALICE, BOB.node_id))
    with pytest.raises(SignalError):
        decode(wire[: cut % len(wire)])


def test_size_limits_on_decode() -> None:
    signal = Signal(SignalType.OFFER, ALICE.node_id, 1, 2, "abcd", "a" * 22, bytes(32), ()).sign(
        ALICE, BOB.node_id
    )
    wire = encode(signal)
    with pytest.raises(SignalError, match="over the 512-byte limit"):
        decode(wire + bytes(MAX_SIGNAL))
    too_many = bytearray(wire)
    too_many[len(wire) - 64 - 1] = MAX_CANDIDATES + 1
    with pytest.raises(SignalError, match="at most 8"):
        decode(bytes(too_many))
    with pytest.raises(SignalError, match="unexpected bytes"):
        decode(wire + b"\x00")
    with pytest.raises(SignalError, match="ufrag"):
        encode(dataclasses.replace(signal, ufrag="a b c d"))
    with pytest.raises(SignalError, match="signed by the node it names"):
        signal.sign(BOB, ALICE.node_id)
