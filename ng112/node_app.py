"""The building gateway as a Mesh112 node: SIP in, alarm bundles out, acknowledgements back to the panel.

``mesh112 ng112 gateway --config node.toml`` runs the relay daemon with :func:`gateway_app` riding on
the node. An accepted alarm is answered 200 only once it is in the gateway's alarm store *and* durable
in the node's bundle store as a FLASH bundle to the command post (:func:`ng112.gateway.node_accept`),
followed by its follow-up (the whole CAP and PIDF-LO, :mod:`ng112.followup`) as an IMMEDIATE bundle.
Ack records (kind 33) arriving in the node's inbox go to the panel as SIP MESSAGEs with a CAP Ack; an
Ack the panel did not confirm is kept and tried again every ``REDELIVER_S`` seconds. The follow-up is
kept in the gateway's store, and a command post's fetch request (kind 35, :mod:`ng112.fetch`) has it
sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from ng112.buildings import BuildingRegistry
from ng112.errors import RecordError
from ng112.fetch import ResendLimit, decode_fetch
from ng112.followup import encode_followup, followup_for
from ng112.gateway import Accept, Alarm, Gateway, GatewayConfig, node_accept
from ng112.kinds import NG112_ACK, NG112_FETCH, NG112_FOLLOWUP, register_kinds
from ng112.metrics import GatewayCollector
from ng112.record import decode_record
from ng112.store import AlarmStore
from relay.apps import App, Sender
from relay.bundle import Destination, Priority
from relay.node import Node

log = logging.getLogger(__name__)

GATEWAY_STORE = "ng112-gateway.sqlite"
ALARM_LIFETIME_S = 24 * 3600
REDELIVER_S = 30.0


def gateway_app(
    config: GatewayConfig,
    registry: BuildingRegistry,
    data_dir: Path,
    destination: Destination,
    on_listening: Callable[[Gateway], None] = lambda gateway: None,
) -> App:
    """A node app running the SIP UAS; ``on_listening`` is told the bound addresses."""

    async def app(node: Node) -> None:
        register_kinds(node.kinds)
        store = await AlarmStore.open(data_dir / GATEWAY_STORE)
        accept = with_followup(
            node, destination, node_accept(node, destination, Priority.FLASH, ALARM_LIFETIME_S), store
        )
        gateway = Gateway(config, store, registry, accept)
        collector = GatewayCollector(gateway)
        node.collectors.append(collector)
        try:
            await gateway.start()
            on_listening(gateway)
            await asyncio.gather(deliver_acks(node, gateway, destination), redeliver_acks(gateway))
        finally:
            node.collectors.remove(collector)
            await gateway.stop()
            await store.close()

    return app


def with_followup(
    node: Sender, destination: Destination, first_frame: Accept, store: AlarmStore | None = None
) -> Accept:
    """``first_frame``, then the alarm's follow-up as an IMMEDIATE bundle to the same destination: the
    FLASH frame is durable first, so over LoRa it goes first and the follow-up is fragmented after it.
    With ``store`` the follow-up is kept there first, so a fetch request can have it sent again."""

    async def accept(alarm: Alarm) -> None:
        await first_frame(alarm)
        if alarm.record.followup:
            payload = encode_followup(followup_for(alarm.record, alarm.request))
            if store is not None:
                await store.put_followup(alarm.record.key_id, alarm.record.seq, payload)
            await send_followup(node, destination, payload)

    return accept


async def send_followup(node: Sender, destination: Destination, payload: bytes) -> None:
    await node.send(
        destination, payload, kind=NG112_FOLLOWUP, priority=Priority.IMMEDIATE, lifetime=ALARM_LIFETIME_S
    )


async def deliver_acks(node: Node, gateway: Gateway, destination: Destination) -> None:
    """Ack bundles from the command post -> SIP MESSAGE to the panel, in arrival order; fetch
    requests -> the kept follow-up sent again to ``destination`` (never to the requester).

    The bundle is acknowledged to the node once the gateway stored the Ack (``deliver_ack`` stores it
    before sending), so an Ack the panel missed is retried by :func:`redeliver_acks`, not lost.
    """
    limit = ResendLimit()
    async for delivery in node.inbox():
        if delivery.kind == NG112_FETCH:
            await answer_fetch(node, gateway.store, destination, delivery.payload, limit)
        elif delivery.kind == NG112_ACK:
            try:
                record = decode_record(delivery.payload)
                delivered = await gateway.deliver_ack(record)
                log.info("ack %s for alarm %s: panel %s", record.identifier, record.reference, delivered)
            except (RecordError, ValueError) as exc:
                log.warning("ack bundle from %s refused: %s", delivery.origin.hex()[:8], exc)
        else:
            log.info("bundle of kind %d from %s ignored by the gateway", delivery.kind, delivery.origin.hex())
        await node.ack(delivery.bundle_id)


async def answer_fetch(
    node: Sender, store: AlarmStore, destination: Destination, payload: bytes, limit: ResendLimit
) -> bool:
    """Send the follow-up a fetch request names again; False (logged) if refused, unknown or too soon."""
    try:
        key_id, seq = decode_fetch(payload)
    except RecordError as exc:
        log.warning("fetch request refused: %s", exc)
        return False
    followup = await store.followup(key_id, seq)
    if followup is None:
        log.info("fetch request for %08x-%d: no follow-up kept for it", key_id, seq)
        return False
    if not limit.allow((key_id, seq), time.time()):
        log.info("fetch request for %08x-%d: resent less than %.0f s ago", key_id, seq, limit.min_s)
        return False
    await send_followup(node, destination, followup)
    log.info("follow-up of %08x-%d sent again on request", key_id, seq)
    return True


async def redeliver_acks(gateway: Gateway, period_s: float = REDELIVER_S) -> None:
    while True:
        await asyncio.sleep(period_s)
        with contextlib.suppress(OSError):
            delivered = await gateway.redeliver_acks()
            if delivered:
                log.info("redelivered %d acknowledgement(s) to panels", delivered)
