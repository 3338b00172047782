// Mesh112 console: loads the open alarm queue, units and recent items once, then applies each
// stream event (which carries the whole item) in place. On reconnect the stream resumes from the
// last journal sequence seen (?after=), so nothing is missed and nothing is re-fetched in bulk.
"use strict";
const $ = (id) => document.getElementById(id);
const token = () => sessionStorage.getItem("mesh112-token") || "";
const api = (path, options = {}) => fetch(path, {
  ...options,
  headers: { "Authorization": "Bearer " + token(), "Content-Type": "application/json", ...(options.headers || {}) },
}).then(async (response) => {
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`${response.status}: ${typeof body.detail === "string" ? body.detail : response.statusText}`);
  return body;
});
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value; else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node[key] = value; else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c != null));
  return node;
};
const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const esc = (value) => String(value ?? "").replace(/[&<>"']/g, (c) => ESCAPES[c]);
let COLLATOR = null; // one collator: String.localeCompare builds one per call
const byName = (a, b) => (COLLATOR = COLLATOR || new Intl.Collator(LOCALE())).compare(a.name, b.name);
const PRIORITY_RANK = { FLASH: 0, IMMEDIATE: 1, PRIORITY: 2, ROUTINE: 3, BULK: 4 };
const STALE_UNIT_S = 600;

const state = {
  me: null, cursor: 0, units: new Map(), alarms: new Map(), detections: new Map(), snapshots: new Map(),
  messages: [], links: [], muted: localStorage.getItem("mesh112-muted") === "1", canAck: false, canSend: false,
  groups: [], buildings: [], paintedAt: new Map(), pendingAcks: new Map(), ackErrors: new Map(), ackChoice: new Map(),
};
window.mesh112 = state; // tests and the benchmark read paint times from here

const unitName = (id) => (state.units.get(id)?.name) || (id ? `${id.slice(0, 8)}…` : "");
const now = () => Date.now() / 1000;

// ---------- alarms ----------
function alarmOrder(a, b) {
  return (PRIORITY_RANK[a.priority] - PRIORITY_RANK[b.priority]) || (a.created - b.created);
}
// The queue: NG112 alarms, responders' SOS, and any other application's FLASH or IMMEDIATE record;
// detections have their own lane, WebRTC session records the Live video panel (video.js). The live
// stream and the first load (start) both place every record by this one rule.
const QUEUE_TYPES = ["alarm", "sos"];
const OWN_LANE_TYPES = ["detection", "webrtc"];
const queued = (record) => QUEUE_TYPES.includes(record.type)
  || (!OWN_LANE_TYPES.includes(record.type) && PRIORITY_RANK[record.priority] <= 1);
// A record's title: its summary, else its type and the sending unit's name (never a raw id).
const recordTitle = (record) => record.body?.summary || `${record.type} · ${unitName(record.origin)}`;
function applyRecord(record) {
  if (queued(record)) {
    if (record.closed != null) state.alarms.delete(record.record_id); else state.alarms.set(record.record_id, record);
    scheduleAlarms();
  } else if (record.type === "detection") {
    applyDetection(record);
  } else if (record.type === "webrtc") {
    applySession(record);
  }
}
let alarmsQueued = false;
function scheduleAlarms() {
  if (alarmsQueued) return;
  alarmsQueued = true;
  requestAnimationFrame(() => { alarmsQueued = false; renderAlarms(); });
}
function statusClass(body) {
  const status = (body.status || "Actual").toLowerCase();
  return status === "actual" ? "actual" : "exercise";
}
function ackState(ack) {
  if (ack.bundle_id) {
    const seen = state.pendingAcks.get(ack.bundle_id);
    if (seen === "delivered") return t("ackDelivered");
    if (!seen) state.pendingAcks.set(ack.bundle_id, "sent");
    return t("ackSent");
  }
  return ack.state === "sent" ? t("ackSent") : t("ackRecorded");
}
function ackControls(id) {
  if (!state.canAck) return "";
  const chosen = state.ackChoice.get(id) || ACK_CODES[0]; // the choice survives a redraw
  const options = ACK_CODES.map((code) => `<option value="${code}"${code === chosen ? " selected" : ""}>${esc(codeText(code))}</option>`).join("");
  const message = state.ackErrors.get(id); // an error stays beside its card until dismissed
  const error = message ? `<span class="error" role="alert">${esc(message)} <button type="button" data-action="dismiss" aria-label="dismiss">×</button></span>` : "";
  return `<div class="ack-row"><select class="ack-code" aria-label="${esc(t("acknowledge"))}">${options}</select>`
    + `<button type="button" class="ack" data-action="ack">${esc(t("acknowledge"))}</button>${error}</div>`;
}
// Cards are strings (200 alarms render in one assignment); one delegated handler serves their controls.
function alarmCard(record) {
  const b = record.body || {};
  const stale = (b.sent_check && b.sent_check.state === "stale") || b.stale;
  const kind = (b.status || "Actual").toLowerCase();
  const status = statusClass(b) === "actual" ? t("actual") : (kind === "test" ? t("test") : kind === "exercise" ? t("exercise") : b.status).toUpperCase();
  const div = (cls, text) => (text ? `<div class="${cls}">${esc(text)}</div>` : "");
  const acks = (record.acks || []).map((a) => `<li>${esc(`${fmtTime(a.at)} ${a.operator}: ${codeText(a.action)} — ${ackState(a)}`)}</li>`).join("");
  return `<li class="card alarm ${esc(record.priority)} ${statusClass(b)}${stale ? " stale" : ""}" data-record-id="${esc(record.record_id)}">`
    + `<div class="card-head"><span class="badge ${esc(record.priority)}">${esc(record.priority)}</span>`
    + `<span class="badge status ${statusClass(b)}">${esc(status)}</span>${stale ? `<span class="badge stale">${esc(t("stale"))}</span>` : ""}`
    + `<span class="age" title="${esc(fmtTime(record.created))}">${esc(fmtAge(now() - record.created))}</span></div>`
    + div("summary", recordTitle(record))
    + div("meta", [b.hazard, b.building && b.building.name, b.building && b.building.address].filter(Boolean).join(" · "))
    + div("instruction", b.instruction)
    + div("meta", b.age_on_arrival_s != null ? `${t("ageOnArrival")}: ${fmtDuration(b.age_on_arrival_s)}` : "")
    + div("meta pending", (b.pending_parts || []).length ? `${t("pending")}: ${b.pending_parts.join(", ")}` : "")
    + `<ul class="acks">${acks}</ul>`
    + `<div class="card-actions"><button type="button" class="details" data-action="details">${esc(t("details"))}</button>${ackControls(record.record_id)}</div></li>`;
}
function acknowledgeAlarm(id, button) {
  const action = state.ackChoice.get(id) || ACK_CODES[0];
  button.disabled = true;
  api(`/api/v1/records/${encodeURIComponent(id)}/ack`, { method: "POST", body: JSON.stringify({ action, close: CLOSING_CODES.has(action) }) })
    .then((updated) => { state.ackErrors.delete(id); state.ackChoice.delete(id); applyRecord(updated); })
    .catch((e) => { state.ackErrors.set(id, String(e.message)); scheduleAlarms(); })
    .finally(() => { button.disabled = false; });
}
$("alarms").addEventListener("change", (event) => {
  const card = event.target.closest("li.card");
  if (card && event.target.matches("select.ack-code")) state.ackChoice.set(card.dataset.recordId, event.target.value);
});
$("alarms").addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]"), card = event.target.closest("li.card");
  if (!button || !card) return;
  const id = card.dataset.recordId, record = state.alarms.get(id);
  if (button.dataset.action === "details" && record) showDetail(record);
  else if (button.dataset.action === "ack") acknowledgeAlarm(id, button);
  else if (button.dataset.action === "dismiss") { state.ackErrors.delete(id); scheduleAlarms(); }
});
function renderAlarms() {
  const alarms = [...state.alarms.values()].sort(alarmOrder);
  $("alarms").innerHTML = alarms.map(alarmCard).join("");
  $("alarm-count").textContent = fmtNumber(alarms.length);
  const fresh = alarms.filter((a) => !state.paintedAt.has(a.record_id)).map((a) => a.record_id);
  if (fresh.length) { // when the next frame starts, this one is on screen: the benchmark's paint time
    fresh.forEach((id) => state.paintedAt.set(id, null));
    requestAnimationFrame(() => { const at = performance.timeOrigin + performance.now(); fresh.forEach((id) => state.paintedAt.set(id, at)); });
  }
  updateBanner(alarms);
  drawAlarmsOnMap(alarms);
}
function updateBanner(alarms) {
  const flash = alarms.find((a) => a.priority === "FLASH" && !(a.acks || []).length);
  const banner = $("banner");
  if (!flash) { banner.hidden = true; stopBeep(); return; }
  banner.hidden = false;
  banner.className = statusClass(flash.body || {});
  $("banner-text").textContent = recordTitle(flash);
  $("banner-open").onclick = () => showDetail(flash);
  startBeep();
}
function showDetail(record) {
  const b = record.body || {};
  const rows = [];
  const walk = (prefix, value) => {
    if (value == null || value === "" || (Array.isArray(value) && !value.length) || prefix === "building") return;
    if (typeof value === "object" && !Array.isArray(value)) { for (const [k, v] of Object.entries(value)) walk(prefix ? `${prefix}.${k}` : k, v); return; }
    if (prefix === "cap_xml" || prefix === "jpeg_base64") return;
    rows.push(el("dt", { text: prefix }), el("dd", { text: Array.isArray(value) ? value.map((v) => (typeof v === "object" ? JSON.stringify(v) : v)).join(", ") : String(value) }));
  };
  walk("", { record_id: record.record_id, priority: record.priority, origin: unitName(record.origin), received: fmtTime(record.received), ...b });
  const body = [el("h3", { text: recordTitle(record) }), buildingSection(b.building), el("dl", {}, ...rows)];
  if (b.cap_xml) body.push(el("details", {}, el("summary", { text: "CAP 1.2" }), el("pre", { text: b.cap_xml })));
  $("detail-body").replaceChildren(...body);
  if (!$("detail").open) $("detail").showModal();
}

