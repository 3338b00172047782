"""Attacks on a running field, for the adversary tests (tests/adversary/) and ``bench/adversary.py``.

Every scenario runs real nodes (SQLite stores, crypto, the relay core) on real links and measures one
thing: how long a real FLASH alarm takes from the field unit to the command post, with the attack and
in the same run without it (same topology, seed and warm-up).

On LoRa the nodes sit on emulated Meshtastic radios driven through the real ``meshtastic`` library:
``field`` cannot hear ``post``, ``relay`` hears both. An outsider radio (not enrolled, no keys) hears
everything and transmits Meshtastic packets with any ``from`` it likes, as a modified firmware can.
It spoofs frames from enrolled radios, forges custody ACKs for the alarm's real id, sends bundles
under the field unit's predictable ids ahead of it, replays recorded frames and floods forged FLASH
dated ten years ahead, within the duty cycle a real radio keeps (a transmitter that ignores it is a
jammer, which no protocol above the radio can answer). An enrolled ``rogue`` next to the relay floods
FLASH of its own, validly tagged. Over IP an enrolled insider sends bundles under the field unit's
ids, guessed the way the old ids could be guessed (this second and the next few, counting from 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import statistics
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshtastic.protobuf import mesh_pb2

from crypto.certificate import Authority, Certificate
from crypto.hop import HOP_OVERHEAD, HopAuth
from crypto.identity import Identity
from field.lora_emulator.device import DeviceServer
from field.lora_emulator.medium import AirFrame, LoRaMedium
from field.lora_emulator.radio import EmulatedRadio
from relay.bundle import Bundle, BundleId, Destination, Kind, Priority, to_epoch
from relay.core.frames import AckFrame, DataFrame, encode_frame
from relay.core.scheduler import receipts_sender
from relay.engine import NodeEngine
from relay.links.base import Link
from relay.links.ip import IpLink, IpLinkConfig
from relay.links.ip_handshake import Credentials, Trust
from relay.links.lora import LoRaLink, LoRaLinkConfig
from relay.links.lora_phy import MESHTASTIC_HEADER_LEN, PKI_OVERHEAD, Region
from relay.node import Node
from relay.trust import TrustStore

APP_PORT = 300
NUMS = {"post": 0xA0000001, "relay": 0xA0000002, "field": 0xA0000003, "rogue": 0xA0000004}
POSITIONS = {"post": (0.0, 0.0), "relay": (900.0, 0.0), "field": (1800.0, 0.0), "rogue": (900.0, 300.0)}
NEIGHBOURS = {
    "post": ("relay",),
    "relay": ("post", "field", "rogue"),
    "field": ("relay",),
    "rogue": ("relay",),
}
OUTSIDER_NUM = 0x0BAD0001
OUTSIDER_POSITION = (900.0, -300.0)
TEN_YEARS_S = 10 * 365 * 86400
ALARM = b"FIRE B2-Z14 floor 2 smoke detector"
ALARMS_PER_RUN = 3  # the run's figure is their median: one collision does not make the figure


class Members:
    """A deployment authority and the enrolled nodes of one scenario."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.authority = Authority.generate()
        self.nodes: dict[str, tuple[Identity, Certificate]] = {}
        for name in names:
            while True:  # distinct 3-byte short ids, as the LoRa encoding needs
                identity = Identity.generate()
                if all(c.node_id[:3] != identity.node_id[:3] for _, c in self.nodes.values()):
                    break
            roles = frozenset({"command"}) if name == "post" else frozenset()
            certificate = self.authority.issue(identity.public, roles, name, int(time.time()) + 86400)
            self.nodes[name] = (identity, certificate)

    def node_id(self, name: str) -> bytes:
        return self.nodes[name][0].node_id

    def trust(self) -> TrustStore:
        return TrustStore(self.authority.public, [c for _, c in self.nodes.values()])

    async def engine(self, name: str, directory: Path) -> NodeEngine:
        identity, certificate = self.nodes[name]
        path = directory / f"{name}.sqlite3"
        return await NodeEngine.open(identity, certificate, self.trust(), path, now=to_epoch(time.time()))


