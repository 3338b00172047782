"""Test helper: three emulated Meshtastic radios in a line (post, relay, field unit), each behind the
project's device server that the real meshtastic library dials, and their enrolled identities. The
field unit is out of the post's range, so everything between them crosses the relay."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from engine_net import Deployment

from field.lora_emulator.device import DeviceServer
from field.lora_emulator.medium import LoRaMedium
from field.lora_emulator.radio import EmulatedRadio
from relay.node import Node

RADIOS = {"post": (0xA0000001, 0.0), "relay": (0xA0000002, 900.0), "field": (0xA0000003, 1800.0)}
NEIGHBOURS = {"post": ("relay",), "relay": ("post", "field"), "field": ("relay",)}


@dataclass
class Air:
    net: Deployment
    medium: LoRaMedium
    radios: dict[str, EmulatedRadio]
    servers: dict[str, DeviceServer]

    def radio_roster(self, name: str) -> dict[int, str]:
        """The radio numbers of ``name``'s neighbours and their node ids, as a LoRa link's roster."""
        return {RADIOS[n][0]: self.net.members[n][1].node_id.hex() for n in NEIGHBOURS[name]}


@contextmanager
def lora_line(seed: int, unit_roles: frozenset[str] = frozenset()) -> Iterator[Air]:
    """Enrol post (role "command"), relay and field (``unit_roles``), start their radios' device
    servers on the emulated air (LongFast, 20 times faster than real time), stop them after."""
    net = Deployment()
    for name in RADIOS:
        net.enrol(name, frozenset({"command"}) if name == "post" else unit_roles)
    medium = LoRaMedium("LONG_FAST", seed=seed, speedup=20)
    radios = {
        name: EmulatedRadio(medium, num, position=(x, 0.0), seed=seed) for name, (num, x) in RADIOS.items()
    }
    servers: dict[str, DeviceServer] = {}
    try:
        for name, radio in radios.items():
            servers[name] = DeviceServer(radio)
            servers[name].start()
        assert medium.quality(RADIOS["field"][0], RADIOS["post"][0]).loss == 1.0
        yield Air(net, medium, radios, servers)
    finally:
        for server in servers.values():
            server.stop()
        medium.close()


async def stop_field(nodes: Iterable[Node], servers: Iterable[DeviceServer], medium: LoRaMedium) -> None:
    """Stop a field a test built by hand: its nodes, then their radios' device servers, then the air."""
    for node in nodes:
        await node.stop()
    for server in servers:
        server.stop()
    medium.close()
