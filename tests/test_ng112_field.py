"""NG112 across the mesh, real processes: SIP panel -> gateway node ~~LoRa~~ command post -> panel.

Processes: the LoRa emulator (``mesh112 lora-emulator``, 20x real time, US region: see REGION), the
command post (``mesh112 relay run``, API on, an IP link with no peers) and the building gateway
node (``mesh112 ng112 gateway --config``, LoRa only). SIPp over UDP and TCP and sipsak send real alarms to
the gateway, among them the brewery's ammonia leak from an unenrolled building (Czech CAP + PIDF-LO,
by SIPp) and the demo's own multipart alarm (by sipsak); each must appear at the command post API as
an alarm record, having crossed LoRa only: first the first frame, then its follow-up with the whole
CAP, which must equal the panel's field by field. An operator acknowledges each through the API; the
building's panel (a UDP SIP listener, or SIPp for the brewery) must receive, per alarm, the automatic
receipt and then the operator's acknowledgement as CAP Acks in whole phrases in its language. A stock
``meshtastic --sendtext`` on the emulator's observer radio must show up at the command post.
"""

from __future__ import annotations

import asyncio
import re
import socket
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import httpx
from lxml import etree
from ng112_samples import (
    BREWERY_PIDF,
    BREWERY_SENDER,
    SIPP_ACK_SCENARIO,
    brewery_cap,
    cap_differences,
    multipart_body,
    sipp_alarm_scenario,
)
from system_tools import require_tool

from field.deployment import create_demo_deployment
from field.harness import free_port
from field.processes import FieldNode, node_config, operator_token, start_node, stop_all, wait_healthy
from field.radio import (
    Radio,
    buildings_toml,
    demo_alarm_message,
    emulator_toml,
    gateway_node_toml,
    lora_link_toml,
    observer_radio,
    start_emulator,
    start_gateway,
)
from ng112.cap import parse_cap
from ng112.sip import SipRequest, build_response, parse_message
from relay.daemon import ROSTER_DIR

HERE = Path(__file__).resolve().parent
PANEL = "sip:fire-panel-17@building.example.org"
RECEIVED_EN = "The command post has received your alarm."
MESSAGE_EN = "Message from the command post:"
# The nodes budget airtime against the region's duty cycle in wall-clock time, which the emulator's
# speed-up does not shorten, and pace an origin past its IMMEDIATE share: on EU_868 five follow-ups
# from one gateway take minutes. US sets no duty cycle; LongFast airtime per frame is the same.
REGION = "US"
CORPUS = HERE.parents[0].parent / "shared" / "corpus" / "ng112"
ATOM = "{http://www.w3.org/2005/Atom}"


def _free_sip_port() -> int:
    """A port free for both UDP and TCP (the gateway listens on both)."""
    for _ in range(50):
        port = free_port(socket.SOCK_DGRAM)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no port free for both UDP and TCP")


async def _run(args: list[str], cwd: Path, timeout: float) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode("utf-8", "replace")


class Panel(asyncio.DatagramProtocol):
    """The building's fire panel receiving acknowledgements: answers 200 and keeps the CAP notes."""

    def __init__(self) -> None:
        self.notes: list[tuple[str, str]] = []  # (referenced CAP identifier, note)
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = parse_message(data, datagram=True)
        assert isinstance(message, SipRequest) and message.method == "MESSAGE"
        alert = etree.fromstring(message.body)
        ns = {"cap": "urn:oasis:names:tc:emergency:cap:1.2"}
        assert alert.findtext("cap:msgType", namespaces=ns) == "Ack"
        references = alert.findtext("cap:references", namespaces=ns) or ""
        identifier = references.split(",")[1] if references.count(",") >= 2 else references
        note = alert.findtext("cap:note", namespaces=ns) or ""
        if (identifier, note) not in self.notes:
            self.notes.append((identifier, note))
        assert self.transport is not None
        self.transport.sendto(build_response(message, 200, "OK", (), "panel").to_bytes(), addr)


