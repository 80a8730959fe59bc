// qrfleet dashboard: keeps the server-rendered pages current, and sends the admin's actions.
// The pages read without it. No library, no build step: this file is what the browser runs.
"use strict";

// Event types about a unit or its transactions (GET /api/events); any of them re-reads the unit.
const TYPES = [
  "unit.registered", "unit.online", "unit.offline", "unit.linked", "unit.unlinked",
  "unit.transferred", "unit.screen", "txn.reserved", "txn.shown", "txn.completed",
  "txn.cancelled", "txn.expired", "txn.superseded", "txn.retried",
];
const POLL_MS = 30000; // a whole re-read now and then, in case an event was missed
const RESULTS = { paid: "PAID", cancelled: "CANCELLED", expired: "EXPIRED" };
const live = document.getElementById("live");
const main = document.getElementById("main");
const unitId = main.dataset.device; // set on a unit's page
const asked = {}; // device id -> number of its latest read, so an older answer never wins
let lastId = null;

const quote = encodeURIComponent;
const value = (v, unit) => (v === null || v === undefined || v === "" ? "—" : v + (unit || ""));
// How a unit reached the server, as host/dashboard/pages.py connection() says it.
const connection = (doc) => (doc.via ? "USB via " + doc.via : doc.last_seen ? "Wi-Fi" : null);

// The screen in words, as host/dashboard/screen.py describe() says it.
function describe(shown, online) {
  const kind = shown && shown.screen;
  let text;
  if (kind === "payment") text = shown.caption ? "Payment QR: " + shown.caption : "Payment QR";
  else if (kind === "pairing") text = "Pairing QR";
  else if (kind === "result") text = "Result: " + (RESULTS[shown.result] || shown.result);
  else if (kind === "status") {
    const title = shown.state === "ready" ? "Ready" : String(shown.state);
    text = shown.detail ? title + ": " + shown.detail : title;
  } else text = kind ? "Screen " + kind : "No screen reported";
  return online ? text : text + " (offline)";
}

async function get(url) {
  const answer = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  if (answer.status === 401) location.assign("/login"); // the login ended
  if (!answer.ok) throw new Error(url + ": " + answer.status);
  return answer;
}

// Fill a card from the unit's device_json; `version` (an event id) forces a new screen image.
function render(card, doc, version) {
  const online = doc.status === "online";
  card.dataset.status = online ? "online" : "offline";
  card.dataset.screen = (doc.shown && doc.shown.screen) || "";
  card.dataset.agent = doc.agent_id || "";
  for (const field of card.querySelectorAll("[data-field]")) {
    const name = field.dataset.field;
    field.textContent = name === "status" ? (online ? "Online" : "Offline")
      : value(name === "via" ? connection(doc) : doc[name], field.dataset.unit);
  }
  const img = card.querySelector("img.screen");
  const key = JSON.stringify([doc.shown, doc.status]);
  if (version || (img.dataset.key && img.dataset.key !== key)) {
    img.src = "/units/" + quote(doc.device_id) + "/screen.svg?v=" + quote(version || Date.now());
    img.alt = "Screen: " + describe(doc.shown, online);
  }
  img.dataset.key = key;
  const unlink = document.querySelector('button[data-action="unlink"]');
  const pairing = document.querySelector('button[data-action="pairing"]');
  if (unlink) unlink.disabled = !doc.agent_id; // the unit page, for the admin
  if (pairing) pairing.disabled = Boolean(doc.agent_id);
}

function recount() {
  for (const section of document.querySelectorAll("section.location")) {
    const cards = section.querySelectorAll("article.unit");
    const online = section.querySelectorAll('article.unit[data-status="online"]').length;
    section.querySelector(".count").textContent = online + " of " + cards.length + " online";
  }
}

async function refresh(deviceId, version) {
  const n = (asked[deviceId] = (asked[deviceId] || 0) + 1);
  const doc = await (await get("/api/devices/" + quote(deviceId))).json();
  const card = document.getElementById("unit-" + deviceId);
  if (asked[deviceId] !== n || !card) return;
  render(card, doc, version);
  recount();
  if (unitId) await Promise.all([diagnose(), history()]);
}

async function diagnose() {
  const doc = await (await get("/api/devices/" + quote(unitId) + "/doctor")).json();
  const verdict = document.getElementById("verdict");
  verdict.textContent = doc.verdict;
  verdict.dataset.ready = String(Boolean(doc.ready));
  const checks = document.getElementById("checks"); // a tethered unit's, while it is offline
  checks.replaceChildren(...(doc.checks || []).map((text) => {
    const item = document.createElement("li");
    item.textContent = text;
    return item;
  }));
  checks.hidden = !doc.checks;
}