// What enrolment says about the alarm's building (the registry's card if the console has it).
function buildingSection(building) {
  if (!building) return null;
  const card = state.buildings.find((x) => x.key_id === building.key_id) || building;
  const rows = [["name", card.name], ["address", card.address], ["floors", card.floors],
    ["hazards", (card.hazards || []).join("; ")], ["contacts", (card.contacts || []).join("; ")]]
    .filter(([, v]) => v).flatMap(([k, v]) => [el("dt", { text: t(k) }), el("dd", { text: v })]);
  return el("section", { class: "building-data" }, el("h4", { text: t("buildingData") }),
    rows.length ? el("dl", {}, ...rows) : el("p", { text: `${building.key_id}: —` }));
}

// ---------- audible cue (WebAudio, no asset) ----------
let audio = null, beepTimer = null;
function beep() {
  if (state.muted) return;
  try {
    audio = audio || new AudioContext();
    const osc = audio.createOscillator(), gain = audio.createGain();
    osc.frequency.value = 880; gain.gain.value = 0.15;
    osc.connect(gain).connect(audio.destination);
    osc.start(); osc.stop(audio.currentTime + 0.25);
  } catch (e) { /* no audio device: the banner still shows */ }
}
// The first beep starts the audio device (tens of ms): after the banner is painted, not before.
function startBeep() { if (!beepTimer) { setTimeout(beep, 0); beepTimer = setInterval(beep, 2000); } }
function stopBeep() { clearInterval(beepTimer); beepTimer = null; }

