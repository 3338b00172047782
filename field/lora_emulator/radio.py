"""The firmware model of one emulated Meshtastic node: TX queue, managed flooding, ACK/NAK.

Modelled on reading firmware 2.7 (Router, ReliableRouter, FloodingRouter, RadioInterface), much
simplified: a TX queue of 16 answered with QueueStatus, random contention delays, SNR-weighted
rebroadcast delays with duplicate cancellation, hop limits, real and implicit ACKs, three
transmissions then ``MAX_RETRANSMIT``, ``TOO_LARGE`` by the firmware size rule, the regional duty
cycle (``DUTY_CYCLE_LIMIT``) and ``PKI_SEND_FAIL_PUBLIC_KEY`` for nodes not on the medium.
Packets for the phone go to ``phone`` or, while no client is connected, to a backlog of 32.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from meshtastic.protobuf import config_pb2, mesh_pb2, portnums_pb2

from field.lora_emulator.medium import AirFrame, LoRaMedium, Timer, relayed
from relay.links.lora_phy import (
    MAX_LORA_PAYLOAD_LEN,
    MESHTASTIC_HEADER_LEN,
    PKI_OVERHEAD,
    duty_cycle,
)

BROADCAST_NUM = 0xFFFFFFFF
MAX_TX_QUEUE = 16
MAX_TO_PHONE_BACKLOG = 32
HOP_MAX = 7
HOP_RELIABLE = 3
RELIABLE_TRANSMISSIONS = 3  # first send and two retries, then MAX_RETRANSMIT
CW_MIN, CW_MAX = 3, 8
PROCESSING_ALLOWANCE_S = 4.5  # the firmware's allowance in its retransmission timer
ERRNO_TX_QUEUE_FULL = 32
ACK_PRIORITY = 120
NO_PKI_PORTS = frozenset(
    {
        portnums_pb2.TRACEROUTE_APP,
        portnums_pb2.NODEINFO_APP,
        portnums_pb2.ROUTING_APP,
        portnums_pb2.POSITION_APP,
    }
)
ROUTER_ROLES = frozenset({config_pb2.Config.DeviceConfig.ROUTER, config_pb2.Config.DeviceConfig.ROUTER_LATE})

PhoneSink = Callable[[Any], None]  # receives a FromRadio


@dataclass(slots=True)
class _Queued:
    frame: AirFrame
    not_before: float


@dataclass(slots=True)
class _Pending:
    frame: AirFrame
    transmissions_left: int
    timer: Timer | None = None


def _map(value: float, lo_in: float, hi_in: float, lo_out: int, hi_out: int) -> int:
    value = min(max(value, lo_in), hi_in)
    return int(lo_out + (value - lo_in) * (hi_out - lo_out) / (hi_in - lo_in))


class EmulatedRadio:
    """One node's radio and router on a ``LoRaMedium``. Methods run holding ``medium.lock``."""

    def __init__(
        self,
        medium: LoRaMedium,
        num: int,
        *,
        long_name: str = "",
        short_name: str = "",
        role: int = config_pb2.Config.DeviceConfig.CLIENT,
        hop_limit: int = 3,
        region: str = "EU_868",
        position: tuple[float, float] = (0.0, 0.0),
        tx_power_dbm: float = 27.0,
        rebroadcast: bool = True,
        seed: int = 0,
    ) -> None:
        self.medium = medium
        self.num = num
        self.user_id = f"!{num:08x}"
        self.long_name = long_name or f"Mesh112 emu {self.user_id[-4:]}"
        self.short_name = short_name or self.user_id[-4:]
        self.role = role
        self.hop_limit = hop_limit
        self.region = region
        self.duty_cycle = duty_cycle(region)
        self.rebroadcast = rebroadcast
        self.rng = random.Random(seed ^ num)
        self.public_key = self.rng.randbytes(32)
        self.phone: PhoneSink | None = None
        self.sent_from_phone: list[Any] = []  # every MeshPacket a client asked us to send
        self.delivered_to_phone: list[Any] = []  # every MeshPacket handed to the client side
        self.refused_queue_full = 0
        self._phone_saw_full_queue = False
        self._seen: set[tuple[int, int]] = set()
        self._txq: list[_Queued] = []
        self._tx_timer: Timer | None = None
        self._transmitting = False
        self._pending: dict[int, _Pending] = {}
        self._backlog: list[Any] = []
        medium.add_radio(self, position, tx_power_dbm)

    # ---- identity, for the config handshake ----
    def node_info(self) -> Any:
        user = mesh_pb2.User(
            id=self.user_id,
            long_name=self.long_name,
            short_name=self.short_name,
            hw_model=mesh_pb2.HardwareModel.PORTDUINO,
            role=self.role,
            public_key=self.public_key,
        )
        return mesh_pb2.NodeInfo(num=self.num, user=user)

    def peers(self) -> list[EmulatedRadio]:
        """Every other radio on the medium (the emulator counts them all as heard, keys known)."""
        radios = self.medium.radios()
        return [r for r in radios if isinstance(r, EmulatedRadio) and r.num != self.num]

    def queue_status(self, res: int = 0, packet_id: int = 0) -> Any:
        free = max(0, MAX_TX_QUEUE - len(self._txq))
        return mesh_pb2.QueueStatus(res=res, free=free, maxlen=MAX_TX_QUEUE, mesh_packet_id=packet_id)

    # ---- the phone side ----
    def attach_phone(self, sink: PhoneSink) -> None:
        """A client finished its handshake: deliver the backlog, then everything new."""
        self.phone = sink
        backlog, self._backlog = self._backlog, []
        for packet in backlog:
            sink(mesh_pb2.FromRadio(packet=packet))

    def detach_phone(self, sink: PhoneSink) -> None:
        if self.phone == sink:  # bound methods compare equal, never identical
            self.phone = None

    def reboot(self) -> None:
        """Lose everything volatile, as a power cycle does (queues, pending ACKs, backlog)."""
        for pending in self._pending.values():
            if pending.timer is not None:
                pending.timer.cancel()
        if self._tx_timer is not None:
            self._tx_timer.cancel()
        self._pending.clear()
        self._txq.clear()
        self._backlog.clear()
        self._seen.clear()
        self._tx_timer = None
        self._transmitting = False
        self.phone = None

    def from_phone(self, packet: Any) -> Any:
        """Handle a MeshPacket from the client; returns the QueueStatus the firmware answers with."""
        self.sent_from_phone.append(packet)
        packet_id = packet.id or self.rng.randint(1, 0xFFFFFFFF)
        status = self.queue_status(self._originate(packet, packet_id), packet_id)
        self._phone_saw_full_queue = status.free == 0
        return status

    def send_from_app(
        self,
        payload: bytes,
        portnum: int = portnums_pb2.PRIVATE_APP,
        to: int = BROADCAST_NUM,
        want_ack: bool = False,
    ) -> int:
        """Originate a packet as this node's own app would (for radios without a TCP client)."""
        packet_id = self.rng.randint(1, 0xFFFFFFFF)
        data = mesh_pb2.Data(portnum=portnum, payload=payload)
        packet = mesh_pb2.MeshPacket(
            to=to, id=packet_id, want_ack=want_ack, hop_limit=self.hop_limit, decoded=data
        )
        with self.medium.lock:
            self._originate(packet, packet_id)
        return packet_id

    def _originate(self, packet: Any, packet_id: int) -> int:
        if packet.WhichOneof("payload_variant") != "decoded":
            return 0
        to = packet.to or BROADCAST_NUM
        if to == self.num:
            return 0  # admin and other local requests: accepted, not modelled
        broadcast = to == BROADCAST_NUM
        data = mesh_pb2.Data()
        data.CopyFrom(packet.decoded)
        data.bitfield |= 2 if data.want_response else 0  # the firmware always sets the bitfield
        encoded = data.SerializeToString()
        pki = not broadcast and data.portnum not in NO_PKI_PORTS and packet.channel == 0
        phy_len = MESHTASTIC_HEADER_LEN + len(encoded) + (PKI_OVERHEAD if pki else 0)
        if phy_len > MAX_LORA_PAYLOAD_LEN:
            self._nak(packet_id, mesh_pb2.Routing.TOO_LARGE, packet.channel)
            return 0
        if pki and to not in self.medium.radio_nums():
            self._nak(packet_id, mesh_pb2.Routing.PKI_SEND_FAIL_PUBLIC_KEY, packet.channel)
            return 0
        hop_limit = packet.hop_limit if packet.hop_limit or not packet.want_ack else self.hop_limit
        if hop_limit > HOP_MAX:  # the firmware resets an out-of-range hop limit to the default
            hop_limit = HOP_RELIABLE
        frame = AirFrame(
            to=to,
            sender=self.num,
            packet_id=packet_id,
            hop_limit=hop_limit,
            hop_start=hop_limit,
            want_ack=packet.want_ack and not broadcast,
            channel=packet.channel,
            data=encoded,
            pki=pki,
            relay_node=self.num & 0xFF,
            priority=packet.priority,
            phy_len=phy_len,
        )
        self._seen.add((self.num, packet_id))
        if packet.want_ack:
            self._pending[packet_id] = _Pending(frame, RELIABLE_TRANSMISSIONS - 1)
        if not self._enqueue(frame, self._contention_delay()):
            self.refused_queue_full += 1
            return ERRNO_TX_QUEUE_FULL
        return 0

    # ---- timing ----
    def _contention_window(self) -> int:
        return _map(self._channel_utilisation(), 0.0, 1.0, CW_MIN, CW_MAX)

    def _channel_utilisation(self) -> float:
        return min(1.0, self.medium.tx_fraction_last_hour(self.num) * 60.0)

    def _contention_delay(self) -> float:
        return self.rng.randint(0, 2 ** self._contention_window() - 1) * self.medium.modem.slot_time_s()

    def _rebroadcast_delay(self, snr: float) -> float:
        """Good SNR waits longer, so the farthest hearer relays first; routers go early."""
        slot = self.medium.modem.slot_time_s()
        window = _map(snr, -20.0, 10.0, CW_MIN, CW_MAX)
        if self.role in ROUTER_ROLES:
            return self.rng.randint(0, 2 * window - 1) * slot
        return 2 * CW_MAX * slot + self.rng.randint(0, 2**window - 1) * slot

    def _retransmit_timeout(self, frame: AirFrame) -> float:
        airtime = self.medium.modem.airtime_s(frame.phy_len)
        slots = 2 ** self._contention_window() + 2 * CW_MAX + 2 ** ((CW_MAX + CW_MIN) // 2)
        return float(2 * airtime + slots * self.medium.modem.slot_time_s() + PROCESSING_ALLOWANCE_S)

    # ---- the TX queue ----
    def _enqueue(self, frame: AirFrame, delay: float) -> bool:
        if len(self._txq) >= MAX_TX_QUEUE:
            return False
        self._txq.append(_Queued(frame, self.medium.now() + delay))
        self._txq.sort(key=lambda q: (-q.frame.priority, q.not_before))
        self._schedule_tx()
        return True

    def _schedule_tx(self) -> None:
        if self._transmitting or not self._txq:
            return
        if self._tx_timer is not None:
            self._tx_timer.cancel()
        wait = max(0.0, self._txq[0].not_before - self.medium.now())
        self._tx_timer = self.medium.scheduler.call_later(wait, self._try_transmit)

    def _try_transmit(self) -> None:
        self._tx_timer = None
        if self._transmitting or not self._txq:
            return
        head = self._txq[0]
        if head.not_before > self.medium.now():
            self._schedule_tx()
            return
        if self.medium.is_busy(self.num):  # listen before talk
            head.not_before = self.medium.now() + self._contention_delay() + self.medium.modem.slot_time_s()
            self._schedule_tx()
            return
        self._txq.pop(0)
        frame = head.frame
        if self.phone is not None and self._phone_saw_full_queue:  # tell the waiting client: room again
            self._phone_saw_full_queue = False
            self.phone(mesh_pb2.FromRadio(queueStatus=self.queue_status()))
        if self.duty_cycle < 1.0 and self.medium.tx_fraction_last_hour(self.num) > self.duty_cycle:
            if frame.sender == self.num:  # own traffic is NAKed; relayed traffic is dropped silently
                self._pending.pop(frame.packet_id, None)
                self._nak(frame.packet_id, mesh_pb2.Routing.DUTY_CYCLE_LIMIT, frame.channel)
            self._schedule_tx()
            return
        airtime = self.medium.transmit(self.num, frame)
        self._transmitting = True
        self.medium.scheduler.call_later(airtime, self._transmit_done, frame)

    def _transmit_done(self, frame: AirFrame) -> None:
        self._transmitting = False
        pending = self._pending.get(frame.packet_id) if frame.sender == self.num else None
        if pending is not None:
            if pending.timer is not None:
                pending.timer.cancel()
            timeout = self._retransmit_timeout(frame)
            pending.timer = self.medium.scheduler.call_later(timeout, self._retransmit, frame.packet_id)
        self._schedule_tx()

    def _retransmit(self, packet_id: int) -> None:
        pending = self._pending.get(packet_id)
        if pending is None:
            return
        if pending.transmissions_left <= 0:
            del self._pending[packet_id]
            self._nak(packet_id, mesh_pb2.Routing.MAX_RETRANSMIT, pending.frame.channel)
            return
        pending.transmissions_left -= 1
        self._enqueue(pending.frame, self._contention_delay())

    def _settle(self, packet_id: int) -> bool:
        pending = self._pending.pop(packet_id, None)
        if pending is not None and pending.timer is not None:
            pending.timer.cancel()
        return pending is not None

    # ---- reception ----
    def on_air_receive(self, frame: AirFrame, snr: float, rssi: float) -> None:
        """Called by the medium for every frame this radio decoded."""
        if frame.sender == self.num:  # someone relayed our packet: implicit ACK
            if self._settle(frame.packet_id):
                self._to_phone_routing(frame.packet_id, mesh_pb2.Routing.NONE, self.num, frame.channel)
            return
        key = (frame.sender, frame.packet_id)
        if key in self._seen:
            if self.role not in ROUTER_ROLES:  # a client cancels its own pending rebroadcast
                self._txq = [q for q in self._txq if (q.frame.sender, q.frame.packet_id) != key]
            if frame.to == self.num and frame.want_ack and frame.hop_start == frame.hop_limit:
                self._send_ack(frame)  # the sender retried: our ACK was lost
            return
        self._seen.add(key)
        data = mesh_pb2.Data()
        data.ParseFromString(frame.data)
        for_me = frame.to == self.num
        if for_me or frame.to == BROADCAST_NUM:
            self._to_phone(self._packet_for_phone(frame, data, snr, rssi))
        if for_me:
            if data.portnum == portnums_pb2.ROUTING_APP and data.request_id:
                self._settle(data.request_id)
            elif frame.want_ack:
                self._send_ack(frame)
            return
        if frame.hop_limit > 0 and self.rebroadcast:
            self._enqueue(relayed(frame, self.num), self._rebroadcast_delay(snr))

    def _packet_for_phone(self, frame: AirFrame, data: Any, snr: float, rssi: float) -> Any:
        packet = mesh_pb2.MeshPacket(
            to=frame.to,
            id=frame.packet_id,
            channel=frame.channel,
            decoded=data,
            rx_time=int(self.medium.now()),
            rx_snr=snr,
            rx_rssi=int(rssi),
            hop_limit=frame.hop_limit,
            hop_start=frame.hop_start,
            want_ack=frame.want_ack,
            relay_node=frame.relay_node,
            pki_encrypted=frame.pki,
            transport_mechanism=mesh_pb2.MeshPacket.TRANSPORT_LORA,
        )
        setattr(packet, "from", frame.sender)  # 'from' is a Python keyword
        return packet

    def _send_ack(self, frame: AirFrame) -> None:
        hops_used = max(0, frame.hop_start - frame.hop_limit)  # RoutingModule::getHopLimitForResponse
        if hops_used > self.hop_limit:
            hop_limit = hops_used
        elif frame.hop_start == 0:
            hop_limit = 0
        else:
            hop_limit = min(hops_used + 2, self.hop_limit)
        routing = mesh_pb2.Routing(error_reason=mesh_pb2.Routing.NONE)
        data = mesh_pb2.Data(
            portnum=portnums_pb2.ROUTING_APP, payload=routing.SerializeToString(), request_id=frame.packet_id
        )
        encoded = data.SerializeToString()
        ack = AirFrame(
            to=frame.sender,
            sender=self.num,
            packet_id=self.rng.randint(1, 0xFFFFFFFF),
            hop_limit=hop_limit,
            hop_start=hop_limit,
            want_ack=False,
            channel=frame.channel,
            data=encoded,
            relay_node=self.num & 0xFF,
            priority=ACK_PRIORITY,
            phy_len=MESHTASTIC_HEADER_LEN + len(encoded),
        )
        self._seen.add((self.num, ack.packet_id))
        self._enqueue(ack, self._contention_delay())

    def _nak(self, request_id: int, reason: int, channel: int) -> None:
        self._to_phone_routing(request_id, reason, self.num, channel)

    def _to_phone_routing(self, request_id: int, reason: int, sender: int, channel: int) -> None:
        routing = mesh_pb2.Routing(error_reason=reason)
        data = mesh_pb2.Data(
            portnum=portnums_pb2.ROUTING_APP, payload=routing.SerializeToString(), request_id=request_id
        )
        packet = mesh_pb2.MeshPacket(
            to=self.num,
            id=self.rng.randint(1, 0xFFFFFFFF),
            channel=channel,
            priority=ACK_PRIORITY,
            decoded=data,
        )
        setattr(packet, "from", sender)  # 'from' is a Python keyword
        self._to_phone(packet)

    def _to_phone(self, packet: Any) -> None:
        self.delivered_to_phone.append(packet)
        if self.phone is None:
            self._backlog = [*self._backlog, packet][-MAX_TO_PHONE_BACKLOG:]
            return
        self.phone(mesh_pb2.FromRadio(packet=packet))