class OutsiderRadio(EmulatedRadio):
    """A radio with modified firmware: hears every Mesh112 frame and transmits with any ``from``."""

    def __init__(self, medium: LoRaMedium) -> None:
        super().__init__(medium, OUTSIDER_NUM, position=OUTSIDER_POSITION, rebroadcast=False, seed=7)
        self.heard: list[AirFrame] = []
        self.sent = 0
        self.airtime_s = 0.0
        self._packet_ids = random.Random(OUTSIDER_NUM)

    def on_air_receive(self, frame: AirFrame, snr: float, rssi: float) -> None:
        data = mesh_pb2.Data()
        data.ParseFromString(frame.data)
        if data.portnum == APP_PORT:
            self.heard.append(frame)

    def inject(self, sender: int, to: int, payload: bytes) -> float:
        """Put a Mesh112-port direct message on the air as if ``sender`` sent it; returns its airtime."""
        data = mesh_pb2.Data(portnum=APP_PORT, payload=payload).SerializeToString()
        return self.replay(
            AirFrame(
                to=to,
                sender=sender,
                packet_id=0,
                hop_limit=3,
                hop_start=3,
                want_ack=True,
                channel=0,
                data=data,
                pki=True,
                relay_node=sender & 0xFF,
                phy_len=MESHTASTIC_HEADER_LEN + len(data) + PKI_OVERHEAD,
            )
        )

    def replay(self, frame: AirFrame) -> float:
        """Transmit ``frame`` again under a fresh packet id (the radios drop repeated ids themselves)."""
        fresh = AirFrame(
            to=frame.to,
            sender=frame.sender,
            packet_id=self._packet_ids.randint(1, 0xFFFFFFFF),
            hop_limit=frame.hop_start,
            hop_start=frame.hop_start,
            want_ack=frame.want_ack,
            channel=frame.channel,
            data=frame.data,
            pki=frame.pki,
            relay_node=frame.sender & 0xFF,
            phy_len=frame.phy_len,
        )
        with self.medium.lock:
            airtime = self.medium.transmit(self.num, fresh)
        self.sent += 1
        self.airtime_s += airtime
        return airtime


@dataclass
class Run:
    """What one run measured."""

    latency_s: float  # median of the alarms: field unit -> command post (simulated s on LoRa)
    delivered: bool  # every alarm arrived
    latencies_s: list[float] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)  # what operators see of the attack
    attack: dict[str, Any] = field(default_factory=dict)  # what the attacker did