// ---------- detections: one card per camera and tracked object ----------
function detectionKey(record) {
  const b = record.body;
  return `${record.origin.slice(0, 8)}|${b.camera}|${b.subject ?? b.seq}`;
}
function applyDetection(record) {
  const b = record.body || {};
  if (record.record_id.endsWith("-snapshot")) {
    state.snapshots.set(`${record.origin.slice(0, 8)}|${b.camera}|${b.event_seq}`, b);
    const group = [...state.detections.values()].find((g) => g.seqs.has(b.event_seq) && g.camera === b.camera);
    if (group) { group.snapshot = b; scheduleDetections(group.key); }
    return;
  }
  const key = detectionKey(record);
  let group = state.detections.get(key);
  if (!group) { group = { key, camera: b.camera, origin: record.origin, seqs: new Set(), records: [] }; state.detections.set(key, group); }
  group.seqs.add(b.seq);
  group.latest = !group.latest || record.created >= group.latest.created ? record : group.latest;
  group.records = group.records.filter((r) => r.record_id !== record.record_id).concat([record]).slice(-20);
  group.closed = record.closed != null;
  const snap = state.snapshots.get(`${record.origin.slice(0, 8)}|${b.camera}|${b.seq}`);
  if (snap) group.snapshot = snap;
  scheduleDetections(key);
}
const dirtyDetections = new Set();
let detectionsQueued = false;
function scheduleDetections(key) {
  if (key != null) dirtyDetections.add(key);
  if (detectionsQueued) return;
  detectionsQueued = true;
  requestAnimationFrame(() => { detectionsQueued = false; renderDetections(); });
}
function detectionCard(group) {
  const r = group.latest, b = r.body;
  const li = el("li", { class: `card detection ${r.priority}`, "data-group": group.key });
  // Without a picture the box says why: one was announced and is still crossing, or none was taken.
  const coming = group.records.some((x) => x.body.snapshot_follows);
  const img = group.snapshot ? el("img", { class: "thumb", alt: `${b.camera} ${b.event}`, src: `data:image/jpeg;base64,${group.snapshot.jpeg_base64}` })
    : el("div", { class: "thumb empty", text: t(coming ? "pictureComing" : "noPicture") });
  const facts = [b.rule && `${t("rule")}: ${b.rule}`, b.count != null && `${t("count")}: ${fmtNumber(b.count)}`,
    b.dwell_s != null && `${t("dwell")}: ${fmtNumber(b.dwell_s, 1)} s`, b.score != null && `${fmtNumber(b.score * 100)} %`].filter(Boolean);
  const actions = state.canAck ? el("div", { class: "card-actions" },
    el("button", { type: "button", text: t("acknowledge"), onclick: () => ackDetection(group, "received", false) }),
    el("button", { type: "button", text: t("dismiss"), onclick: () => ackDetection(group, "dismissed", true) })) : null;
  li.append(img, el("div", { class: "det-text" },
    el("div", { class: "card-head" }, el("span", { class: `badge ${r.priority}`, text: r.priority }),
      el("strong", { text: `${b.event} · ${t("camera")} ${b.camera}` }), el("span", { class: "age", text: fmtAge(now() - r.created) })),
    el("div", { class: "meta", text: `${unitName(r.origin)} · ${b.phase || ""} · ${facts.join(" · ")}` }),
    el("div", { class: "meta", text: [`${fmtNumber(group.seqs.size)} ×`, ...(r.acks || []).map((a) => codeText(a.action))].join(" · ") }),
    actions, state.ackErrors.has(group.key) ? el("div", { class: "error", role: "alert" }, state.ackErrors.get(group.key),
      el("button", { type: "button", "aria-label": "dismiss", text: "×", onclick: () => { state.ackErrors.delete(group.key); scheduleDetections(group.key); } })) : null));
  return li;
}
function ackDetection(group, action, close) {
  // One request: the tracked object's latest event carries the card's state (a later event of the
  // same object brings the card back, as it should).
  api(`/api/v1/records/${encodeURIComponent(group.latest.record_id)}/ack`, { method: "POST", body: JSON.stringify({ action, close }) })
    .then((updated) => { state.ackErrors.delete(group.key); applyRecord(updated); })
    .catch((e) => { state.ackErrors.set(group.key, String(e.message)); scheduleDetections(group.key); });
}
// The lane shows the newest tracked objects, a page at a time; the rest wait behind "N more" (a
// thousand cards would be built and laid out for nobody to read).
const DETECTION_PAGE = 50;
let detectionLimit = DETECTION_PAGE;
function renderDetections() {
  const list = $("detections");
  if (!list) return;
  const open = [...state.detections.values()].filter((g) => !g.closed).sort((a, b) => b.latest.created - a.latest.created);
  const groups = open.slice(0, detectionLimit);
  const existing = new Map([...list.children].map((li) => [li.dataset.group, li]));
  const cards = groups.map((g) => (dirtyDetections.has(g.key) || !existing.has(g.key) ? detectionCard(g) : existing.get(g.key)));
  dirtyDetections.clear();
  list.replaceChildren(...cards);
  $("detection-count").textContent = fmtNumber(open.length);
  moreDetections(open.length - groups.length);
}
function moreDetections(hidden) {
  let button = $("detections-more");
  if (!button && !hidden) return;
  if (!button) {
    button = el("button", { id: "detections-more", type: "button", class: "more",
      onclick: () => { detectionLimit += DETECTION_PAGE; scheduleDetections(null); } });
    $("detections").after(button);
  }
  button.hidden = !hidden;
  button.textContent = `${fmtNumber(hidden)} ${t("more")}`;
}

