// bench/console.py: 500 units, 200 alarms and 1,000 detections rendered by a signed-in console.
(async () => {
  const now = Date.now() / 1000;
  const units = Array.from({ length: 500 }, (_, i) => ({ node_id: (i + 1e6).toString(16).padStart(32, "0"),
    name: `Unit ${i}`, roles: [i % 10 ? "responder" : "camera"], last_heard: now - i * 3, lat: 49.74 + (i % 25) * 0.001,
    lon: 13.37 + Math.floor(i / 25) * 0.001, fixed: now - i * 3, accuracy_m: 5, seq: 0 }));
  const alarms = Array.from({ length: 200 }, (_, i) => ({ record_id: `bench-${i}`, type: "alarm", origin: units[i].node_id,
    priority: i % 7 ? "IMMEDIATE" : "FLASH", created: now - i, received: now - i, seq: 0, closed: null,
    acks: i % 3 ? [] : [{ operator: "Op", action: "received", at: now, state: "sent" }],
    body: { summary: `Alert: fire alarm at building ${i}`, status: i % 5 ? "Actual" : "Exercise", actual: i % 5 !== 0,
      hazard: "smoke", building: { name: `Building ${i}`, address: `Street ${i}` }, age_on_arrival_s: 1.5,
      location: { lat: 49.74 + (i % 20) * 0.002, lon: 13.37 + Math.floor(i / 20) * 0.002, uncertainty_m: 15 } } }));
  const detections = Array.from({ length: 1000 }, (_, i) => ({ record_id: `cam-${i % 4}-${i}`, type: "detection",
    origin: units[i % 50].node_id, priority: "IMMEDIATE", created: now - 1000 + i, received: now - 1000 + i, seq: 0,
    closed: null, acks: [], body: { camera: i % 4, event: "intrusion", phase: "update", rule: 1, seq: i,
      subject: i % 100, count: 1, dwell_s: i % 60, score: 0.9 } }));
  const t0 = performance.now();
  units.forEach((u) => state.units.set(u.node_id, u));
  alarms.forEach((a) => state.alarms.set(a.record_id, a));
  detections.forEach(applyDetection);
  renderUnits(); renderAlarms(); renderDetections();
  document.body.getBoundingClientRect();
  const dom = performance.now() - t0;
  await new Promise((resolve) => requestAnimationFrame(() => resolve()));
  return { dom, to_frame: performance.now() - t0 };
})