async def _wait_for(what: str, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _write_field(root: Path, panel_port: int, api_port: int) -> tuple[FieldNode, Path, Path, str, bytes, int]:
    deployment = create_demo_deployment(root)
    post = deployment.node("Command Post")
    gateway = deployment.node("Building Gateway")
    radio_post = Radio("command-post", 0xA0000001, 0.0, free_port())
    radio_gateway = Radio("building-gateway", 0xA0000003, 900.0, free_port())
    emulator = root / "lora-emulator.toml"
    observer = observer_radio(free_port() - 3)
    emulator.write_text(emulator_toml((radio_post, radio_gateway, observer), speedup=20.0, region=REGION))
    buildings = buildings_toml(panel_port, digest_secret=None)
    post.config.write_text(
        node_config(post.name, post.roles, api_port, free_port(), [])
        + lora_link_toml(radio_post, {radio_gateway.num: gateway.node_id}, REGION)
    )
    roster = {radio_post.num: post.node_id}
    gateway.config.write_text(gateway_node_toml(gateway.name, radio_gateway, roster, REGION))
    for node in (post, gateway):
        (node.directory / "buildings.toml").write_text(buildings)
        roster = node.directory / ROSTER_DIR
        roster.mkdir(exist_ok=True)
        for other in deployment.nodes:
            (roster / f"{other.node_id.hex()}.cert").write_bytes(other.certificate.encode())
    token = operator_token(deployment, frozenset({"dispatcher"}), "Operator Jane Doe")
    field_post = FieldNode("command-post", post.directory, api_port, 0)
    return field_post, gateway.config, emulator, token, post.node_id, observer.port


def _trace_notes(directory: Path) -> list[str]:
    """The CAP notes SIPp took (its -trace_msg files), in arrival order."""
    notes: list[str] = []
    for trace in sorted(directory.glob("*_messages.log")):
        text = trace.read_text("utf-8", "replace")
        notes += [n for n in re.findall(r"<note>([^<]*)</note>", text) if n not in notes]
    return notes


async def test_alarms_cross_lora_whole_and_acks_read_whole(tmp_path: Path) -> None:
    sipp, sipsak = require_tool("sipp", "sip-tester"), require_tool("sipsak", "sipsak")
    meshtastic = Path(sys.executable).parent / "meshtastic"
    assert meshtastic.exists(), "the stock meshtastic CLI comes with the [lora] extra"
    panel_port, api_port, sip_port = free_port(socket.SOCK_DGRAM), free_port(), _free_sip_port()
    post, gateway_config, emulator, token, post_id, observer_port = _write_field(
        tmp_path / "field", panel_port, api_port
    )
    headers = {"Authorization": f"Bearer {token}"}
    logs = tmp_path / "logs"
    logs.mkdir()
    panel = Panel()
    loop = asyncio.get_running_loop()
    panel_transport, _ = await loop.create_datagram_endpoint(
        lambda: panel, local_addr=("127.0.0.1", panel_port)
    )
    sent = datetime.now(UTC).replace(microsecond=0).astimezone(timezone(timedelta(hours=1)))
    brewery = brewery_cap(sent)
    brewery_dir = tmp_path / "brewery-panel"
    brewery_dir.mkdir()
    processes = [start_emulator(emulator, logs / "emulator.log")]
    brewery_acks: asyncio.Task[tuple[int, str]] | None = None
    try:
        await asyncio.sleep(1.0)  # the radios listen
        processes.append(start_node(post, logs))
        buildings = gateway_config.parent / "buildings.toml"
        processes.append(start_gateway(gateway_config, buildings, sip_port, logs / "gateway.log", post_id))
        await asyncio.to_thread(wait_healthy, [post], 30.0)

        async def gateway_listening() -> bool:
            assert all(p.poll() is None for p in processes), (logs / "gateway.log").read_text()[-3000:]
            return "ng112 gateway listening" in (logs / "gateway.log").read_text()

        await _wait_for("the gateway's SIP UAS", gateway_listening, 30)

        common = ["-i", "127.0.0.1", "-nostdin", "-timeout", "20s", "-timeout_error", "-m", "1"]
        scenario = ["-sf", str(HERE / "sipp" / "alarm_uac.xml"), "-inf", str(HERE / "sipp" / "xxe.csv")]
        for mode, kind in (("u1", socket.SOCK_DGRAM), ("t1", socket.SOCK_STREAM)):
            target = ["-t", mode, "-p", str(free_port(kind)), f"127.0.0.1:{sip_port}"]
            code, out = await _run([sipp, *scenario, *common, *target], tmp_path, 40)
            assert code == 0, out[-2000:]
        # the brewery panel: SIPp sends the alarm from brewery_port, then takes the acks there
        brewery_port = free_port(socket.SOCK_DGRAM)
        (brewery_dir / "alarm.xml").write_text(
            sipp_alarm_scenario(BREWERY_SENDER, multipart_body(brewery, BREWERY_PIDF)), "utf-8"
        )
        (brewery_dir / "acks.xml").write_text(SIPP_ACK_SCENARIO, "utf-8")
        target = ["-t", "u1", "-p", str(brewery_port), f"127.0.0.1:{sip_port}"]
        code, out = await _run([sipp, "-sf", "alarm.xml", *common, *target], brewery_dir, 40)
        assert code == 0, out[-2000:]
        uas = [sipp, "-sf", "acks.xml", "-i", "127.0.0.1", "-nostdin", "-t", "u1", "-p", str(brewery_port)]
        uas += ["-m", "2", "-timeout", "150s", "-timeout_error", "-trace_msg"]
        brewery_acks = asyncio.create_task(_run(uas, brewery_dir, 160))
        for name, raw in (
            ("corpus.sip", (CORPUS / "sip" / "synthetic-sipp-fire-alarm-message.sip").read_bytes()),
            ("demo.sip", demo_alarm_message(time.time())),
        ):
            message = tmp_path / name
            message.write_bytes(
                b"\r\n".join(line for line in raw.split(b"\r\n") if not line.startswith(b"Via:"))
            )
            args = [sipsak, "-vv", "-f", str(message), "-s", f"sip:ng112@127.0.0.1:{sip_port}", "-E", "udp"]
            code, out = await _run([*args, "-l", str(free_port(socket.SOCK_DGRAM))], tmp_path, 30)
            assert code == 0 and "200 OK" in out, out[-2000:]

        async with httpx.AsyncClient(base_url=post.api, headers=headers, timeout=5.0) as api:
            records: list[dict[str, Any]] = []

            async def five_alarms_complete() -> bool:
                nonlocal records
                records = (await api.get("/api/v1/records", params={"type": "alarm"})).json()
                return len(records) >= 5 and all(r["body"]["followup"] == "complete" for r in records)

            await _wait_for("five alarms and their follow-ups at the command post", five_alarms_complete, 120)
            assert len(records) == 5
            by_sender = {
                r["body"]["cap"]["sender"]: r for r in records if r["body"]["cap"]["sender"] != PANEL
            }
            office = [r for r in records if r["body"]["cap"]["sender"] == PANEL]
            assert len(office) == 4 and set(by_sender) == {BREWERY_SENDER}
            for record in office:
                body = record["body"]
                assert body["actual"] == (body["status"] == "Actual") and body["msgType"] == "Alert"
                assert "Example Office Tower" in body["summary"] and "Stephansplatz" in body["summary"]
                assert body["hazard"] == "smoke" and body["event"] == "Fire alarm (automatic smoke detector)"
                assert body["age_on_arrival_s"] >= 0 and body["receipt_sent"]
                cap = await api.get(str(body["cap_url"]))
                assert cap.status_code == 200 and cap.headers["content-type"] == "application/cap+xml"
                assert body["cap"]["identifier"] in cap.text  # the panel's own identifier, not renamed
            stale = [r["body"]["sent_check"] for r in office if r["body"]["sent_check"]["state"] == "stale"]
            assert len(stale) == 3 and all(c["age_s"] > 86400 for c in stale), stale  # CAPs sent 2026-11-21
            body = by_sender[BREWERY_SENDER]["body"]
            assert body["hazard"] == "gas (ammonia)" and body["event"] == "Ammonia leak"
            assert body["severity"] == "Extreme" and body["cap"]["language"] == "cs-CZ"
            assert body["cap"]["identifier"] == "PHD-NH3-2026-0042" and body["zone"] == "GD-2/4"
            assert body["floor"] == 0 and body["location"]["uncertainty_m"] >= 25
            assert body["sent_check"]["state"] == "ok"
            assert "severní brány" in body["instruction"] and "dýchacích přístrojích" in body["instruction"]
            assert body["civic_address"]["RD"] == "Sladovnická" and not body["pending_parts"]
            original, _ = parse_cap(brewery)
            received, _ = parse_cap(body["cap_xml"].encode())
            assert cap_differences(original, received) == []
            assert "unenrolled building" in body["summary"]
            feed = await api.get("/api/v1/apps/alarm/feed.xml")
            assert feed.status_code == 200
            assert len(etree.fromstring(feed.content).findall(f"{ATOM}entry")) == 5
            assert (
                await api.get("/api/v1/apps/alarm/feed.xml", headers={"Authorization": ""})
            ).status_code == 401
            links = (await api.get("/api/v1/links")).json()
            assert {link["kind"] for link in links} == {"lora"}  # the only neighbour is over LoRa

            async def receipts() -> bool:
                return sum(note.startswith(RECEIVED_EN) for _, note in panel.notes) >= 4

            await _wait_for("four automatic receipts at the office panel", receipts, 60)
            for record in office:
                reply = await api.post(
                    f"/api/v1/records/{record['record_id']}/ack", json={"action": "fire brigade dispatched"}
                )
                assert reply.status_code == 200, reply.text
            reply = await api.post(
                f"/api/v1/records/{by_sender[BREWERY_SENDER]['record_id']}/ack", json={"action": " \t "}
            )
            assert reply.status_code == 422 and "needs an action code or a text" in reply.text, reply.text
            reply = await api.post(
                f"/api/v1/records/{by_sender[BREWERY_SENDER]['record_id']}/ack", json={"action": "dispatched"}
            )
            assert reply.status_code == 200, reply.text

            async def operator_acks() -> bool:
                return sum(note.startswith(MESSAGE_EN) for _, note in panel.notes) >= 4

            await _wait_for("four operator acknowledgements at the office panel", operator_acks, 60)
            code, out = await asyncio.wait_for(brewery_acks, 160)
            assert code == 0, out[-2000:]

            # a stock Meshtastic user on the observer radio calls for help
            stock = [str(meshtastic), "--host", f"127.0.0.1:{observer_port}", "--sendtext", "help"]
            code, out = await _run(stock, tmp_path, 60)
            assert code == 0, out[-2000:]
            heard: list[dict[str, Any]] = []

            async def heard_on_the_air() -> bool:
                nonlocal heard
                heard = (await api.get("/api/v1/records", params={"type": "meshtastic"})).json()
                return bool(heard)

            await _wait_for("the stock text at the command post", heard_on_the_air, 30)
            (stock_record,) = heard
            assert stock_record["body"]["text"] == "help" and stock_record["body"]["authenticated"] is False
            assert stock_record["body"]["radio"] == "!a0000009"
    finally:
        if brewery_acks is not None and not brewery_acks.done():
            brewery_acks.cancel()
        stop_all(processes)
        panel_transport.close()
    by_alarm: dict[str, list[str]] = {}
    for identifier, note in panel.notes:
        by_alarm.setdefault(identifier, []).append(note)
    assert len(by_alarm) == 4, panel.notes
    for notes in by_alarm.values():
        assert notes == [RECEIVED_EN, f"{MESSAGE_EN} fire brigade dispatched"], notes
    receipt, dispatched = _trace_notes(brewery_dir)
    assert receipt == "Operační středisko přijalo váš poplach."
    assert re.fullmatch(
        r"K vaší budově byly vyslány záchranné jednotky\. Operátor: Operator Jane Doe.*\.", dispatched
    )
    assert all(p.returncode is not None for p in processes)
