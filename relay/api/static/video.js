// Mesh112 console, "Live video" panel: one row per unit whose video reaches this command post
// (GET /api/v1/webrtc: each webrtc link's streams) or whose video session the command post journaled
// (a "webrtc" record per offer: answered, or refused and why; sos: an SOS video request), with the
// unit's name and its connection's state; a click shows the unit's live video in a tile. An SOS
// video request also shows under the FLASH banner until a tile here shows that unit.
// Each tile is this browser's own RTCPeerConnection to the command post, with no STUN (iceServers:
// []): the offer goes to POST /api/v1/webrtc/view/<node>, the answer carries the unit's video relayed
// from its one uplink, so any number of tiles and consoles share that uplink. A tile that decodes no
// frame while the unit still streams (an ICE restart gives the command post a new track) is
// opened again. Uses dashboard.js's api(), token(), el(), unitName(), now() and i18n.js's texts.
"use strict";
const VIDEO_POLL_MS = 3000;
const ICE_GATHER_MS = 3000; // host candidates only: gathering ends at once, this bounds a stuck one
const STALL_MS = 9000; // no frame decoded in a tile this long while its unit streams: open it again
const CONNECTING_S = 30; // an offer answered this recently is still connecting (units offer every 15 s)
const SOS_SHOWN_S = 300; // an SOS request that is not streaming shows this long (a signal's lifetime)
const videoTiles = new Map(); // node id -> {pc, tile, video, link, seen, still}
const videoSessions = new Map(); // node id -> its latest webrtc record
const sosWatched = new Set(); // units a tile here has shown since their SOS request
let videoLinks = []; // the last GET /api/v1/webrtc
window.mesh112video = videoTiles; // tests read the tiles' peer connections from here

function applySession(record) { // dashboard.js's applyRecord calls this for every webrtc record
  const known = videoSessions.get(record.origin);
  // By the offer's time, not by arrival: a late copy of an older offer is not the unit's state.
  if (known && (known.created > record.created || (known.created === record.created && known.seq > record.seq))) return;
  videoSessions.set(record.origin, record);
  if (!record.body.sos) sosWatched.delete(record.origin); // a later SOS request is news again
  scheduleVideo();
}
let videoQueued = false;
function scheduleVideo() {
  if (videoQueued) return;
  videoQueued = true;
  requestAnimationFrame(() => { videoQueued = false; renderVideo(); });
}

async function pollVideo() {
  if (!token() || document.getElementById("main").hidden) return;
  try {
    videoLinks = await api("/api/v1/webrtc");
  } catch (error) { // 403: this operator may not read links; 404: no webrtc link here
    if (/^40[34]/.test(String(error.message))) {
      clearInterval(videoTimer);
      document.getElementById("video-lane").remove();
      document.getElementById("video-sos").remove();
    }
    return;
  }
  document.getElementById("video-lane").hidden = false;
  renderVideo();
  reopenStalled(new Set(videoLinks.flatMap((link) => link.streams)));
}

function sessionState(node, record) {
  if (videoLinks.some((link) => link.peers_up.includes(node))) return t("connected");
  if (!record) return "";
  if (record.body.state === "refused") return `${t("refused")}: ${record.body.why}`;
  return now() - record.created < CONNECTING_S ? t("connecting") : t("notConnected");
}

function renderVideo() {
  if (!document.getElementById("video-lane")) return; // this operator has no video panel
  const streams = new Map(videoLinks.flatMap((link) => link.streams.map((node) => [node, link.name])));
  const units = [...new Set([...streams.keys(), ...videoSessions.keys()])]
    .map((node) => ({ node, name: unitName(node), record: videoSessions.get(node), link: streams.get(node) })).sort(byName);
  const list = document.getElementById("video-streams");
  list.replaceChildren(...units.map(({ node, name, record, link }) => el("li", { class: record?.body.sos ? "sos" : "", "data-node": node },
    link ? el("button", { type: "button", class: "watch", "data-node": node, text: `▶ ${name}`,
      title: `${t("watch")} ${node} (${link})`, onclick: () => watch(node, link) }) : el("strong", { text: name }),
    record?.body.sos ? el("span", { class: "badge FLASH", text: t("sosVideo") }) : null,
    el("span", { class: "session-state", text: sessionState(node, record) }),
    record ? el("span", { class: "age", title: fmtTime(record.created), text: fmtAge(now() - record.created) }) : null)));
  if (!units.length) list.append(el("li", { class: "hint", text: t("noStreams") }));
  // An SOS video request shows under the banner until a tile here shows the unit (or it is long over).
  const calls = units.filter(({ node, record, link }) => record?.body.sos && !sosWatched.has(node)
    && (link || now() - record.created < SOS_SHOWN_S));
  const strip = document.getElementById("video-sos");
  strip.hidden = !calls.length;
  strip.replaceChildren(...calls.map(({ node, name, record, link }) => el("div", { class: "sos-call", "data-node": node },
    el("strong", { text: t("sosVideo") }), el("span", { text: `${name}: ${sessionState(node, record)}` }),
    link ? el("button", { type: "button", text: t("watch"), onclick: () => {
      watch(node, link);
      document.getElementById("video-lane").scrollIntoView();
    } }) : null)));
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
  sosWatched.add(node);
  scheduleVideo();
  const video = el("video", { muted: "", autoplay: "", playsinline: "" });
  video.muted = true;
  const status = el("span", { class: "video-status", text: t("connecting") });
  const close = el("button", { type: "button", class: "video-close", "aria-label": t("closeTile"), text: "×" });
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
