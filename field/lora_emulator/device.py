"""An emulated Meshtastic device: the stream API over TCP in front of an ``EmulatedRadio``.

The real ``meshtastic`` library (``TCPInterface``) and the official CLI connect to it. It answers
``want_config_id`` with the handshake in firmware order (my_info, own node_info, metadata, 8
channels, configs, module configs, other nodes, ``config_complete_id``), turns ``ToRadio.packet``
into radio traffic answered with QueueStatus, answers heartbeats with QueueStatus, and streams
``FromRadio`` packets back. Like the firmware it serves one TCP client at a time: a new connection
evicts the old one. ``drop_clients`` (clean close), ``reset_clients`` (TCP RST) and ``reboot``
exercise the library's failure paths.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import struct
import threading
from typing import Any

from google.protobuf.message import DecodeError
from meshtastic.protobuf import channel_pb2, config_pb2, mesh_pb2, module_config_pb2

from field.lora_emulator.radio import EmulatedRadio
from field.lora_emulator.stream import StreamDecoder, encode_frame

NODELESS_WANT_CONFIG_ID = 69420  # the client wants config but not the other nodes
NODES_ONLY_WANT_CONFIG_ID = 69421
FIRMWARE_VERSION = "2.7.26.mesh112emu"
RECV_CHUNK = 4096


class _Client:
    """One TCP connection: a reader thread parsing ToRadio, a writer thread sending FromRadio."""

    def __init__(self, server: DeviceServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.decoder = StreamDecoder()
        self.malformed = 0
        self._from_radio_id = 0
        self._out: queue.Queue[bytes | None] = queue.Queue()
        self._closed = False
        self._reader = threading.Thread(target=self._read_loop, daemon=True, name="emu-client-rx")
        self._writer = threading.Thread(target=self._write_loop, daemon=True, name="emu-client-tx")
        self._reader.start()
        self._writer.start()

    def send(self, from_radio: Any) -> None:
        self._from_radio_id += 1
        from_radio.id = self._from_radio_id
        self._out.put(encode_frame(from_radio.SerializeToString()))

    def close(self, reset: bool = False) -> None:
        """Close the connection; ``reset`` sends a TCP RST instead of a clean FIN."""
        if self._closed:
            return
        self._closed = True
        try:
            if reset:  # linger 0 turns the writer's close() into an RST; SHUT_RD wakes our recv()
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.sock.shutdown(socket.SHUT_RD)
            else:  # shutdown before the writer closes the fd, or a blocked recv() never wakes
                self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._out.put(None)

    def join(self, timeout: float) -> None:
        self._reader.join(timeout)
        self._writer.join(timeout)

    def _write_loop(self) -> None:
        while (chunk := self._out.get()) is not None:
            try:
                self.sock.sendall(chunk)
            except OSError:
                break
        with contextlib.suppress(OSError):
            self.sock.close()

    def _read_loop(self) -> None:
        try:
            while not self._closed:
                data = self.sock.recv(RECV_CHUNK)
                if not data:
                    break
                for payload in self.decoder.feed(data):
                    self._handle(payload)
        except OSError:
            pass
        finally:
            self._closed = True
            self._out.put(None)
            self.server.client_gone(self)

    def _handle(self, payload: bytes) -> None:
        to_radio = mesh_pb2.ToRadio()
        try:
            to_radio.ParseFromString(payload)
        except DecodeError:
            self.malformed += 1
            return
        which = to_radio.WhichOneof("payload_variant")
        radio = self.server.radio
        with radio.medium.lock:
            if which == "want_config_id":
                radio.detach_phone(self.send)
                self.server.send_config(self, to_radio.want_config_id)
                radio.attach_phone(self.send)
            elif which == "packet":
                self.send(mesh_pb2.FromRadio(queueStatus=radio.from_phone(to_radio.packet)))
            elif which == "heartbeat":
                self.send(mesh_pb2.FromRadio(queueStatus=radio.queue_status()))
            elif which == "disconnect":
                radio.detach_phone(self.send)


class DeviceServer:
    """A TCP listener on 127.0.0.1 speaking the stream API for one radio."""

    def __init__(self, radio: EmulatedRadio, host: str = "127.0.0.1", port: int = 0) -> None:
        self.radio = radio
        self.host = host
        self.port = port
        self.connections = 0
        self._listener: socket.socket | None = None
        self._client: _Client | None = None
        self._lock = threading.Lock()
        self._accept_thread: threading.Thread | None = None

    def start(self) -> int:
        """Listen and return the TCP port (an ephemeral one unless a port was given)."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(4)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True, name="emu-accept")
        self._accept_thread.start()
        return self.port

    def stop(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
        self.drop_clients()

    def drop_clients(self, reset: bool = False) -> None:
        """Close the client connection (clean FIN, or RST when ``reset``)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            with self.radio.medium.lock:
                self.radio.detach_phone(client.send)
            client.close(reset)
            client.join(timeout=5)

    def reset_clients(self) -> None:
        self.drop_clients(reset=True)

    def reboot(self) -> None:
        """Power-cycle the radio: queued and in-flight packets are lost and TCP drops."""
        with self.radio.medium.lock:
            self.radio.reboot()
        self.drop_clients()

    def client_gone(self, client: _Client) -> None:
        with self._lock:
            if self._client is client:
                self._client = None
        with self.radio.medium.lock:
            self.radio.detach_phone(client.send)

    def _accept_loop(self) -> None:
        listener = self._listener
        while listener is not None:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.drop_clients()  # the firmware force-closes the previous TCP client
            with self._lock:
                self.connections += 1
                self._client = _Client(self, sock)

    def send_config(self, client: _Client, nonce: int) -> None:
        """Stream the config handshake in firmware order, ending with ``config_complete_id``."""
        radio = self.radio
        from_radio = mesh_pb2.FromRadio
        if nonce != NODES_ONLY_WANT_CONFIG_ID:
            my_info = mesh_pb2.MyNodeInfo(
                my_node_num=radio.num,
                reboot_count=1,
                min_app_version=30200,
                device_id=radio.num.to_bytes(4, "big") * 4,
                pio_env="mesh112-emulator",
                nodedb_count=1 + len(radio.peers()),
            )
            client.send(from_radio(my_info=my_info))
        client.send(from_radio(node_info=radio.node_info()))
        if nonce != NODES_ONLY_WANT_CONFIG_ID:
            self._send_settings(client)
        if nonce != NODELESS_WANT_CONFIG_ID:
            for peer in radio.peers():
                client.send(from_radio(node_info=peer.node_info()))
        client.send(from_radio(config_complete_id=nonce))

    def _send_settings(self, client: _Client) -> None:
        radio = self.radio
        from_radio = mesh_pb2.FromRadio
        client.send(
            from_radio(
                metadata=mesh_pb2.DeviceMetadata(
                    firmware_version=FIRMWARE_VERSION,
                    device_state_version=24,
                    canShutdown=True,
                    hasWifi=True,
                    role=radio.role,
                    hw_model=mesh_pb2.HardwareModel.PORTDUINO,
                    hasPKC=True,
                )
            )
        )
        for index in range(8):
            channel = channel_pb2.Channel(index=index, role=channel_pb2.Channel.Role.DISABLED)
            if index == 0:
                channel.role = channel_pb2.Channel.Role.PRIMARY
                channel.settings.psk = b"\x01"  # the default key; empty name = the preset's name
            client.send(from_radio(channel=channel))
        config = config_pb2.Config
        lora = config.LoRaConfig(
            use_preset=True,
            modem_preset=config.LoRaConfig.ModemPreset.Value(radio.medium.modem.name),
            region=config.LoRaConfig.RegionCode.Value(radio.region),
            hop_limit=radio.hop_limit,
            tx_enabled=True,
            tx_power=27,
        )
        for section in (
            config(device=config.DeviceConfig(role=radio.role)),
            config(position=config.PositionConfig()),
            config(power=config.PowerConfig()),
            config(network=config.NetworkConfig(wifi_enabled=True)),
            config(display=config.DisplayConfig()),
            config(lora=lora),
            config(bluetooth=config.BluetoothConfig(enabled=False)),
            config(security=config.SecurityConfig(public_key=radio.public_key)),
        ):
            client.send(from_radio(config=section))
        module = module_config_pb2.ModuleConfig
        for module_section in (
            module(mqtt=module.MQTTConfig()),
            module(serial=module.SerialConfig()),
            module(store_forward=module.StoreForwardConfig()),
            module(telemetry=module.TelemetryConfig()),
        ):
            client.send(from_radio(moduleConfig=module_section))
