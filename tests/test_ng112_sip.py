"""Real SIP peers against the running NG112 gateway on 127.0.0.1: SIPp (UDP and TCP) and sipsak.

The panel (SIPp UAC) sends a fire alarm, an XXE probe and a MESSAGE whose announced CAP is missing;
the gateway must answer 200 / 425+103 / 425+101 and store exactly one alarm. A second SIPp (UAS) is
the panel's acknowledgement receiver: the test plays the command post with a real AlarmBook, whose
automatic receipt and operator acknowledgement go back through the gateway as CAP Acks in SIP
MESSAGEs, which SIPp checks. sipsak sends the raw corpus wire capture.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from system_tools import require_tool

from ng112.alarmbook import AlarmBook, Event, SendAck
from ng112.buildings import Building, BuildingRegistry
from ng112.gateway import Alarm, Gateway, GatewayConfig
from ng112.store import AlarmStore

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parents[0].parent / "shared" / "corpus" / "ng112"
PANEL = "sip:fire-panel-17@building.example.org"


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _run(args: list[str], cwd: Path, timeout: float) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode("utf-8", "replace")


class CommandPost:
    """The command post end, wired straight to the gateway (the mesh in between is the relay's job)."""

    def __init__(self) -> None:
        self.book = AlarmBook()
        self.gateway: Gateway | None = None
        self.delivered: list[bool] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def accept(self, alarm: Alarm) -> None:
        events = self.book.apply(alarm.record, now=alarm.received_at)
        self.tasks.append(asyncio.create_task(self._acknowledge(events, alarm)))

    async def _acknowledge(self, events: list[Event], alarm: Alarm) -> None:
        assert self.gateway is not None
        await asyncio.sleep(0.3)  # the panel has its 200 first
        for event in events:
            if isinstance(event, SendAck):
                self.delivered.append(await self.gateway.deliver_ack(event.ack))
        key = (alarm.record.key_id, alarm.record.seq)
        ack = self.book.acknowledge(
            key, "Operator Jane Doe", "fire brigade dispatched", now=alarm.received_at + 5
        )
        self.delivered.append(await self.gateway.deliver_ack(ack))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AlarmStore]:
    alarm_store = await AlarmStore.open(tmp_path / "gateway.sqlite")
    yield alarm_store
    await alarm_store.close()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_alarm_and_acks(transport: str, store: AlarmStore, tmp_path: Path) -> None:
    sipp = require_tool("sipp", "sip-tester")
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    ack_port, uac_port = _free_port(kind), _free_port(kind)
    building = Building(
        0x0A1B2C3D,
        PANEL,
        "Example Office Tower",
        panel=f"sip:fp17@127.0.0.1:{ack_port};transport={transport}",
    )
    post = CommandPost()
    gateway = Gateway(GatewayConfig(udp_port=0, tcp_port=0), store, BuildingRegistry([building]), post.accept)
    post.gateway = gateway
    await gateway.start()
    try:
        assert gateway.udp_address and gateway.tcp_address
        port = gateway.udp_address[1] if transport == "udp" else gateway.tcp_address[1]
        mode = "u1" if transport == "udp" else "t1"
        common = ["-t", mode, "-i", "127.0.0.1", "-nostdin", "-timeout", "20s", "-timeout_error"]
        receiver = asyncio.create_task(
            _run(
                [sipp, "-sf", str(HERE / "sipp" / "ack_uas.xml"), *common, "-p", str(ack_port), "-m", "2"],
                tmp_path,
                30,
            )
        )
        await asyncio.sleep(0.5)  # the UAS is listening
        scenario = ["-sf", str(HERE / "sipp" / "alarm_uac.xml"), "-inf", str(HERE / "sipp" / "xxe.csv")]
        target = ["-p", str(uac_port), "-m", "1", f"127.0.0.1:{port}"]
        code, out = await _run([sipp, *scenario, *common, *target], tmp_path, 30)
        assert code == 0, out[-2000:]
        code, out = await receiver
        assert code == 0, out[-2000:]
        await asyncio.gather(*post.tasks)
    finally:
        await gateway.stop()
    assert post.delivered == [True, True]
    assert await store.count() == 1  # the XXE probe and the missing CAP stored nothing
    (view,) = post.book.alarms.values()
    assert view.first.zone == "3.12" and view.first.floor == 3 and view.actual
    assert view.receipt is not None and view.operator_ack is not None


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipsak_sends_the_corpus_wire_capture(
    transport: str, store: AlarmStore, tmp_path: Path
) -> None:
    sipsak = require_tool("sipsak", "sipsak")
    raw = (CORPUS / "sip" / "synthetic-sipp-fire-alarm-message.sip").read_bytes()
    lines = raw.split(b"\r\n")
    message = tmp_path / "alarm.sip"
    message.write_bytes(b"\r\n".join(line for line in lines if not line.startswith(b"Via:")))
    gateway = Gateway(GatewayConfig(udp_port=0, tcp_port=0), store)
    await gateway.start()
    try:
        assert gateway.udp_address and gateway.tcp_address
        port = gateway.udp_address[1] if transport == "udp" else gateway.tcp_address[1]
        args = [sipsak, "-vv", "-f", str(message), "-s", f"sip:ng112@127.0.0.1:{port}", "-E", transport]
        if transport == "udp":
            args += ["-l", str(_free_port(socket.SOCK_DGRAM))]
        code, out = await _run(args, tmp_path, 30)
    finally:
        await gateway.stop()
    assert code == 0, out[-2000:]
    assert "200 OK" in out
    assert await store.count() == 1
