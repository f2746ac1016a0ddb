// The approvals page. Everything shown is set with textContent: action parameters come from
// agents and must never be read as HTML. The token lives in sessionStorage only.
"use strict";

const $ = (sel) => document.querySelector(sel);
let token = sessionStorage.getItem("aegis-token") || "";
let refreshTimer = null;
let streamAbort = null;

function headers(extra) {
  const h = Object.assign({"Accept": "application/json"}, extra || {});
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

function say(text) {
  const m = $("#message");
  m.textContent = text || "";
  m.hidden = !text;
}

async function api(method, path, body) {
  const init = {method, headers: headers(body === undefined ? {} : {"Content-Type": "application/json"})};
  if (body !== undefined) init.body = JSON.stringify(body);
  const res = await fetch(path, init);
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (!res.ok) {
    const msg = (data && data.message) || res.statusText;
    const err = new Error(res.status + ": " + msg);
    err.status = res.status;
    throw err;
  }
  return data;
}

function text(el, value) {
  el.textContent = value === null || value === undefined || value === "" ? "—" : String(value);
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toLocaleString();
}

function renderPending(items) {
  const list = $("#pending");
  const tpl = $("#card");
  const keep = new Map();
  for (const li of list.children) keep.set(li.dataset.id, li);
  const fresh = document.createDocumentFragment();
  for (const req of items) {
    const id = String(req.id);
    let li = keep.get(id);
    if (li) { keep.delete(id); fresh.appendChild(li); continue; }  // keep a half-typed note
    li = tpl.content.firstElementChild.cloneNode(true);
    li.dataset.id = id;
    const action = req.action || {};
    text(li.querySelector(".id"), "#" + id);
    const risk = li.querySelector(".risk");
    text(risk, req.risk_level);
    if (["low", "medium", "high", "critical"].includes(req.risk_level)) risk.classList.add(req.risk_level);
    text(li.querySelector(".what"), (action.type || "?") + " → " + (action.target || "?"));
    text(li.querySelector(".agent"), action.agent || req.requested_by);
    text(li.querySelector(".rule"), req.rule || "(policy defaults)");
    text(li.querySelector(".reason"), req.reason);
    text(li.querySelector(".asked"), when(req.created_at) + (req.expires_at ? "  (expires " + when(req.expires_at) + ")" : ""));
    li.querySelector(".params").textContent = JSON.stringify(action.params || {}, null, 2);
    li.querySelector(".approve").addEventListener("click", () => answer(li, id, "approve"));
    li.querySelector(".deny").addEventListener("click", () => answer(li, id, "deny"));
    fresh.appendChild(li);
  }
  list.replaceChildren(fresh);
  $("#pending-count").textContent = String(items.length);
  $("#pending-empty").hidden = items.length > 0;
}

function renderRecent(items) {
  const body = $("#recent tbody");
  const rows = document.createDocumentFragment();
  for (const req of items) {
    if (req.status === "pending") continue;
    const tr = document.createElement("tr");
    const action = req.action || {};
    const cells = ["#" + req.id, req.status, (action.type || "?") + " → " + (action.target || "?"),
                   req.risk_level, req.rule || "(defaults)", req.answered_by, req.note, when(req.answered_at)];
    cells.forEach((value, i) => {
      const td = document.createElement("td");
      text(td, value);
      if (i === 1) td.className = "status-" + String(req.status).replace(/[^a-z_]/g, "");
      tr.appendChild(td);
    });
    rows.appendChild(tr);
  }
  body.replaceChildren(rows);
}

async function refresh() {
  try {
    const [pending, recent] = await Promise.all([
      api("GET", "/api/v1/approvals?status=pending&limit=200"),
      api("GET", "/api/v1/approvals?status=answered&limit=25"),
    ]);
    renderPending(pending.approvals);
    renderRecent(recent.approvals);
    if (!$("#message").dataset.sticky) say("");
  } catch (e) {
    say(e.status === 401 || e.status === 403 ? "The server needs a valid API token (" + e.message + ")." : "Cannot load approvals: " + e.message);
  }
}

function scheduleRefresh() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, 100);
}

async function answer(li, id, verb) {
  const buttons = li.querySelectorAll("button");
  buttons.forEach((b) => { b.disabled = true; });
  try {
    await api("POST", "/api/v1/approvals/" + encodeURIComponent(id) + "/" + verb, {note: li.querySelector(".note").value});
    li.remove();
    await refresh();
  } catch (e) {
    say("Could not " + verb + " #" + id + ": " + e.message);
    buttons.forEach((b) => { b.disabled = false; });
  }
}

// Server-sent events read through fetch, so the stream carries the same Authorization header
// as every other call (EventSource cannot send one, and a token in the URL would end up in logs).
async function stream() {
  let backoff = 500;
  for (;;) {
    streamAbort = new AbortController();
    try {
      const res = await fetch("/api/v1/audit/stream", {headers: headers({"Accept": "text/event-stream"}), signal: streamAbort.signal});
      if (!res.ok) throw new Error(String(res.status));
      setLive(true);
      backoff = 500;
      scheduleRefresh();
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buf += decoder.decode(value, {stream: true});
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const chunk = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          if (/^(event|data):/m.test(chunk)) scheduleRefresh();
        }
      }
    } catch (e) {
      if (e.name === "AbortError") return;
    }
    setLive(false);
    await new Promise((r) => setTimeout(r, backoff));
    backoff = Math.min(backoff * 2, 10000);
  }
}

function setLive(on) {
  const el = $("#live");
  el.textContent = on ? "live" : "offline";
  el.className = "live " + (on ? "on" : "off");
}

document.addEventListener("DOMContentLoaded", () => {
  $("#token").value = token;
  $("#token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("#token").value.trim();
    sessionStorage.setItem("aegis-token", token);
    if (streamAbort) streamAbort.abort();
    refresh();
    stream();
  });
  refresh();
  stream();
  setInterval(refresh, 15000);  // a safety net if the stream is down
});