// ---------- units, messages, links ----------
function applyUnit(unit) { state.units.set(unit.node_id, unit); scheduleUnits(); }
let unitsQueued = false;
function scheduleUnits() {
  if (unitsQueued) return;
  unitsQueued = true;
  requestAnimationFrame(() => { unitsQueued = false; renderUnits(); });
}
function linkOf(nodeId) { const l = state.links.find((x) => x.peer === nodeId && x.up) || state.links.find((x) => x.peer === nodeId); return l ? `${l.link} (${l.kind})` : ""; }
function renderUnits() {
  const units = [...state.units.values()].sort(byName);
  if (!$("units")) return;
  // One string for hundreds of rows: far cheaper than building each element (every value escaped).
  $("units").innerHTML = units.map((u) => {
    const stale = !u.last_heard || now() - u.last_heard > STALE_UNIT_S;
    const pos = u.lat != null ? `${fmtNumber(u.lat, 5)}, ${fmtNumber(u.lon, 5)}${u.accuracy_m != null ? ` ±${u.accuracy_m} m` : ""} · ${fmtAge(now() - u.fixed)}` : t("noPosition");
    const cell = (text, title = "") => `<span role="cell"${title ? ` title="${esc(title)}"` : ""}>${esc(text)}</span>`;
    return `<div class="row${stale ? " stale" : ""}" role="row" data-node="${esc(u.node_id)}">${cell(u.name, u.node_id)}${cell(u.roles.join(", "))}`
      + `${cell(u.last_heard ? fmtAge(now() - u.last_heard) : t("never"), u.last_heard ? fmtTime(u.last_heard) : "")}${cell(linkOf(u.node_id))}${cell(pos)}</div>`;
  }).join("");
  drawUnitsOnMap(units);
  scheduleSendTargets();
}
// Hundreds of options in a closed list: filled when the browser is idle, not on the paint path.
let targetsQueued = false;
function scheduleSendTargets() {
  if (targetsQueued) return;
  targetsQueued = true;
  requestIdleCallback(() => { targetsQueued = false; fillSendTargets(); }, { timeout: 500 });
}
function destinationText(text) {
  if (text.startsWith("node:")) return unitName(text.slice(5));
  return text;
}
function messageRow(m) {
  return el("tr", { class: m.priority },
    el("td", { text: fmtTime(m.received) }), el("td", { text: unitName(m.origin), title: m.origin }),
    el("td", { text: destinationText(m.destination) }), el("td", { text: m.priority }), el("td", { text: m.text }));
}
function applyMessage(m) {
  if (!$("messages")) return;
  if (state.messages.some((x) => x.bundle_id === m.bundle_id)) return; // messages never change
  state.messages = [m, ...state.messages].slice(0, 200);
  $("messages").querySelector("tbody").prepend(messageRow(m));
  const body = $("messages").querySelector("tbody");
  while (body.children.length > 200) body.lastChild.remove();
}
function fillSendTargets() {
  const select = $("send-to");
  if (!select) return; // an observer has no send form
  const groups = state.groups.filter((g) => g !== "all");
  const units = [...state.units.values()].filter((u) => u.node_id !== state.me?.node);
  if (select.options.length === 1 + groups.length + units.length) return; // nothing new: keep the choice
  units.sort(byName);
  const option = (value, text) => `<option value="${esc(value)}">${esc(text)}</option>`;
  const current = select.value;
  select.innerHTML = [option("all", `${t("everyone")} (all)`),
    ...groups.map((g) => (g.startsWith("incident") ? option(`group:${g}`, `${t("group")}: ${g}`) : option(`role:${g}`, `${t("role")}: ${g}`))),
    ...units.map((u) => option(`node:${u.node_id}`, `${t("unit")}: ${u.name}`))].join("");
  if ([...select.options].some((o) => o.value === current)) select.value = current;
}

