// Mesh112 dashboard: reads the relay API with the operator's token and follows the live stream.
"use strict";
const api = (path, options = {}) => fetch(path, {
  ...options,
  headers: { "Authorization": "Bearer " + token(), "Content-Type": "application/json", ...(options.headers || {}) },
}).then(async (response) => {
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`${response.status}: ${body.detail || response.statusText}`);
  return body;
});
const $ = (id) => document.getElementById(id);
const token = () => sessionStorage.getItem("mesh112-token") || "";
const when = (t) => t ? new Date(t * 1000).toLocaleTimeString() : "";
const cell = (text) => { const td = document.createElement("td"); td.textContent = text ?? ""; return td; };
const fill = (id, rows, render) => {
  const body = $(id).querySelector("tbody");
  body.replaceChildren(...rows.map(render));
};
const showError = (error) => { $("error").textContent = String(error.message || error); };

function recordRow(record) {
  const tr = document.createElement("tr");
  tr.className = record.priority + (record.body.status && record.body.status !== "Actual" ? " exercise" : "");
  tr.dataset.recordId = record.record_id;
  const what = record.body.summary || JSON.stringify(record.body);
  tr.append(cell(when(record.received)), cell(record.type), cell(record.priority), cell(record.origin.slice(0, 8)),
    cell(what), cell(record.acks.map((a) => `${a.operator}: ${a.action}`).join("; ")));
  const td = document.createElement("td");
  const button = document.createElement("button");
  button.textContent = "Acknowledge";
  button.onclick = () => api(`/api/v1/records/${encodeURIComponent(record.record_id)}/ack`,
    { method: "POST", body: JSON.stringify({ action: "acknowledged by the command post" }) })
    .then(refresh).catch(showError);
  td.append(button); tr.append(td);
  return tr;
}

function messageRow(m) {
  const tr = document.createElement("tr");
  tr.className = m.priority;
  tr.append(cell(when(m.received)), cell(m.origin.slice(0, 8)), cell(m.priority), cell(m.text));
  return tr;
}

async function refresh() {
  try {
    const [records, messages, units, links] = await Promise.all([
      api("/api/v1/records"), api("/api/v1/messages"), api("/api/v1/units"), api("/api/v1/links")]);
    fill("records", records, recordRow);
    fill("messages", messages, messageRow);
    fill("units", units, (u) => { const tr = document.createElement("tr");
      tr.append(cell(u.name), cell(u.roles.join(", ")), cell(when(u.last_heard)),
        cell(u.lat != null ? `${u.lat.toFixed(5)}, ${u.lon.toFixed(5)}` + (u.accuracy_m != null ? ` ±${u.accuracy_m} m` : "") : ""),
        cell(when(u.fixed))); return tr; });
    fill("links", links, (l) => { const tr = document.createElement("tr");
      tr.append(cell(l.link), cell((l.peer || "").slice(0, 8)), cell(l.up ? "up" : "down"), cell(l.detail || "")); return tr; });
    $("error").textContent = "";
  } catch (error) { showError(error); }
}

function follow() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/api/v1/stream?token=${encodeURIComponent(token())}`);
  socket.onopen = () => { $("stream-state").textContent = "stream: live"; $("stream-state").className = "state up"; };
  socket.onmessage = () => refresh();
  socket.onclose = () => {
    $("stream-state").textContent = "stream: offline"; $("stream-state").className = "state down";
    setTimeout(follow, 2000);
  };
}

async function start() {
  const fromFragment = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromFragment) { sessionStorage.setItem("mesh112-token", fromFragment); history.replaceState(null, "", location.pathname); }
  if (!token()) { $("login").hidden = false; return; }
  try {
    const me = await api("/api/v1/whoami");
    $("whoami").textContent = `Signed in as ${me.name} (${me.roles.join(", ")})`;
    $("node").textContent = `node ${me.node.slice(0, 8)}`;
  } catch (error) { sessionStorage.removeItem("mesh112-token"); $("login").hidden = false; showError(error); return; }
  $("main").hidden = false;
  await refresh();
  follow();
}

$("login-form").onsubmit = (event) => {
  event.preventDefault();
  sessionStorage.setItem("mesh112-token", $("token-input").value.trim());
  location.reload();
};
$("send-form").onsubmit = (event) => {
  event.preventDefault();
  api("/api/v1/messages", { method: "POST", body: JSON.stringify({
    to: $("send-to").value, text: $("send-text").value, priority: $("send-priority").value }) })
    .then((r) => { $("send-result").textContent = `${r.bundle_id.slice(-12)}: ${r.summary}`; $("send-text").value = ""; refresh(); })
    .catch(showError);
};
start();