async function history() {
  const doc = await (await get("/api/audit?limit=50&device_id=" + quote(unitId))).json();
  const rows = doc.audit.reverse().map((e) => {
    const row = document.createElement("tr");
    for (const v of [e.at, e.actor, e.action, e.agent_id, e.txn_id, e.detail]) {
      row.insertCell().textContent = value(v);
    }
    return row;
  });
  document.querySelector("#history tbody").replaceChildren(...rows);
}

// Every unit again; units added, removed or moved to another location: the list again, whole.
async function poll() {
  if (unitId) return refresh(unitId);
  const { devices } = await (await get("/api/devices")).json();
  const cards = document.querySelectorAll("article.unit");
  const same = devices.length === cards.length && devices.every((doc) => {
    const card = document.getElementById("unit-" + doc.device_id);
    return card && card.closest("section").dataset.location === (doc.location_id || "");
  });
  if (!same) {
    const page = await (await get("/")).text();
    const fresh = new DOMParser().parseFromString(page, "text/html").getElementById("fleet");
    document.getElementById("fleet").replaceWith(document.adoptNode(fresh));
    return;
  }
  for (const doc of devices) render(document.getElementById("unit-" + doc.device_id), doc);
  recount();
}

function onEvent(event) {
  lastId = event.lastEventId || lastId;
  let data;
  try {
    data = JSON.parse(event.data);
  } catch {
    return;
  }
  const id = data.device_id;
  if (!id || (unitId && id !== unitId)) return;
  const known = document.getElementById("unit-" + id);
  if (!unitId && (!known || event.type === "unit.transferred")) poll().catch(report);
  else if (known) refresh(id, event.lastEventId).catch(report);
}

function report(error) {
  console.warn("qrfleet dashboard:", error);
}

function connect() {
  const url = "/api/events" + (lastId ? "?last_event_id=" + quote(lastId) : "");
  const stream = new EventSource(url);
  stream.onopen = () => {
    live.textContent = "Live";
    live.dataset.state = "open";
  };
  stream.onerror = () => {
    live.textContent = "Reconnecting…";
    live.dataset.state = "closed";
    if (stream.readyState === EventSource.CLOSED) {
      // Refused (e.g. the login ended: poll() goes to /login), not merely cut: start again.
      setTimeout(() => poll().catch(report).finally(connect), 5000);
    }
  };
  for (const type of TYPES) stream.addEventListener(type, onEvent);
}

// Actions on a unit's page (admin only): each asks in the dialog, then calls the API.
const dialog = document.getElementById("confirm");
if (dialog) {
  const outcome = document.getElementById("action-result");
  for (const button of document.querySelectorAll("button[data-action]")) {
    button.addEventListener("click", () => {
      document.getElementById("confirm-text").textContent = button.dataset.confirm;
      document.getElementById("transfer-to").hidden = button.dataset.action !== "transfer";
      dialog.dataset.action = button.dataset.action;
      dialog.returnValue = "";
      dialog.showModal();
    });
  }
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "confirm") return;
    const action = dialog.dataset.action;
    const card = document.getElementById("unit-" + unitId);
    const unit = "/api/devices/" + quote(unitId);
    const [method, url, body] = {
      unlink: ["DELETE", "/api/agents/" + quote(card.dataset.agent) + "/devices/" + quote(unitId)],
      transfer: ["POST", unit + "/transfer", { agent_id: document.getElementById("agent").value }],
      pairing: ["POST", unit + "/pairing", {}],
      reboot: ["POST", unit + "/reboot", {}],
    }[action];
    outcome.classList.remove("error");
    outcome.textContent = "Working…";
    try {
      const answer = await fetch(url, {
        method, credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: body && JSON.stringify(body),
      });
      const doc = await answer.json().catch(() => ({}));
      outcome.classList.toggle("error", !answer.ok);
      outcome.textContent = answer.ok
        ? document.querySelector(`button[data-action="${action}"]`).dataset.done
        : "Not done: " + (doc.message || "the server answered " + answer.status + ".");
    } catch (error) {
      outcome.classList.add("error");
      outcome.textContent = "Not done: the server cannot be reached (" + error.message + ").";
    }
    refresh(unitId).catch(report);
  });
}

connect();
setInterval(() => poll().catch(report), POLL_MS);
