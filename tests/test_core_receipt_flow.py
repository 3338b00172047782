"""Receipts spend a share of their own, apart from their sender's bundles (relay/core/scheduler.py).

The rogue-flood outlier of issue 15: a command post that answered an enrolled rogue's FLASH flood
with one FLASH receipt per bundle went over its own FLASH share, so its own FLASH (a revocation of
the rogue) was paced to a tenth of the air with the flood's receipts. The share is the sender's
receipts, not the answered origin's: an insider cannot make fresh shares by addressing receipts to
made-up nodes."""

from __future__ import annotations

from types import SimpleNamespace

from core_pump import Pump

from relay.api.metrics import NodeCollector
from relay.bundle import Bundle, CompactContext, Destination, Kind, Priority
from relay.core.frames import DataFrame, decode_frame
from relay.core.scheduler import RECEIPT_FLOW, flow_of
from relay.engine import SecurityCounters
from relay.links.base import LinkProfile

POST, ROGUE, FIELD = b"P" * 16, b"R" * 16, b"F" * 16
CONTEXT = CompactContext.from_names([POST, ROGUE, FIELD], [])
LORA = LinkProfile(
    "lora0", "lora", mtu=219, bitrate=125.0, cost=10.0, duty_cycle=0.1, compact=True, per_frame_overhead_s=0.3
)


def _receipt(to: bytes, seq: int) -> Bundle:
    return Bundle(POST, Destination.to_node(to), 10, seq, 3600, Priority.FLASH, Kind.RECEIPT, bytes(60))


def test_a_flood_of_receipts_leaves_the_senders_own_alarms_unpaced() -> None:
    pump = Pump(CONTEXT)
    post = pump.add(POST)
    for peer in (ROGUE, FIELD):
        pump.add(peer)
        post.core.link_up(LORA, peer, 0.0)
    post.core.timer(10.0)
    while post.core.next_frame("lora0", 10.0) is not None:  # the contact's control frames
        pass
    for seq in range(20):  # a receipt for each bundle of the rogue's flood
        post.core.originate(_receipt(ROGUE, seq), 10.0)
    sent = 0
    while post.core.next_frame("lora0", 10.0) is not None:
        sent += 1
    bucket = post.core._links["lora0"].bucket
    assert 0 < sent < 20  # the flood's receipts went over their share and are paced ...
    assert bucket.over_cap(Priority.FLASH, RECEIPT_FLOW + POST)
    assert bucket.over_cap_frames[RECEIPT_FLOW + POST] > 0
    assert not bucket.over_cap(Priority.FLASH, POST)  # ... and the post is no flooder for it
    alarm = Bundle(POST, Destination.to_node(FIELD), 10, 101, 3600, Priority.FLASH, Kind.SOS, bytes(60))
    post.core.originate(alarm, 10.0)
    out = post.core.next_frame("lora0", 10.0)  # at once: not behind the flood's receipts
    assert out is not None
    frame = decode_frame(out[1], CONTEXT)
    assert isinstance(frame, DataFrame) and frame.bundle.id == alarm.id


def test_receipts_sent_to_a_node_never_count_against_its_own_alarms() -> None:
    fake = Bundle(ROGUE, Destination.to_node(FIELD), 10, 1, 3600, Priority.FLASH, Kind.RECEIPTS, bytes(60))
    alarm = Bundle(FIELD, Destination.to_node(POST), 10, 1, 3600, Priority.FLASH, Kind.SOS, bytes(60))
    assert flow_of(fake) == RECEIPT_FLOW + ROGUE != flow_of(alarm) == FIELD


def test_an_insider_gets_one_share_for_all_its_receipts_wherever_they_go() -> None:
    """FLASH "receipts" from a rogue to a hundred made-up nodes are one flow, paced as one."""
    fakes = [
        Bundle(ROGUE, Destination.to_node(bytes([n]) * 16), 10, n, 3600, Priority.FLASH, Kind.RECEIPT, b"")
        for n in range(100)
    ]
    assert {flow_of(fake) for fake in fakes} == {RECEIPT_FLOW + ROGUE}


def test_operators_see_the_flood_and_its_receipts_over_their_share() -> None:
    pump = Pump(CONTEXT)
    post = pump.add(POST)
    pump.add(ROGUE)
    post.core.link_up(LORA, ROGUE, 0.0)
    for seq in range(20):
        post.core.originate(_receipt(ROGUE, seq), 10.0)
    while post.core.next_frame("lora0", 10.0) is not None:
        pass
    node = SimpleNamespace(
        engine=SimpleNamespace(
            core=post.core,
            trust=SimpleNamespace(certificate=lambda _: None, revocations=None),
            security=SecurityCounters(),
        ),
        links={"lora0": SimpleNamespace(profile=LORA)},
        collectors=[],
    )
    families = {family.name: family for family in NodeCollector(node).collect()}  # type: ignore[arg-type]
    samples = [
        (s.labels, s.value) for s in families["mesh112_over_cap_frames"].samples if s.name.endswith("_total")
    ]
    assert samples == [
        (
            {"link": "lora0", "origin": POST.hex(), "flow": "receipts"},
            post.core.over_cap_frames("lora0")[RECEIPT_FLOW + POST],
        )
    ]
    assert samples[0][1] > 0