class _Field:
    """Nodes on links, the alarm and how long it took; LoRa and IP fields subclass the wiring."""

    members: Members
    nodes: dict[str, Node]
    sent: asyncio.Event  # set when an alarm was sent; ``sent_id`` names it
    sent_id: BundleId

    def clock(self) -> float:
        return time.monotonic()

    async def start(self) -> None:
        for node in self.nodes.values():
            await node.start()
        self._arrivals: dict[BundleId, float] = {}
        self._arrived = asyncio.Event()
        self._collector = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        post = self.nodes["post"]
        async for delivery in post.inbox():
            self._arrivals.setdefault(delivery.bundle_id, self.clock())
            await post.ack(delivery.bundle_id)
            self._arrived.set()

    async def deliver(self, sender: str, payload: bytes, priority: Priority, timeout: float) -> float | None:
        """Send from ``sender`` to the post; seconds until delivered (None: not within ``timeout``)."""
        start = self.clock()
        bundle_id = await self.nodes[sender].send(
            Destination.to_node(self.members.node_id("post")), payload, kind=Kind.SOS, priority=priority
        )
        self.sent_id = bundle_id
        self.sent.set()
        deadline = asyncio.get_running_loop().time() + timeout
        while bundle_id not in self._arrivals:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return None
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(left, 0.5))
        return self._arrivals[bundle_id] - start

    async def alarms(self, timeout: float) -> Run:
        """Send :data:`ALARMS_PER_RUN` FLASH alarms one after another, each once the last one's
        receipt is back at the field unit (or it took too long)."""
        latencies: list[float] = []
        for index in range(ALARMS_PER_RUN):
            latency = await self.deliver("field", ALARM + b" #%d" % index, Priority.FLASH, timeout)
            if latency is None:
                return Run(float("inf"), False, latencies)
            latencies.append(round(latency, 3))
            sender = self.nodes["field"]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout / 4
            while sender.status(self.sent_id).state.value != "delivered" and loop.time() < deadline:
                await asyncio.sleep(0.05)
        return Run(round(statistics.median(latencies), 3), True, latencies)

    async def stop(self) -> None:
        self._collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._collector
        for node in self.nodes.values():
            await node.stop()

    def engine_counters(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, node in self.nodes.items():
            engine = node.engine
            security = vars(engine.security) if hasattr(engine, "security") else {}
            for key, value in {**security, "id_conflicts": engine.core.id_conflicts}.items():
                if value:
                    out[f"{name}.{key}"] = int(value)
        return out


class LoRaField(_Field):
    def __init__(
        self, directory: Path, *, with_rogue: bool, speedup: float, seed: int, region: Region
    ) -> None:
        names = ("post", "relay", "field", "rogue") if with_rogue else ("post", "relay", "field")
        self.directory = directory
        self.members = Members(names)
        self.medium = LoRaMedium("LONG_FAST", seed=seed, speedup=speedup)
        # Mesh112 routes by itself: the radios do not rebroadcast (Meshtastic's CLIENT_MUTE), so a
        # hidden radio's rebroadcast cannot collide with the next hop's ACK and stall the link.
        self.radios = {
            n: EmulatedRadio(
                self.medium, NUMS[n], position=POSITIONS[n], rebroadcast=False, region=region, seed=seed
            )
            for n in names
        }
        self.region = region
        self.servers = {n: DeviceServer(radio) for n, radio in self.radios.items()}
        self.outsider = OutsiderRadio(self.medium)
        self.nodes = {}
        self.sent = asyncio.Event()

    def clock(self) -> float:
        return self.medium.now()

    async def settle(self, quiet_s: float = 20.0, limit_s: float = 600.0) -> None:
        """Wait until the air has been quiet for ``quiet_s`` simulated seconds (at most ``limit_s``):
        the warm-up's receipt, summaries and beacons are done, so both runs start the alarm alike."""
        speedup = self.medium.scheduler.speedup
        start = self.medium.now()
        while self.medium.now() - start < limit_s:
            seen = self.medium.stats.transmissions
            await asyncio.sleep(quiet_s / speedup)
            if self.medium.stats.transmissions == seen:
                return

    async def start(self) -> None:
        for server in self.servers.values():
            server.start()
        for name in self.servers:
            engine = await self.members.engine(name, self.directory)
            roster = {NUMS[n]: self.members.node_id(n).hex() for n in NEIGHBOURS[name] if n in self.servers}
            config = LoRaLinkConfig(
                roster=roster, port=self.servers[name].port, region=self.region, ack_timeout_s=10.0
            )
            link = LoRaLink(config, HopAuth(self.members.nodes[name][0]), engine.trust.check)
            self.nodes[name] = Node(engine, [link])
        await super().start()

    async def stop(self) -> None:
        try:
            await super().stop()
        finally:
            for server in self.servers.values():
                server.stop()
            self.medium.close()

    def counters(self) -> dict[str, int]:
        out = self.engine_counters()
        for name, node in self.nodes.items():
            for link in node.links.values():
                assert isinstance(link, LoRaLink)
                for reason, count in link.state().refused.items():
                    out[f"{name}.lora_refused.{reason}"] = count
            core = node.engine.core
            for link_name in node.links:
                capped = core.over_cap_frames(link_name) if core.has_link(link_name) else {}
                for flow, count in capped.items():  # an origin's own bundles, or its receipts
                    key = "over_cap_frames" if receipts_sender(flow) is None else "over_cap_receipts"
                    out[f"{name}.{key}"] = out.get(f"{name}.{key}", 0) + count
        return out

    def forged_data(self, origin: str, created: int, seq: int, to: str = "post") -> bytes:
        """A compact DATA frame with a bundle that claims ``origin``, with a fake hop tag."""
        bundle = Bundle(
            self.members.node_id(origin),
            Destination.to_node(self.members.node_id(to)),
            created,
            seq,
            24 * 3600 // 60 * 60,
            Priority.FLASH,
            Kind.SOS,
            os.urandom(40),
        )
        return encode_frame(DataFrame(bundle, 1, compact=True)) + os.urandom(HOP_OVERHEAD)


# ---- LoRa attacks: each runs while the alarm is on its way ----


async def _clear_channel(field: LoRaField) -> None:
    """Wait until the outsider's radio hears the channel free (channel activity detection, as any
    LoRa radio does before it transmits; one that does not is a jammer)."""
    slot = field.medium.modem.slot_time_s() / field.medium.scheduler.speedup
    while field.medium.is_busy(OUTSIDER_NUM):
        await asyncio.sleep(slot)


async def _paced(field: LoRaField, frames: list[tuple[int, int, bytes]], duty: float = 0.1) -> None:
    """Inject (sender, to, payload) frames one after another within the outsider's duty cycle."""
    for sender, to, payload in frames:
        await _clear_channel(field)
        airtime = field.outsider.inject(sender, to, payload)
        await asyncio.sleep(airtime / duty / field.medium.scheduler.speedup)


async def spoof_from(field: LoRaField) -> None:
    """Frames that name the field unit as sender, to the relay: forged FLASH bundles."""
    now = int(to_epoch(time.time()))
    frames = [(NUMS["field"], NUMS["relay"], field.forged_data("field", now, 1000 + i)) for i in range(20)]
    await _paced(field, frames)


async def forge_acks(field: LoRaField) -> None:
    """Custody ACKs for each alarm's real id, as the relay to the field unit and as the post to the relay."""
    while True:
        await field.sent.wait()
        field.sent.clear()
        ack = encode_frame(AckFrame((field.sent_id,))) + os.urandom(HOP_OVERHEAD)
        await _paced(field, [(NUMS["relay"], NUMS["field"], ack), (NUMS["post"], NUMS["relay"], ack)])


async def preempt_ids(field: LoRaField) -> None:
    """Bundles under the field unit's next ids as they used to be (this second and the next, seq 0-7)."""
    now = int(to_epoch(time.time()))
    frames = [
        (NUMS["field"], NUMS["relay"], field.forged_data("field", created, seq))
        for created in (now, now + 1)
        for seq in range(8)
    ]
    await _paced(field, frames)


async def replay(field: LoRaField) -> None:
    """Every Mesh112 frame heard during the warm-up, sent again."""
    for frame in list(field.outsider.heard):
        await _clear_channel(field)
        airtime = field.outsider.replay(frame)
        await asyncio.sleep(airtime / 0.1 / field.medium.scheduler.speedup)


async def flood_flash(field: LoRaField) -> None:
    """Forged FLASH bundles dated ten years ahead, as the field unit, as fast as a 10 % duty cycle allows."""
    ahead = int(to_epoch(time.time())) + TEN_YEARS_S
    frames = [(NUMS["field"], NUMS["relay"], field.forged_data("field", ahead, i)) for i in range(400)]
    await _paced(field, frames)


async def rogue_flash(field: LoRaField) -> None:
    """The enrolled rogue node sends FLASH after FLASH to the post through the relay, validly tagged."""
    rogue = field.nodes["rogue"]
    post = Destination.to_node(field.members.node_id("post"))
    for i in range(60):
        await rogue.send(post, b"FLOOD %03d " % i + bytes(120), kind=Kind.SOS, priority=Priority.FLASH)


LORA_ATTACKS: dict[str, Callable[[LoRaField], Coroutine[Any, Any, None]]] = {
    "spoof_from": spoof_from,
    "forge_acks": forge_acks,
    "preempt_ids": preempt_ids,
    "replay": replay,
    "flood_flash": flood_flash,
    "rogue_flash": rogue_flash,
}
# How long (simulated s) each attack runs before the first alarm.
ATTACK_LEAD_S = {"preempt_ids": 170.0, "flood_flash": 60.0, "rogue_flash": 120.0}
# On a 1 % sub-band (UA_868) the rogue's flood also exhausts the relay's radio: its firmware counts the
# routing ACKs it sends for every flood frame, which no scheduler sees (docs/crypto.md). The scenarios
# run on EU_868 (10 %), where the flood leaves the relay a backlog of FLASH to forward.
ATTACK_REGION: dict[str, Region] = {}


async def lora_run(
    directory: Path,
    attack: str | None,
    *,
    region: Region = "EU_868",
    speedup: float = 50.0,
    seed: int = 4,
    timeout: float = 40.0,
) -> Run:
    """One LoRa run: warm up (a PRIORITY message field -> post), then the FLASH alarm, with ``attack``
    (a key of :data:`LORA_ATTACKS`) running from a lead time before the alarm until it arrives."""
    directory.mkdir(parents=True, exist_ok=True)
    field_ = LoRaField(
        directory, with_rogue=attack == "rogue_flash", speedup=speedup, seed=seed, region=region
    )
    await field_.start()
    task: asyncio.Task[None] | None = None
    try:
        warm = await field_.deliver("field", b"radio check", Priority.PRIORITY, timeout)
        if warm is None:
            raise RuntimeError("the warm-up message never arrived: the emulated field does not work")
        await field_.settle()
        field_.sent.clear()
        if attack is not None:
            task = asyncio.create_task(LORA_ATTACKS[attack](field_))
            await asyncio.sleep(ATTACK_LEAD_S.get(attack, 0.0) / speedup)
        run = await field_.alarms(timeout)
        run.counters = field_.counters()
        if attack != "rogue_flash":
            run.attack = {"frames": field_.outsider.sent, "airtime_s": round(field_.outsider.airtime_s, 1)}
        return run
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await field_.stop()


# ---- IP: an enrolled insider next to the relay ----


class IpField(_Field):
    """field -> relay -> post over real IP links on 127.0.0.1, and an enrolled insider at the relay."""

    def __init__(self, directory: Path, ports: tuple[int, int]) -> None:
        self.directory = directory
        self.members = Members(("post", "relay", "field", "insider"))
        self.ports = ports
        self.nodes = {}
        self.sent = asyncio.Event()

    async def start(self) -> None:
        relay_port, post_port = self.ports
        trust = Trust(self.members.authority.public, None)
        timing: dict[str, Any] = {"keepalive_interval": 0.25, "keepalive_misses": 3}
        dial = {
            "post": IpLinkConfig(listen=f"tcp://127.0.0.1:{post_port}", **timing),
            "relay": IpLinkConfig(
                listen=f"tcp://127.0.0.1:{relay_port}", peers=(f"tcp://127.0.0.1:{post_port}",), **timing
            ),
            "field": IpLinkConfig(peers=(f"tcp://127.0.0.1:{relay_port}",), **timing),
            "insider": IpLinkConfig(peers=(f"tcp://127.0.0.1:{relay_port}",), **timing),
        }
        for name, config in dial.items():
            engine = await self.members.engine(name, self.directory)
            links: list[Link] = [IpLink(config, Credentials(*self.members.nodes[name]), trust)]
            self.nodes[name] = Node(engine, links)
        await super().start()

    def insider_link(self) -> IpLink:
        link = self.nodes["insider"].links["ip0"]
        assert isinstance(link, IpLink)
        return link

    def forged(self, created: int, seq: int) -> bytes:
        bundle = Bundle(
            self.members.node_id("field"),
            Destination.to_node(self.members.node_id("post")),
            created,
            seq,
            3600,
            Priority.FLASH,
            Kind.SOS,
            os.urandom(40),
        )
        return encode_frame(DataFrame(bundle, 1, compact=False))

    def counters(self) -> dict[str, int]:
        return self.engine_counters()


async def insider_preempt(field: IpField) -> None:
    """The insider sends bundles under the field unit's ids: every id the old scheme could give in
    the next seconds (seq 0-63)."""
    relay = field.members.node_id("relay")
    link = field.insider_link()
    core = field.nodes["relay"].engine.core
    for _ in range(100):
        if field.members.node_id("insider") in core.neighbours("ip0"):
            break
        await asyncio.sleep(0.05)
    else:
        raise RuntimeError("the insider never connected to the relay")
    now = int(to_epoch(time.time()))
    for created in range(now, now + 4):
        for seq in range(64):
            await link.send(relay, field.forged(created, seq))


async def ip_run(directory: Path, attack: bool, ports: tuple[int, int], timeout: float = 20.0) -> Run:
    """One IP run: warm up, then the FLASH alarm, with the insider's pre-emption before it."""
    directory.mkdir(parents=True, exist_ok=True)
    field_ = IpField(directory, ports)
    await field_.start()
    try:
        warm = await field_.deliver("field", b"radio check", Priority.PRIORITY, timeout)
        if warm is None:
            raise RuntimeError("the warm-up message never arrived over IP")
        if attack:
            await insider_preempt(field_)
            await asyncio.sleep(0.5)  # the forged bundles reach the post and are refused there
        run = await field_.alarms(timeout)
        run.counters = field_.counters()
        run.attack = {"forged_bundles": 4 * 64} if attack else {}
        return run
    finally:
        await field_.stop()
