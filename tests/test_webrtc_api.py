"""WebRTC signalling through the relay API: a real command post process (``mesh112 relay run``) with
a ``webrtc`` link in its node.toml answers a field unit's offer posted to ``/api/v1/webrtc/signal``;
the field unit (a real node in this process, on its own store) then sends a message over the data
channel and it lands in the command post's journal."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import auth
from engine_net import Deployment

from crypto.identity import Identity
from crypto.keystore import load_node_keys
from field.browser import WEBRTC_ARGS
from field.deployment import DemoDeployment, create_demo_deployment
from field.harness import free_port_base
from field.processes import FieldNode, operator_token, start_node, stop_all, wait_healthy, write_field
from relay.api.app import ApiContext, create_app
from relay.api.tokens import issue_token
from relay.bundle import Destination, Kind, to_epoch
from relay.engine import NodeEngine
from relay.journal import Journal
from relay.links.webrtc import WebRtcLink
from relay.links.webrtc_config import WebRtcLinkOptions
from relay.node import Node
from relay.trust import TrustStore


@dataclass
class Post:
    node: FieldNode
    deployment: DemoDeployment
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def post(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Post]:
    root = tmp_path_factory.mktemp("webrtc-api")
    deployment = create_demo_deployment(root)
    nodes = write_field(
        deployment, api_port=free_port_base(2), ip_port=free_port_base(2), chain=("command-post",)
    )
    with nodes[0].config.open("a") as config:
        config.write('\n[[links]]\ntype = "webrtc"\nname = "webrtc0"\nkeepalive_interval = 0.5\n')
    (root / "logs").mkdir()
    processes = [start_node(nodes[0], root / "logs")]
    try:
        wait_healthy(nodes)
        tokens = {
            role: operator_token(deployment, frozenset({role}), f"{role} op")
            for role in ("responder", "observer", "dispatcher")
        }
        yield Post(nodes[0], deployment, tokens)
    finally:
        stop_all(processes)


async def test_an_offer_posted_to_the_api_brings_up_a_data_channel_that_carries_bundles(
    post: Post, tmp_path: Path
) -> None:
    unit = post.deployment.node("Responder 1")
    keys = load_node_keys(unit.directory, int(time.time()))
    trust = TrustStore(keys.authority, [n.certificate for n in post.deployment.nodes])
    engine = await NodeEngine.open(
        keys.identity, keys.certificate, trust, tmp_path / "unit.sqlite", now=to_epoch(time.time())
    )
    link = WebRtcLink(WebRtcLinkOptions(keepalive_interval=0.5), keys.identity, trust.check)
    node = Node(engine, [link])
    await node.start()
    post_id = post.deployment.node("Command Post").node_id
    base = post.node.api
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            offer = await link.offer(post_id)
            response = await client.post(
                "/api/v1/webrtc/signal", content=offer, headers=auth(post.tokens["responder"])
            )
            assert response.status_code == 200, response.text
            assert (
                response.headers["content-type"] == "application/octet-stream"
                and len(response.content) <= 200
            )
            assert await link.accept(response.content) is None
            async with asyncio.timeout(15):
                while post_id not in link.peers():
                    await asyncio.sleep(0.05)
            await node.send(Destination.to_node(post_id), b"smoke on floor 3, sending video", kind=Kind.TEXT)
            dispatcher = auth(post.tokens["dispatcher"])
            async with asyncio.timeout(15):
                while not any(
                    m["text"] == "smoke on floor 3, sending video"
                    for m in (await client.get("/api/v1/messages", headers=dispatcher)).json()
                ):
                    await asyncio.sleep(0.1)
            listed = (await client.get("/api/v1/webrtc", headers=dispatcher)).json()
            assert listed[0]["name"] == "webrtc0" and listed[0]["peers_up"] == [unit.node_id.hex()]
            assert listed[0]["offers_answered"] == 1
    finally:
        await node.stop()


def test_the_signal_endpoint_refuses_what_it_should(post: Post) -> None:
    base, post_id = post.node.api, post.deployment.node("Command Post").node_id
    url = f"{base}/api/v1/webrtc/signal"
    assert httpx.post(url, content=b"x").status_code == 401
    observer = httpx.post(url, content=b"x", headers=auth(post.tokens["observer"]))
    assert observer.status_code == 403
    responder = auth(post.tokens["responder"])
    garbage = httpx.post(url, content=b"\x11" + bytes(200), headers=responder)
    assert garbage.status_code == 422 and "signal refused" in garbage.json()["detail"]
    assert httpx.post(url, content=bytes(600), headers=responder).status_code == 413
    assert httpx.post(f"{url}?link=nope", content=b"x", headers=responder).status_code == 404
    connect = f"{base}/api/v1/webrtc/connect"
    itself = httpx.post(connect, json={"peer": post_id.hex()}, headers=responder)
    assert itself.status_code == 422 and "another node" in itself.json()["detail"]
    unit = post.deployment.node("Field Relay 1").node_id.hex()  # not the unit the other tests use
    asked = httpx.post(connect, json={"peer": unit, "sos": True}, headers=responder)
    assert asked.status_code == 202 and asked.json() == {
        "link": "webrtc0",
        "peer": unit,
    }  # offered over the mesh


VIEWER_JS = """
async ({node, token}) => {
  const pc = new RTCPeerConnection({iceServers: []});
  pc.addTransceiver('video', {direction: 'recvonly'});
  const video = document.createElement('video');
  video.muted = true; video.autoplay = true; video.playsInline = true;
  document.body.appendChild(video);
  pc.ontrack = (event) => { video.srcObject = new MediaStream([event.track]); };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {
    if (pc.iceGatheringState === 'complete') return done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && done();
    setTimeout(done, 3000);
  });
  const response = await fetch(`/api/v1/webrtc/view/${node}`, {
    method: 'POST',
    headers: {'Authorization': `Bearer ${token}`, 'Content-Type': 'application/json'},
    body: JSON.stringify(pc.localDescription),
  });
  if (!response.ok) return response.status;
  await pc.setRemoteDescription(await response.json());
  window.viewer = {pc, video};
  return response.status;
}
"""
DECODED_JS = """
async () => {
  const stats = await window.viewer.pc.getStats();
  let decoded = 0;
  stats.forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') decoded = s.framesDecoded || 0;
  });
  return decoded;
}
"""
PIXELS_JS = """
() => {
  const video = window.viewer.video;
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth; canvas.height = video.videoHeight;
  const context = canvas.getContext('2d');
  context.drawImage(video, 0, 0);
  return {width: canvas.width, height: canvas.height,
          rgba: Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data)};
}
"""


async def test_a_unit_s_video_reaches_a_browser_viewer_through_the_command_post(
    post: Post, tmp_path: Path
) -> None:
    """Debian Chromium (Playwright) asks the command post for a unit's video; the frames it decodes
    carry the unit's stamps (read back from the page's pixels)."""
    from playwright.async_api import async_playwright
    from system_tools import require_tool

    from analytics_edge.live import LiveVideoTrack, read_stamp
    from analytics_edge.synthetic import render, walking_past

    unit = post.deployment.node("Responder 1")
    keys = load_node_keys(unit.directory, int(time.time()))
    trust = TrustStore(keys.authority, [n.certificate for n in post.deployment.nodes])
    engine = await NodeEngine.open(
        keys.identity, keys.certificate, trust, tmp_path / "unit.sqlite", now=to_epoch(time.time())
    )
    link = WebRtcLink(WebRtcLinkOptions(keepalive_interval=0.5), keys.identity, trust.check)
    scene = walking_past(duration_s=3600)
    track = LiveVideoTrack(lambda t: render(scene, t % 8.0), None, bitrate=lambda: 300_000)
    post_id = post.deployment.node("Command Post").node_id
    link.video_source = lambda peer: track if peer == post_id else None
    node = Node(engine, [link])
    await node.start()
    try:
        async with httpx.AsyncClient(base_url=post.node.api, timeout=10) as client:
            response = await client.post(
                "/api/v1/webrtc/signal",
                content=await link.offer(post_id),
                headers=auth(post.tokens["responder"]),
            )
            assert response.status_code == 200, response.text
            await link.accept(response.content)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=require_tool("chromium", "chromium"), headless=True, args=WEBRTC_ARGS
            )
            try:
                page = await browser.new_page()
                await page.goto(post.node.api + "/healthz")  # the API's origin: no CORS for the fetch
                status = await page.evaluate(
                    VIEWER_JS, {"node": unit.node_id.hex(), "token": post.tokens["dispatcher"]}
                )
                assert status == 200
                async with asyncio.timeout(20):
                    while await page.evaluate(DECODED_JS) < 10:
                        await asyncio.sleep(0.2)
                # A frame painted while the encoder still ramps its bitrate up (a loaded machine) can
                # be too coarse for the stamp's checksum: read frames until one carries it (bounded).
                stamped = None
                for _ in range(25):
                    shot = await page.evaluate(PIXELS_JS)
                    rgba = np.array(shot["rgba"], dtype=np.uint8).reshape(shot["height"], shot["width"], 4)
                    stamped = read_stamp(rgba[..., :3])
                    if stamped is not None:
                        break
                    await asyncio.sleep(0.2)
            finally:
                await browser.close()
        assert stamped is not None and stamped[0] > 0, "the page's frames must carry the unit's stamp"
        assert stamped[0] < track.frames
    finally:
        await node.stop()


async def test_an_offer_to_a_stopping_link_is_told_to_come_back_not_a_server_error(tmp_path: Path) -> None:
    """A signal that reaches the API while the node shuts down finds its webrtc link stopped: the
    offering unit gets 503 with the reason (it offers again), not a 500."""
    net = Deployment()
    identity, cert = net.enrol("post", frozenset({"dispatcher"}))
    unit_identity, _ = net.enrol("unit")
    keys = {identity.node_id: identity.public, unit_identity.node_id: unit_identity.public}
    stopping = WebRtcLink(WebRtcLinkOptions(), identity, lambda node, now: keys[node])
    engine = await NodeEngine.open(
        identity, cert, net.trust(), tmp_path / "store.sqlite3", now=to_epoch(time.time())
    )
    node = Node(engine, [stopping])
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    offerer = WebRtcLink(WebRtcLinkOptions(), unit_identity, lambda node, now: keys[node])
    now = int(time.time())
    operator = net.authority.issue(Identity.generate().public, frozenset({"responder"}), "unit", now + 3600)
    token = issue_token(net.authority.identity, operator, now + 3600)
    app = create_app(ApiContext(node, journal, net.authority.public, lambda: None))
    try:
        offer = await offerer.offer(identity.node_id)
        await stopping.stop()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        ) as client:
            response = await client.post(
                "/api/v1/webrtc/signal", content=offer, headers={"Authorization": f"Bearer {token}"}
            )
        assert response.status_code == 503, response.text
        assert "stopped" in response.json()["detail"] and "offer again" in response.json()["detail"]
    finally:
        await offerer.stop()
        await journal.close()
        await node.stop()
