// Mesh112 console, "Live video" panel: lists the units whose video reaches this command post
// (GET /api/v1/webrtc: each webrtc link's streams) and shows a unit's live video in a tile on click.
// Each tile is this browser's own RTCPeerConnection to the command post, with no STUN (iceServers:
// []): the offer goes to POST /api/v1/webrtc/view/<node>, the answer carries the unit's video relayed
// from its one uplink, so any number of tiles and consoles share that uplink. A tile that decodes no
// frame while the unit still streams (an ICE restart gives the command post a new track) is
// opened again. Uses dashboard.js's api(), token(), el(), unitName() and LANG.
"use strict";
const VIDEO_TEXTS = {
  en: { liveVideo: "Live video", noStreams: "no unit is streaming", watch: "Watch", connecting: "connecting…", closeTile: "close" },
  cs: { liveVideo: "Živé video", noStreams: "žádná jednotka nevysílá", watch: "Sledovat", connecting: "připojuji…", closeTile: "zavřít" },
};
const vt = (key) => (VIDEO_TEXTS[LANG] || VIDEO_TEXTS.en)[key];
const VIDEO_POLL_MS = 3000;
const ICE_GATHER_MS = 3000; // host candidates only: gathering ends at once, this bounds a stuck one
const STALL_MS = 9000; // no frame decoded in a tile this long while its unit streams: open it again
const videoTiles = new Map(); // node id -> {pc, tile, video, link, seen, still}
window.mesh112video = videoTiles; // tests read the tiles' peer connections from here

async function pollVideo() {
  if (!token() || document.getElementById("main").hidden) return;
  let links;
  try {
    links = await api("/api/v1/webrtc");
  } catch (error) { // 403: this operator may not read links; 404: no webrtc link here
    if (/^40[34]/.test(String(error.message))) { clearInterval(videoTimer); document.getElementById("video-lane").remove(); }
    return;
  }
  document.getElementById("video-title").textContent = vt("liveVideo");
  document.getElementById("video-lane").hidden = false;
  const streams = [...new Set(links.flatMap((link) => link.streams.map((node) => `${link.name}/${node}`)))];
  const list = document.getElementById("video-streams");
  list.replaceChildren(...streams.map((key) => {
    const [link, node] = key.split("/");
    return el("li", {}, el("button", {
      type: "button", class: "watch", "data-node": node, text: `▶ ${unitName(node)}`,
      title: `${vt("watch")} ${node} (${link})`, onclick: () => watch(node, link),
    }));
  }));
  if (!streams.length) list.append(el("li", { class: "hint", text: vt("noStreams") }));
  reopenStalled(new Set(streams.map((key) => key.split("/")[1])));
}

async function reopenStalled(live) { // currentTime of a MediaStream runs on without frames: count them
  for (const [node, entry] of [...videoTiles]) {
    const frames = await framesDecoded(entry.pc);
    entry.still = frames === entry.seen ? entry.still + 1 : 0;
    entry.seen = frames;
    if (entry.still * VIDEO_POLL_MS >= STALL_MS && live.has(node) && videoTiles.get(node) === entry) {
      closeTile(node);
      watch(node, entry.link);
    }
  }
}

async function framesDecoded(pc) {
  let frames = 0;
  const stats = await pc.getStats().catch(() => new Map());
  stats.forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "video") frames = s.framesDecoded || 0; });
  return frames;
}

function closeTile(node) {
  const entry = videoTiles.get(node);
  if (!entry) return;
  entry.pc.close();
  entry.tile.remove();
  videoTiles.delete(node);
}

async function watch(node, link) {
  if (videoTiles.has(node)) return;
  const video = el("video", { muted: "", autoplay: "", playsinline: "" });
  video.muted = true;
  const status = el("span", { class: "video-status", text: vt("connecting") });
  const close = el("button", { type: "button", class: "video-close", "aria-label": vt("closeTile"), text: "×" });
  const tile = el("figure", { class: "video-tile", "data-node": node }, video,
    el("figcaption", {}, el("strong", { text: unitName(node) }), " ", status, " ", close));
  document.getElementById("video-tiles").append(tile);
  const pc = new RTCPeerConnection({ iceServers: [] });
  videoTiles.set(node, { pc, tile, video, link, seen: 0, still: 0 });
  close.onclick = () => (videoTiles.get(node)?.tile === tile ? closeTile(node) : tile.remove());
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.ontrack = (event) => { video.srcObject = new MediaStream([event.track]); };
  pc.onconnectionstatechange = () => {
    status.textContent = pc.connectionState === "connected" ? "" : pc.connectionState;
  };
  video.onplaying = () => { status.textContent = ""; };
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((done) => {
      if (pc.iceGatheringState === "complete") return done();
      pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && done();
      setTimeout(done, ICE_GATHER_MS);
    });
    const answer = await api(`/api/v1/webrtc/view/${node}?link=${encodeURIComponent(link)}`, {
      method: "POST", body: JSON.stringify({ type: pc.localDescription.type, sdp: pc.localDescription.sdp }) });
    await pc.setRemoteDescription(answer);
  } catch (error) {
    status.textContent = String(error.message || error);
    tile.classList.add("failed");
    pc.close();
    videoTiles.delete(node);
  }
}

const videoTimer = setInterval(pollVideo, VIDEO_POLL_MS);
setTimeout(pollVideo, 300); // soon after dashboard.js has signed in