// ---------- health: queues, airtime, links and latency over time (uPlot) ----------
const PRIORITIES = ["FLASH", "IMMEDIATE", "PRIORITY", "ROUTINE", "BULK"];
const COLORS = ["#d00000", "#e08a00", "#1d4ed8", "#6b7280", "#7c3aed"];
const series = { t: [], ...Object.fromEntries(PRIORITIES.map((p) => [p, []])), airtime: [], up: [], down: [], latency: [] };
const plots = [];
function plotSpec(label, names, colors) {
  const width = Math.max(220, Math.floor(($("health-lane").clientWidth - 60) / 3));
  return { title: label, width, height: 140, series: [{}, ...names.map((n, i) => ({ label: n, stroke: colors[i], width: 1.5 }))],
    axes: [{ values: (u, ticks) => ticks.map((v) => formatter("clock").format(new Date(v * 1000))) }, {}], legend: { show: true } };
}
async function pollLinks() { // one request per 5 s: the health reading carries links, queues and airtime
  let health;
  try { health = await api("/api/v1/health"); } catch (e) { return; }
  state.links = health.peers.map((p) => ({ link: p.link, kind: p.kind, peer: p.peer, name: p.name, up: p.up,
    queued: Object.values(health.queues[p.link] || {}).reduce((a, b) => a + b, 0) }));
  $("links").querySelector("tbody").replaceChildren(...state.links.map((l) => el("tr", {},
    el("td", { text: `${l.link} (${l.kind})` }), el("td", { text: l.name || unitName(l.peer), title: l.peer }),
    el("td", {}, el("span", { class: `state ${l.up ? "up" : "down"}`, text: l.up ? t("up") : t("down") })),
    el("td", { text: fmtNumber(l.queued) }),
    el("td", { text: health.airtime[l.link] ? `${t("airtime")} ${fmtNumber(100 * health.airtime[l.link].used_s / health.airtime[l.link].budget_s, 1)} %` : "" }))));
  series.t.push(health.at);
  for (const p of PRIORITIES) series[p].push(Object.values(health.queues).reduce((sum, q) => sum + (q[p] || 0), 0));
  const air = Object.values(health.airtime);
  series.airtime.push(air.length ? 100 * Math.max(...air.map((a) => a.used_s / a.budget_s)) : null);
  series.up.push(health.peers.filter((p) => p.up).length); series.down.push(health.peers.filter((p) => !p.up).length);
  series.latency.push(health.latency_s);
  for (const k of Object.keys(series)) if (series[k].length > 720) series[k].shift();
  const data = [
    [series.t, ...PRIORITIES.map((p) => series[p])],
    [series.t, series.airtime],
    [series.t, series.up, series.down],
    [series.t, series.latency],
  ];
  if (!plots.length && window.uPlot) {
    plots.push(new uPlot(plotSpec(t("queueDepth"), PRIORITIES, COLORS), data[0], $("plot-queue")));
    plots.push(new uPlot(plotSpec(t("airtimeOfBudget"), ["LoRa %"], ["#b3141b"]), data[1], $("plot-airtime")));
    plots.push(new uPlot(plotSpec(t("linksUp"), [t("up"), t("down")], ["#1f7a3a", "#6b7280"]), data[2], $("plot-links")));
    plots.push(new uPlot(plotSpec(t("latency"), ["s"], ["#1d4ed8"]), data[3], $("plot-latency")));
  } else plots.forEach((plot, i) => plot.setData(data[i]));
  scheduleUnits();
}
async function pollAckStates() {
  for (const [id, seen] of state.pendingAcks) {
    if (seen === "delivered") continue;
    try {
      const status = await api(`/api/v1/bundles/${id}`);
      if (status.state === "delivered") { state.pendingAcks.set(id, "delivered"); scheduleAlarms(); }
    } catch (e) { /* unknown yet: try again later */ }
  }
}

