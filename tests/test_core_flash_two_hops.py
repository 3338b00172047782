"""A relay whose FLASH has two next hops on one LoRa link (``implicit_ack``) sends it to both in one
broadcast: each takes it as sent to it, the relay awaits each one's custody, and the first that
takes custody ends its wait. Without ``implicit_ack`` (no broadcast) the copies go one by one."""

from __future__ import annotations

from dataclasses import replace

from relay.bundle import Bundle, CompactContext, Destination, Priority
from relay.core.actions import Drop, Persist
from relay.core.frames import AckFrame, DataFrame, SummaryFrame, decode_frame, encode_frame
from relay.core.machine import RelayCore
from relay.links.base import LinkProfile

# origin, relay, dead end, next hop, destination
A, R, D, B, C = b"A" * 16, b"R" * 16, b"D" * 16, b"B" * 16, b"C" * 16
CONTEXT = CompactContext.from_names([A, R, D, B, C], [])
LORA = LinkProfile(
    "lora0",
    "lora",
    mtu=219,
    bitrate=130.0,
    cost=10.0,
    duty_cycle=0.1,
    compact=True,
    per_frame_overhead_s=0.4,
    implicit_ack=True,
)
IP = LinkProfile("ip0", "ip", mtu=64000, bitrate=1e6)


def _alarm() -> Bundle:
    return Bundle(A, Destination.to_node(C), 0, 1, 3600, Priority.FLASH, 1, b"alarm")


def _sent(core: RelayCore, link: str, now: float) -> list[tuple[bytes, tuple[bytes, ...], bytes]]:
    """Every frame ``core`` sends now on ``link``: (peer, further addressees, bytes)."""
    out = []
    while (pulled := core.next_frame(link, now)) is not None:
        core.take_implicit_acks(link)
        out.append((pulled[0], core.take_addressees(link), pulled[1]))
    return out


def _relay(lora: LinkProfile) -> tuple[RelayCore, list[tuple[bytes, tuple[bytes, ...], bytes]]]:
    """R holds A's alarm (from A over IP) with routes to C through D and through B, both on ``lora``;
    returns R and the frames it sends."""
    r = RelayCore(R, context=CONTEXT)
    r.link_up(IP, A, 0.0)
    for peer in (D, B):
        r.link_up(lora, peer, 0.0)
    via = RelayCore(B, context=CONTEXT)
    via.link_up(lora, R, 0.0)
    via.link_up(IP, C, 0.0)
    offer = via.router.make_beacon(lora, R)
    r.router.beacon_received(lora.name, D, offer, 0.0)
    r.router.beacon_received(lora.name, B, offer, 0.0)
    _sent(r, lora.name, 0.0)  # the contact summaries
    r.frame("ip0", A, _encoded_alarm(), 1.0)
    r.persisted([_alarm().id], [], 1.0)
    return r, [s for s in _sent(r, lora.name, 1.0) if _is_alarm(s[2])]


def _encoded_alarm() -> bytes:
    return encode_frame(DataFrame(_alarm(), 1, compact=False))


def _is_alarm(raw: bytes) -> bool:
    frame = decode_frame(raw, CONTEXT)
    return isinstance(frame, DataFrame) and frame.bundle.id == _alarm().id


def test_both_next_hops_get_the_alarm_in_one_broadcast() -> None:
    r, forwards = _relay(LORA)
    assert len(forwards) == 1, "one frame on the air for both next hops"
    peer, also, raw = forwards[0]
    assert {peer, *also} == {D, B} and len(also) == 1
    assert r.custody.get(_alarm().id, D) is not None and r.custody.get(_alarm().id, B) is not None
    # each addressee takes it as sent to it: B (a way on over IP) takes custody
    b = RelayCore(B, context=CONTEXT)
    b.link_up(LORA, R, 2.0)
    b.link_up(IP, C, 2.0)
    assert [type(x) for x in b.frame("lora0", R, raw, 2.0)] == [Persist]
    b.persisted([_alarm().id], [], 2.0)
    acks = [decode_frame(raw, CONTEXT) for to, _, raw in _sent(b, "lora0", 2.0) if to == R]
    assert [a.ids for a in acks if isinstance(a, AckFrame)] == [(_alarm().id,)]
    # D, routed nowhere (its offer is gone), says "seen"; B's custody ends R's wait and its copy
    d = RelayCore(D, context=CONTEXT)
    d.link_up(LORA, R, 2.0)
    assert [type(x) for x in d.frame("lora0", R, raw, 2.0)] == [Persist]
    d.persisted([_alarm().id], [], 2.0)
    replies = [decode_frame(raw, CONTEXT) for to, _, raw in _sent(d, "lora0", 2.0) if to == R]
    assert [type(x) for x in replies] == [SummaryFrame]
    actions = r.frame("lora0", B, encode_frame(AckFrame((_alarm().id,))), 2.5)
    assert any(isinstance(x, Drop) for x in actions), "a relay hands a directed FLASH on"
    assert r.custody.get(_alarm().id, D) is None and not r.holds(_alarm().id)


def test_without_a_broadcast_the_copies_go_one_by_one() -> None:
    _, forwards = _relay(replace(LORA, implicit_ack=False))
    assert [(peer, also) for peer, also, _ in forwards] in ([(D, ()), (B, ())], [(B, ()), (D, ())])
