// Mesh112 console texts in English and Czech; dates and numbers use Intl in the chosen locale.
"use strict";
const TEXTS = {
  en: {
    title: "Mesh112 command post", offline: "stream: offline", live: "stream: live", mute: "Mute", unmute: "Unmute",
    flash: "FLASH", open: "Open", token: "Operator token", signin: "Sign in", alarms: "Alarms", map: "Map",
    detections: "Detections", units: "Units", name: "name", roles: "roles", heard: "last heard", link: "link",
    position: "position", messages: "Messages", message: "message", send: "Send", received: "received",
    from: "from", to: "to", priority: "priority", text: "text", health: "Health", peer: "peer", state: "state",
    queued: "queued", details: "details", close: "Close", acknowledge: "Acknowledge", dismiss: "Dismiss",
    closeAlarm: "close", actual: "Actual", exercise: "Exercise", test: "Test", stale: "stale",
    ageOnArrival: "age on arrival", pending: "parts still on their way", never: "never", signedIn: "Signed in as",
    everyone: "everyone", role: "role", group: "group", unit: "unit", count: "count", dwell: "dwell",
    rule: "rule", camera: "camera", up: "up", down: "down", queueDepth: "queued bundles by priority", linksUp: "neighbours up / down", airtime: "airtime",
    airtimeOfBudget: "LoRa airtime, % of the duty-cycle budget", latency: "delivery latency (s)",
    buildingData: "Building data from enrolment", floors: "floors", hazards: "hazards", contacts: "contacts",
    address: "address", more: "more",
    ackSent: "sent", ackDelivered: "delivered to the building", ackRecorded: "recorded", noPosition: "no fix",
    pictureComing: "picture on its way", noPicture: "no picture",
    liveVideo: "Live video", noStreams: "no unit is streaming", watch: "Watch", closeTile: "close",
    connecting: "connecting…", connected: "connected", notConnected: "not connected", refused: "refused",
    sosVideo: "SOS video",
    codes: { received: "received", dispatched: "dispatched", en_route: "en route", on_scene: "on scene",
      false_alarm: "false alarm", cancelled: "cancelled" },
  },
  cs: {
    title: "Mesh112 velitelské stanoviště", offline: "spojení: odpojeno", live: "spojení: živě", mute: "Ztlumit",
    unmute: "Zapnout zvuk", flash: "FLASH", open: "Otevřít", token: "Token operátora", signin: "Přihlásit",
    alarms: "Poplachy", map: "Mapa", detections: "Detekce", units: "Jednotky", name: "název", roles: "role",
    heard: "naposledy slyšen", link: "spoj", position: "poloha", messages: "Zprávy", message: "zpráva",
    send: "Odeslat", received: "přijato", from: "od", to: "komu", priority: "priorita", text: "text",
    health: "Stav sítě", peer: "protějšek", state: "stav", queued: "ve frontě", details: "podrobnosti",
    close: "Zavřít", acknowledge: "Potvrdit", dismiss: "Zamítnout", closeAlarm: "uzavřít", actual: "Skutečný",
    exercise: "Cvičení", test: "Test", stale: "zastaralý", ageOnArrival: "stáří při příjmu",
    pending: "části jsou ještě na cestě", never: "nikdy", signedIn: "Přihlášen", everyone: "všichni",
    role: "role", group: "skupina", unit: "jednotka", count: "počet", dwell: "setrvání", rule: "pravidlo", camera: "kamera",
    buildingData: "Údaje o budově z registrace", floors: "podlaží", hazards: "nebezpečí", contacts: "kontakty",
    address: "adresa", more: "dalších",
    up: "funkční", down: "mimo provoz", queueDepth: "svazky ve frontě podle priority", linksUp: "sousedé funkční / mimo provoz",
    airtime: "vysílací čas", airtimeOfBudget: "vysílací čas LoRa, % povoleného limitu", latency: "zpoždění doručení (s)",
    ackSent: "odesláno", ackDelivered: "doručeno do budovy", ackRecorded: "zaznamenáno", noPosition: "bez polohy",
    pictureComing: "snímek je na cestě", noPicture: "bez snímku",
    liveVideo: "Živé video", noStreams: "žádná jednotka nevysílá", watch: "Sledovat", closeTile: "zavřít",
    connecting: "připojuji…", connected: "připojeno", notConnected: "nepřipojeno", refused: "odmítnuto",
    sosVideo: "SOS video",
    codes: { received: "přijato", dispatched: "vysláno", en_route: "na cestě", on_scene: "na místě",
      false_alarm: "planý poplach", cancelled: "zrušeno" },
  },
};
const ACK_CODES = ["received", "dispatched", "en_route", "on_scene", "false_alarm", "cancelled"];
const CLOSING_CODES = new Set(["false_alarm", "cancelled"]);
let LANG = localStorage.getItem("mesh112-lang") || (navigator.language || "en").slice(0, 2);
if (!TEXTS[LANG]) LANG = "en";
const t = (key) => TEXTS[LANG][key] ?? TEXTS.en[key] ?? key;
const codeText = (code) => TEXTS[LANG].codes[code] || code;
const LOCALE = () => (LANG === "cs" ? "cs-CZ" : "en-GB");
// Formatters are costly to create (a console of 500 units formats thousands of values): one each.
const FORMATS = new Map();
const formatter = (kind, digits = 0) => {
  const key = `${kind}${digits}`;
  if (!FORMATS.has(key)) {
    FORMATS.set(key, kind === "clock" ? new Intl.DateTimeFormat(LOCALE(), { timeStyle: "short" })
      : kind === "time" ? new Intl.DateTimeFormat(LOCALE(), { dateStyle: "short", timeStyle: "medium" })
      : kind === "age" ? new Intl.RelativeTimeFormat(LOCALE(), { numeric: "always", style: "short" })
        : new Intl.NumberFormat(LOCALE(), { maximumFractionDigits: digits }));
  }
  return FORMATS.get(key);
};
const fmtTime = (unix) => unix ? formatter("time").format(new Date(unix * 1000)) : t("never");
const fmtNumber = (n, digits = 0) => formatter("number", digits).format(n);
function fmtAge(seconds) {
  const rtf = formatter("age");
  const s = Math.max(0, Math.round(seconds));
  if (s < 90) return rtf.format(-s, "second");
  if (s < 5400) return rtf.format(-Math.round(s / 60), "minute");
  if (s < 172800) return rtf.format(-Math.round(s / 3600), "hour");
  return rtf.format(-Math.round(s / 86400), "day");
}
function fmtDuration(seconds) { // "1.5 s", "3 min", "14 d": how long, not when
  const unit = (n, u) => {
    if (!FORMATS.has(u)) FORMATS.set(u, new Intl.NumberFormat(LOCALE(), { style: "unit", unit: u, unitDisplay: "short", maximumFractionDigits: 1 }));
    return FORMATS.get(u).format(n);
  };
  if (seconds < 90) return unit(seconds, "second");
  if (seconds < 5400) return unit(Math.round(seconds / 60), "minute");
  if (seconds < 172800) return unit(Math.round(seconds / 3600), "hour");
  return unit(Math.round(seconds / 86400), "day");
}
function applyTexts() {
  document.documentElement.lang = LANG;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
}