// ---------- map (Leaflet; local tiles or a coordinate grid) ----------
let map = null;
const layers = { units: null, alarms: null, places: null };
function setupMap(tiles) {
  map = L.map("map", { zoomControl: true, attributionControl: !!tiles }).setView([49.7475, 13.3776], 14);
  if (tiles) {
    const Authed = L.GridLayer.extend({ createTile(coords, done) {
      const img = document.createElement("img");
      fetch(`/api/v1/tiles/${coords.z}/${coords.x}/${coords.y}`, { headers: { Authorization: "Bearer " + token() } })
        .then((r) => (r.ok ? r.blob() : null)).then((blob) => { if (blob) img.src = URL.createObjectURL(blob); done(null, img); })
        .catch((e) => done(e, img));
      return img;
    } });
    new Authed({ minZoom: tiles.minzoom, maxZoom: tiles.maxzoom, attribution: tiles.attribution }).addTo(map);
  } else {
    const Grid = L.GridLayer.extend({ createTile(coords) {
      const tile = document.createElement("canvas");
      const size = this.getTileSize(); tile.width = size.x; tile.height = size.y;
      const ctx = tile.getContext("2d");
      ctx.strokeStyle = "#c9ced6"; ctx.strokeRect(0, 0, size.x, size.y);
      const nw = map.unproject(coords.scaleBy(size), coords.z);
      ctx.fillStyle = "#6b7280"; ctx.font = "11px system-ui";
      ctx.fillText(`${fmtNumber(nw.lat, 4)}°, ${fmtNumber(nw.lng, 4)}°`, 4, 14);
      return tile;
    } });
    new Grid().addTo(map);
    $("map").classList.add("grid");
  }
  L.control.scale({ metric: true, imperial: false }).addTo(map);
  layers.units = new Dots().addTo(map);
  layers.alarms = new Dots().addTo(map);
  layers.places = new Places().addTo(map);
  map.on("click", (e) => {
    const hit = layers.alarms.hit(e.containerPoint) || layers.units.hit(e.containerPoint);
    if (hit && hit.record) showDetail(hit.record);
    else if (hit) L.popup().setLatLng(e.latlng).setContent(hit.label).openOn(map);
  });
}
// Units and alarm areas on one canvas each, drawn in a single pass: hundreds of Leaflet markers
// (a DOM or path object each) cost a busy console tens of milliseconds on every update.
const Dots = L.Layer.extend({
  onAdd(m) {
    this._canvas = L.DomUtil.create("canvas", "leaflet-zoom-hide", m.getPane("overlayPane"));
    this._items = this._items || [];
    m.on("moveend zoomend resize viewreset", this.draw, this);
    this.draw();
  },
  onRemove(m) { this._canvas.remove(); m.off("moveend zoomend resize viewreset", this.draw, this); },
  setItems(items) { this._items = items; this.draw(); },
  bounds() { return L.latLngBounds(this._items.map((d) => [d.lat, d.lon])); },
  radius(d) { // pixels: fixed for units, the uncertainty in metres for alarm areas
    if (!d.metres) return d.px;
    const metresPerPixel = 40075016.686 * Math.cos((d.lat * Math.PI) / 180) / 2 ** (this._map.getZoom() + 8);
    return Math.max(4, d.metres / metresPerPixel);
  },
  draw() {
    const m = this._map;
    if (!m) return;
    const size = m.getSize(), canvas = this._canvas;
    canvas.width = size.x; canvas.height = size.y;
    L.DomUtil.setPosition(canvas, m.containerPointToLayerPoint([0, 0]));
    const ctx = canvas.getContext("2d");
    for (const d of this._items) {
      const p = m.latLngToContainerPoint([d.lat, d.lon]);
      const r = d.polygon ? Infinity : this.radius(d); // a polygon is drawn whatever its centre
      if (p.x < -r || p.y < -r || p.x > size.x + r || p.y > size.y + r) continue;
      ctx.beginPath();
      if (d.polygon) d.polygon.forEach(([lat, lon], i) => { const q = m.latLngToContainerPoint([lat, lon]); ctx[i ? "lineTo" : "moveTo"](q.x, q.y); });
      else ctx.arc(p.x, p.y, r, 0, 2 * Math.PI);
      ctx.closePath();
      ctx.globalAlpha = d.fill; ctx.fillStyle = d.color; ctx.fill();
      ctx.globalAlpha = d.opacity; ctx.lineWidth = 2; ctx.strokeStyle = d.color; ctx.stroke();
    }
    ctx.globalAlpha = 1;
  },
  hit(point) {
    const m = this._map;
    return this._items.find((d) => m.latLngToContainerPoint([d.lat, d.lon]).distanceTo(point) <= this.radius(d) + 3);
  },
});
let fitted = false;
function fitAll() { // once, to everything known when the console opened (or to the first things drawn)
  if (fitted || !map || !state.loaded) return;
  const bounds = L.latLngBounds([]);
  for (const layer of [layers.units, layers.alarms]) { const b = layer.bounds(); if (b.isValid()) bounds.extend(b); }
  const placed = layers.places.bounds();
  if (placed.isValid()) bounds.extend(placed);
  if (!bounds.isValid()) return;
  fitted = true;
  map.fitBounds(bounds.pad(0.3), { maxZoom: 16 });
}
// Buildings from enrolment and cameras: a labelled mark each that names it on the map. All of them
// are one HTML string in one pane, redrawn on each move (a Leaflet marker each costs a busy console
// tens of milliseconds); a click opens the item's popup.
const Places = L.Layer.extend({
  onAdd(m) {
    this._pane = L.DomUtil.create("div", "places leaflet-zoom-hide", m.getPane("markerPane"));
    this._items = this._items || new Map();
    L.DomEvent.disableClickPropagation(this._pane);
    L.DomEvent.on(this._pane, "click", this.open, this);
    m.on("moveend zoomend resize viewreset", this.draw, this);
    this.draw();
  },
  onRemove(m) { this._pane.remove(); m.off("moveend zoomend resize viewreset", this.draw, this); },
  set(key, item) { this._items.set(key, item); },
  bounds() { return L.latLngBounds([...this._items.values()].map((d) => [d.lat, d.lon])); },
  draw() {
    const m = this._map;
    if (!m) return;
    const size = m.getSize();
    L.DomUtil.setPosition(this._pane, m.containerPointToLayerPoint([0, 0]));
    let html = "";
    const taken = []; // label boxes drawn so far: a label that would cover one moves down a line
    for (const [key, d] of this._items) {
      const p = m.latLngToContainerPoint([d.lat, d.lon]);
      if (p.x < -200 || p.y < -20 || p.x > size.x + 20 || p.y > size.y + 20) continue;
      const x = Math.round(p.x) - 9, y = Math.round(p.y) - 9;
      const box = { x: x + 21, y, w: 8 + 7 * d.name.length, h: 18 }; // 12 px bold: about 7 px a letter
      for (let tries = 0; tries < 8 && taken.some((o) => box.x < o.x + o.w && o.x < box.x + box.w && box.y < o.y + o.h && o.y < box.y + box.h); tries++) box.y += 19;
      taken.push(box);
      html += `<div class="place ${d.kind}${d.stale ? " stale" : ""}" role="button" tabindex="0" title="${esc(d.name)}" data-key="${esc(key)}"`
        + ` style="transform: translate(${x}px, ${y}px)">`
        + `<span class="glyph">${d.kind === "building" ? "▦" : "◉"}</span>`
        + `<span class="label"${box.y !== y ? ` style="transform: translateY(${box.y - y}px)"` : ""}>${esc(d.name)}</span></div>`;
    }
    this._pane.innerHTML = html;
  },
  open(event) {
    const d = this._items.get(event.target.closest(".place")?.dataset.key);
    if (d) L.popup({ offset: [0, -6] }).setLatLng([d.lat, d.lon]).setContent(d.popup).openOn(this._map);
  },
});
function buildingPopup(b) {
  const row = (k, v) => (v ? `<dt>${esc(t(k))}</dt><dd>${esc(v)}</dd>` : "");
  return `<strong>${esc(b.name)}</strong><dl>${row("address", b.address)}${row("floors", b.floors)}`
    + `${row("hazards", b.hazards.join("; "))}${row("contacts", b.contacts.join("; "))}</dl>`;
}
function drawBuildingsOnMap(buildings) {
  if (!map) return;
  for (const b of buildings) {
    if (b.lat != null) layers.places.set(`b:${b.key_id}`, { kind: "building", lat: b.lat, lon: b.lon, name: b.name, popup: buildingPopup(b) });
  }
  layers.places.draw();
  fitAll();
}
function drawUnitsOnMap(units) {
  if (!map) return;
  for (const u of units) {
    if (u.lat == null || !u.roles.includes("camera")) continue;
    const stale = !u.last_heard || now() - u.last_heard > STALE_UNIT_S;
    const popup = `<strong>${esc(u.name)}</strong><br>${esc(t("camera"))} · ${fmtNumber(u.lat, 5)}°, ${fmtNumber(u.lon, 5)}°`;
    layers.places.set(`u:${u.node_id}`, { kind: "camera", lat: u.lat, lon: u.lon, name: u.name, popup, stale });
  }
  layers.places.draw();
  layers.units.setItems(units.filter((u) => u.lat != null && !u.roles.includes("camera")).map((u) => {
    const camera = u.roles.includes("camera"), building = u.roles.includes("building");
    const stale = !u.last_heard || now() - u.last_heard > STALE_UNIT_S;
    return { lat: u.lat, lon: u.lon, px: camera || building ? 6 : 7, label: u.name,
      color: camera ? "#7c3aed" : building ? "#92400e" : "#1d4ed8", opacity: stale ? 0.4 : 1, fill: stale ? 0.2 : 0.6 };
  }));
  fitAll();
}
function drawAlarmsOnMap(alarms) {
  if (!map) return;
  layers.alarms.setItems(alarms.filter((a) => a.body?.location?.lat != null).map((a) => {
    const loc = a.body.location;
    const polygon = Array.isArray(loc.polygon) && loc.polygon.length > 2 ? loc.polygon : null; // PIDF-LO polygon: [[lat, lon], …]
    return { lat: loc.lat, lon: loc.lon, metres: Math.max(loc.uncertainty_m || loc.radius_m || 25, 10), record: a, polygon,
      color: statusClass(a.body) === "actual" ? "#b3141b" : "#6b7280", opacity: 1, fill: 0.2 };
  }));
  fitAll();
}

