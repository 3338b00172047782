"""The responder app without a display: SOS codec, the SOS state table, and the app riding on a real
node (in-process link, real stores and crypto) against the command post's SOS application."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from engine_net import IP, Deployment

from mobile.appstore import AppStore
from mobile.command_post import command_post_app, parse_record_id, record_id
from mobile.early import EarlySos
from mobile.kinds import SOS
from mobile.responder import Responder, ResponderConfig, WrongPinError
from mobile.sos import (
    SosAck,
    SosDecodeError,
    SosRecord,
    decode_sos,
    decode_sos_ack,
    encode_sos,
    encode_sos_ack,
)
from mobile.state import (
    SOS_IGNORED,
    SOS_TRANSITIONS,
    AppState,
    Delivery,
    IllegalSosTransitionError,
    SosEvent,
    SosPhase,
    next_phase,
)
from relay.bundle import Destination, Priority, to_epoch
from relay.links.inproc import InprocHub, InprocLink
from relay.node import Node
from relay.position import Position


def test_sos_round_trip_fits_one_lora_frame() -> None:
    position = Position.from_fix(50.0875, 14.4213, time.time(), 8)
    record = SosRecord(7, int(time.time()), position=position, text="trapped, 2nd floor, stairwell B")
    wire = encode_sos(record)
    assert decode_sos(wire) == record
    assert len(wire) <= 8 + 16 + 80  # well inside the 172 bytes of a compact-sealed LoRa bundle
    cancel = SosRecord(7, int(time.time()), cancel=True)
    assert decode_sos(encode_sos(cancel)) == cancel and len(encode_sos(cancel)) == 8
    ack = SosAck(7, "Dispatcher Novák: crew on the way")
    assert decode_sos_ack(encode_sos_ack(ack)) == ack


@pytest.mark.parametrize(
    "wire", [b"", b"\x02\x00\x00\x01\x00\x00\x00\x00", b"\x01\x80\x00\x01\x00\x00\x00\x00"]
)
def test_sos_decoder_refuses_damage(wire: bytes) -> None:
    with pytest.raises(SosDecodeError):
        decode_sos(wire)


def test_sos_phases_in_one_table() -> None:
    path = [SosEvent.CONFIRM, SosEvent.DURABLE, SosEvent.CUSTODY, SosEvent.RECEIPT, SosEvent.ACK]
    phase = SosPhase.IDLE
    seen = []
    for event in path:
        phase = next_phase(phase, event)
        seen.append(phase)
    assert seen == [
        SosPhase.CONFIRMED,
        SosPhase.QUEUED,
        SosPhase.FORWARDED,
        SosPhase.DELIVERED,
        SosPhase.ACKNOWLEDGED,
    ]
    assert next_phase(SosPhase.FORWARDED, SosEvent.CANCEL) is SosPhase.CANCELLED
    assert next_phase(SosPhase.DELIVERED, SosEvent.CUSTODY) is SosPhase.DELIVERED  # late custody ACK
    assert not set(SOS_TRANSITIONS) & SOS_IGNORED
    with pytest.raises(IllegalSosTransitionError):
        next_phase(SosPhase.IDLE, SosEvent.CANCEL)
    with pytest.raises(IllegalSosTransitionError):
        next_phase(SosPhase.QUEUED, SosEvent.CONFIRM)  # one live SOS at a time


def test_record_ids_round_trip() -> None:
    origin = bytes(range(16))
    assert parse_record_id(record_id(origin, 12)) == (origin, 12)
    with pytest.raises(ValueError):
        parse_record_id("alarm-0000-1")


async def test_sos_reaches_the_post_app_and_its_ack_comes_back(tmp_path: Path) -> None:
    net = Deployment()
    net.enrol("post", frozenset({"dispatcher"}))
    net.enrol("responder", frozenset({"responder"}))
    hub = InprocHub()
    nodes = {}
    for name in ("post", "responder"):
        engine = await net.open(name, tmp_path, to_epoch(time.time()))
        nodes[name] = Node(engine, [InprocLink(hub, engine.node_id, IP)])
    post, phone = nodes["post"], nodes["responder"]
    post_app = command_post_app(post)
    store = await AppStore.open(tmp_path)
    state = AppState()
    changes: list[str] = []
    state.listen(changes.append)
    config = ResponderConfig(Destination.to_node(post.node_id), Destination.to_node(post.node_id), "2580")
    fix = Position.from_fix(50.0875, 14.4213, time.time(), 10)
    responder = Responder(phone, store, state, config, position=lambda: fix)
    for node in nodes.values():
        await node.start()
    await responder.start()
    app_task = asyncio.create_task(responder.run())
    try:
        sos = await responder.raise_sos()
        assert sos.phase in (SosPhase.QUEUED, SosPhase.FORWARDED, SosPhase.DELIVERED)
        assert sos.durable_ms is not None and sos.durable_ms < 1000
        delivery = None
        async for delivery in post.inbox():
            await post.ack(delivery.bundle_id)
            break
        assert delivery is not None and delivery.kind == SOS and delivery.priority is Priority.FLASH
        (update,) = await post_app.handle(delivery)
        assert update.record_id == record_id(phone.node_id, sos.number)
        assert update.body["state"] == "raised" and update.body["location"]["lat"] == pytest.approx(50.0875)
        sent = await post_app.acknowledge(
            update.record_id, {"operator": "Dispatcher", "action": "on our way"}
        )
        assert sent is not None
        async with asyncio.timeout(10):
            while state.sos is None or state.sos.phase is not SosPhase.ACKNOWLEDGED:
                await asyncio.sleep(0.02)
        assert "on our way" in state.sos.ack
        assert (await store.latest_sos()).phase is SosPhase.ACKNOWLEDGED  # type: ignore[union-attr]
        message = await responder.send_text("post", "on scene")
        async with asyncio.timeout(10):
            while (
                next(m for m in state.messages if m.bundle == message.bundle).state is not Delivery.DELIVERED
            ):
                await asyncio.sleep(0.02)
        assert state.last_post_contact is not None
        with pytest.raises(WrongPinError):
            await responder.cancel_sos("0000")
        assert (await responder.cancel_sos("2580")).phase is SosPhase.CANCELLED
        assert {"sos", "messages", "links"} <= set(changes)
    finally:
        app_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await app_task
        for node in nodes.values():
            await node.stop()
        await store.close()


async def test_sos_confirmed_before_the_node_runs_goes_once_it_does(tmp_path: Path) -> None:
    """The SOS button is live from the first frame (mobile/runtime.py): confirmed then, the SOS is
    durable in the app's table at once and sent when the node starts; one confirmed while the node
    starts waits for it (EarlySos's gate) and a second confirm changes nothing."""
    net = Deployment()
    net.enrol("post", frozenset({"dispatcher"}))
    net.enrol("responder", frozenset({"responder"}))
    hub = InprocHub()
    nodes = {}
    for name in ("post", "responder"):
        engine = await net.open(name, tmp_path, to_epoch(time.time()))
        nodes[name] = Node(engine, [InprocLink(hub, engine.node_id, IP)])
    post, phone = nodes["post"], nodes["responder"]
    store = await AppStore.open(tmp_path)
    state = AppState()
    fix = Position.from_fix(50.0875, 14.4213, time.time(), 10)
    early = EarlySos(store, state, position=lambda: fix)
    try:
        await early.restore()
        started = time.perf_counter()
        sos = await early.raise_sos()
        assert (time.perf_counter() - started) < 1.0  # fsynced into the app's table (goal 200 ms)
        assert sos.phase is SosPhase.CONFIRMED and (await store.latest_sos()) == sos
        assert await early.raise_sos() == sos  # one live SOS at a time
        for node in nodes.values():
            await node.start()
        config = ResponderConfig(Destination.to_node(post.node_id), Destination.to_node(post.node_id), "2580")
        responder = Responder(phone, store, state, config, position=lambda: fix)
        await early.hand_over(responder)  # Responder.start sends it
        assert state.sos is not None and state.sos.phase is not SosPhase.CONFIRMED and state.sos.bundle
        async with asyncio.timeout(10):
            async for delivery in post.inbox():
                await post.ack(delivery.bundle_id)
                if delivery.kind == SOS:
                    break
        assert delivery.priority is Priority.FLASH and decode_sos(delivery.payload).number == sos.number
        assert (await early.raise_sos()).number == sos.number  # through the Responder now: still one
    finally:
        for node in nodes.values():
            await node.stop()
        await store.close()


def test_web_mercator_and_the_tiles_covering_a_view(tmp_path: Path) -> None:
    from mobile_tiles import make_mbtiles

    from mobile.maptiles import TILE, MBTiles, TileView, lat_lon, world_px

    x, y = world_px(50.0875, 14.4213, 15)
    assert lat_lon(x, y, 15) == pytest.approx((50.0875, 14.4213), abs=1e-9)
    assert world_px(0.0, 0.0, 0) == pytest.approx((TILE / 2, TILE / 2))
    view = TileView.covering(50.0875, 14.4213, 15, 540, 800)
    assert {(tx, ty) for tx, ty, _, _ in view.placements} >= {(int(x // TILE), int(y // TILE))}
    assert len(view.placements) == len({(tx, ty) for tx, ty, _, _ in view.placements}) <= 4 * 5
    path = tmp_path / "map.mbtiles"
    make_mbtiles(path, 50.0875, 14.4213, zooms=(15,), radius=1)
    tiles = MBTiles(path)
    try:
        assert tiles.zooms() == (15, 15)
        assert tiles.tile(15, int(x // TILE), int(y // TILE)).startswith(b"\x89PNG")  # type: ignore[union-attr]
        assert tiles.tile(15, 0, 0) is None
    finally:
        tiles.close()


def test_app_settings(tmp_path: Path) -> None:
    from mobile.settings import DEFAULT_PIN, AppSettings
    from relay.errors import ConfigError

    assert AppSettings.load(tmp_path).pin == DEFAULT_PIN
    (tmp_path / "app.toml").write_text(
        'pin = "2580"\nlanguage = "cs"\nposition = [50.1, 14.4]\nmbtiles = "m.mbtiles"\n'
    )
    settings = AppSettings.load(tmp_path)
    assert (settings.pin, settings.language, settings.position) == ("2580", "cs", (50.1, 14.4))
    assert settings.mbtiles == tmp_path / "m.mbtiles"
    for bad, message in (
        ('pin = "12"', "4-8 digits"),
        ('language = "de"', "language"),
        ("colour = 1", "unknown"),
    ):
        (tmp_path / "app.toml").write_text(bad + "\n")
        with pytest.raises(ConfigError, match=message):
            AppSettings.load(tmp_path)