// ---------- stream ----------
let socket = null, retry = 500, held = false;
// A dropped connection, on demand: the tests prove a reconnect resumes from the cursor.
state.dropStream = () => { held = true; socket.close(); };
state.resumeStream = () => { held = false; follow(); };
state.detectionRecords = () => [...state.detections.values()].reduce((n, g) => n + g.seqs.size, 0);
function applyEvent(event) {
  if (event.seq != null) state.cursor = Math.max(state.cursor, event.seq);
  if (event.type === "record") applyRecord(event.item);
  else if (event.type === "message") applyMessage(event.item);
  else if (event.type === "unit") applyUnit(event.item);
}
function follow() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/api/v1/stream?after=${state.cursor}&token=${encodeURIComponent(token())}`);
  socket.onopen = () => { retry = 500; $("stream-state").textContent = t("live"); $("stream-state").className = "state up"; };
  socket.onmessage = (message) => applyEvent(JSON.parse(message.data));
  socket.onclose = () => {
    $("stream-state").textContent = t("offline"); $("stream-state").className = "state down";
    if (!held) { setTimeout(follow, retry); retry = Math.min(retry * 2, 10000); }
  };
}

function showError(error) { $("error").textContent = String(error.message || error); }

async function start() {
  applyTexts();
  $("lang").value = LANG;
  const fromFragment = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromFragment) { sessionStorage.setItem("mesh112-token", fromFragment); history.replaceState(null, "", location.pathname); }
  if (!token()) { $("login").hidden = false; return; }
  try {
    state.me = await api("/api/v1/whoami");
  } catch (error) { sessionStorage.removeItem("mesh112-token"); $("login").hidden = false; showError(error); return; }
  const roles = new Set(state.me.roles);
  state.canAck = ["admin", "dispatcher"].some((r) => roles.has(r));
  state.canSend = ["admin", "dispatcher", "responder"].some((r) => roles.has(r));
  $("whoami").textContent = `${t("signedIn")} ${state.me.name} (${state.me.roles.join(", ")})`;
  $("node").textContent = `node ${state.me.node.slice(0, 8)}`;
  if (!state.canSend) $("send-form").remove();
  $("main").hidden = false;
  const console_ = await api("/api/v1/console");
  state.cursor = console_.cursor; // read first: anything written after it arrives through the stream
  state.groups = console_.groups;
  if (window.L) setupMap(console_.tiles);
  // A building operator reads only its own alarms: the other lanes are not its business.
  const everything = ["admin", "dispatcher", "observer"].some((r) => roles.has(r));
  if (!everything) for (const lane of ["detection-lane", "units-lane", "messages-lane", "health-lane"]) $(lane).remove();
  // The enrolled buildings come from the NG112 application's router, when that application is installed.
  api("/api/v1/apps/alarm/buildings").then((list) => { state.buildings = list; drawBuildingsOnMap(list); })
    .catch((error) => { if (!String(error.message).startsWith("404")) showError(error); });
  // The open records of every type the queue may hold, each placed by the stream's rule (applyRecord).
  const queueTypes = [...new Set([...QUEUE_TYPES, ...console_.record_types])].filter((type) => !OWN_LANE_TYPES.includes(type));
  const [open, detections, sessions, units, messages] = await Promise.all([
    Promise.all(queueTypes.map((type) => api(`/api/v1/records/open?type=${encodeURIComponent(type)}`))),
    everything ? api("/api/v1/records?type=detection&limit=1000") : [], everything ? api("/api/v1/records/latest?type=webrtc") : [],
    everything ? api("/api/v1/units") : [], everything ? api("/api/v1/messages?limit=100") : []]);
  units.forEach(applyUnit);
  open.flat().forEach(applyRecord);
  detections.slice().reverse().forEach(applyRecord);
  sessions.slice().reverse().forEach(applyRecord);
  messages.slice().reverse().forEach(applyMessage);
  scheduleAlarms(); scheduleUnits(); scheduleDetections(null); // an empty queue says 0
  requestAnimationFrame(() => requestAnimationFrame(() => { state.loaded = true; fitAll(); }));
  follow();
  if (everything) { pollLinks(); setInterval(pollLinks, 5000); }
  setInterval(pollAckStates, 3000);
  setInterval(() => { scheduleAlarms(); scheduleUnits(); }, 15000); // ages move on
}

$("login-form").onsubmit = (event) => {
  event.preventDefault();
  sessionStorage.setItem("mesh112-token", $("token-input").value.trim());
  location.reload();
};
$("send-form").onsubmit = (event) => {
  event.preventDefault();
  const error = $("send-error");
  api("/api/v1/messages", { method: "POST", body: JSON.stringify({
    to: $("send-to").value, text: $("send-text").value, priority: $("send-priority").value }) })
    .then((r) => { $("send-result").textContent = `${destinationText($("send-to").value)}: ${r.summary}`; $("send-text").value = ""; error.hidden = true; })
    .catch((e) => { error.hidden = false; error.querySelector("span").textContent = String(e.message); });
};
$("send-error").querySelector("button").onclick = () => { $("send-error").hidden = true; };
$("mute").onclick = () => {
  state.muted = !state.muted;
  localStorage.setItem("mesh112-muted", state.muted ? "1" : "0");
  $("mute").textContent = state.muted ? t("unmute") : t("mute");
  $("mute").setAttribute("aria-pressed", String(state.muted));
};
$("lang").onchange = () => { localStorage.setItem("mesh112-lang", $("lang").value); location.reload(); };
start();
