// edge operator console: polls the admin API every second and renders it.
//
// Served under a strict Content-Security-Policy, so: no inline code or styles, and every piece of
// data (backend ids, reasons, service names, which may come from Consul) goes into the DOM as
// text (textContent, setAttribute), never as HTML.
"use strict";

const POLL_MS = 1000;
const FETCH_TIMEOUT_MS = 3000;
const HISTORY = 300; // samples kept per backend: 5 minutes at one poll a second
const SPAN_MS = 300000; // the sparkline's time span
const RATE_WINDOW_MS = 5000; // req/s is averaged over this, to smooth the jitter of 1 s polls
const QUALITY_WINDOW_MS = 10000; // error share and p99 over this: shorter windows hold too few responses
const STRATEGIES = ["round-robin", "least-connections", "consistent-hash"];
const SVG_NS = "http://www.w3.org/2000/svg";

// Table columns: field (the cell's data-field), header, header tooltip.
const COLUMNS = [
  ["backend", "Backend", "id (ip:port), used by the drain calls"],
  ["state", "State", "state and, in the tooltip, probe health"],
  ["reason", "Reason", "why it is in this state; the tooltip has the last probe"],
  ["since", "Since", "when the state last changed"],
  ["weight", "Weight", "configured weight, and the share of it in use now when below 100 % (slow start, probation)"],
  ["active", "Active", "in-flight requests and open TCP connections"],
  ["rate", "Req/s", "requests per second over the last 5 s"],
  ["errors", "5xx", "share of responses that were 5xx over the last 10 s"],
  ["p99", "p99", "99th percentile latency over the last 10 s: the upper bound of the histogram bucket holding it"],
  ["spark", "Last 5 min", "requests per second over the last 5 minutes; red ticks along the bottom mark seconds with 5xx responses"],
  ["kernel", "Kernel", "eBPF data plane: packets/s, bytes/s, new flows/s and live flows"],
  ["action", "", ""],
];

let token = null; // the admin token: in this variable only (never a cookie, storage or URL)
let pending = null; // the action that got a 401, retried once a token is given
let skew = 0; // the agent's clock minus this browser's, in seconds
let lastOk = null; // Date.now() of the last poll that every endpoint answered
let lastUptime = null;
let prevDataplane = null; // {t, data}: the previous /admin/dataplane, for rates
let lastKernel = null; // kernelRates' last result, kept while /admin/dataplane fails
let dataplaneRetryAt = 0; // after a 404 (an agent without the endpoint), ask again only this late
let eventsSignature = "";
let pollTimer = null;
let polling = false;
let pollAgain = false;
const history = new Map(); // "service\nid" -> [{t, req, resp, lat, le}], oldest first
const sections = new Map(); // service name -> its DOM section and refs

// ---- small DOM helpers -------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

// An element with attributes ("class", "text" are special) and children (strings become text).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  e.append(...children.filter((c) => c != null));
  return e;
}

// Only touch the DOM when something changed: keeps selections, hovers and tooltips stable.
function setText(e, s) {
  s = String(s);
  if (e.textContent !== s) e.textContent = s;
}
function setAttr(e, k, v) {
  if (v == null) e.removeAttribute(k);
  else if (e.getAttribute(k) !== String(v)) e.setAttribute(k, String(v));
}

// ---- formatting --------------------------------------------------------------------------------

function trimNum(v) {
  const a = Math.abs(v);
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1).replace(/\.0$/, "");
  return v.toFixed(2).replace(/\.?0+$/, "");
}
function fmtNum(x, unit = "") {
  if (x == null || !Number.isFinite(x)) return "—";
  for (const [d, p] of [[1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
    if (Math.abs(x) >= d) return `${trimNum(x / d)} ${p}${unit}`;
  }
  return unit ? `${trimNum(x)} ${unit}` : trimNum(x);
}
function fmtLatency(sec) {
  if (sec < 1e-3) return `${trimNum(sec * 1e6)} µs`;
  if (sec < 1) return `${trimNum(sec * 1e3)} ms`;
  return `${trimNum(sec)} s`;
}
function fmtDuration(s) {
  s = Math.max(0, Math.floor(s));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}
const serverNow = () => Date.now() / 1000 + skew;
// Coarser than fmtDuration past a minute: a glance needs "3 min ago", not the seconds.
function ago(epoch) {
  if (epoch == null) return "never";
  const s = Math.max(0, serverNow() - epoch);
  return `${s < 60 || s >= 3600 ? fmtDuration(s) : `${Math.floor(s / 60)} min`} ago`;
}
const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });
function absTime(epoch) {
  if (epoch == null) return "";
  const d = new Date(epoch * 1000);
  return `${d.toLocaleString([], { hour12: false })} (${d.toISOString()})`;
}
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
const num = (x) => (typeof x === "number" && Number.isFinite(x) ? x : 0);

// ---- HTTP --------------------------------------------------------------------------------------

// One call with a timeout; resolves with status and parsed JSON, rejects on network or timeout.
async function request(method, path, body) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  // Reads need no token; sending it only on commands keeps it off the 1 s polling traffic.
  if (token !== null && method !== "GET") headers.Authorization = `Bearer ${token}`;
  try {
    const res = await fetch(path, {
      method, headers, signal: ctl.signal, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { /* not JSON: keep the text */ }
    return { status: res.status, ok: res.ok, data, text, date: res.headers.get("Date") };
  } catch (e) {
    throw new Error(ctl.signal.aborted ? `no answer within ${FETCH_TIMEOUT_MS / 1000} s` : `network error: ${e.message}`);
  } finally {
    clearTimeout(timer);
  }
}

// The API's own words for an error ({"error": "..."}), else the start of the body.
function apiError(r) {
  if (r.data && typeof r.data.error === "string") return r.data.error;
  return (r.text || "").slice(0, 300) || "(empty body)";
}

function setStatus(message, kind) {
  const s = $("status");
  setText(s, `${clock(Date.now())}  ${message}`);
  s.dataset.kind = kind;
}

// ---- polling -----------------------------------------------------------------------------------

function schedule(ms) {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(poll, ms);
}
// Poll right away (after a command), without ever running two polls at once.
function pollSoon() {
  if (polling) pollAgain = true;
  else schedule(0);
}

async function poll() {
  polling = true;
  try {
    await pollOnce();
  } finally {
    // Whatever happened, the chain goes on: a console that silently stops polling lies.
    polling = false;
    schedule(pollAgain ? 0 : POLL_MS);
    pollAgain = false;
  }
}

async function pollOnce() {
  const t = performance.now(); // monotonic: rates must not jump with the wall clock
  const names = ["state", "services", "events"];
  if (t >= dataplaneRetryAt) names.push("dataplane");
  const results = await Promise.allSettled(names.map((n) => request("GET", `/admin/${n}`)));
  // dataplane: null when the agent has none; left undefined when its call failed (keep the last).
  const got = { dataplane: names.includes("dataplane") ? undefined : null };
  const failures = [];
  results.forEach((r, i) => {
    const n = names[i];
    if (r.status === "rejected") {
      failures.push(`GET /admin/${n}: ${r.reason.message}`);
    } else if (r.value.ok && r.value.data != null) {
      got[n] = r.value;
    } else if (n === "dataplane" && r.value.status === 404) {
      got.dataplane = null; // an agent without the endpoint: ask again in 30 s, not every second
      dataplaneRetryAt = t + 30000;
    } else {
      failures.push(`GET /admin/${n}: HTTP ${r.value.status}: ${apiError(r.value)}`);
    }
  });
  try {
    render(got, t);
  } catch (e) {
    failures.push(`rendering failed: ${e.message}`);
    console.error(e);
  }
  if (failures.length === 0) lastOk = Date.now();
  renderStale(failures);
}

function renderStale(failures) {
  const b = $("stale");
  document.body.classList.toggle("is-stale", failures.length > 0);
  if (failures.length === 0) {
    b.hidden = true;
    return;
  }
  const since = lastOk === null
    ? "No complete update yet."
    : `Last complete update at ${clock(lastOk)} (${fmtDuration((Date.now() - lastOk) / 1000)} ago); what is shown may be out of date.`;
  b.replaceChildren(el("strong", { text: "Stale data. " }),
    `The poll at ${clock(Date.now())} failed: ${failures.join("; ")}. ${since}`);
  b.hidden = false;
}

// The agent's clock from the answers, so "12 s ago" is right even if this browser's clock is off.
// A source's last_success plus stale_seconds is the agent's time when it answered (ms precision);
// the Date header (1 s precision) is the fallback.
function updateSkew(got) {
  const received = Date.now() / 1000;
  for (const s of got.services ? got.services.data : []) {
    for (const src of s.sources || []) {
      if (src.last_success != null && src.stale_seconds != null) {
        skew = src.last_success + src.stale_seconds - received;
        return;
      }
    }
  }
  const r = got.state || got.services;
  const date = r && r.date ? Date.parse(r.date) / 1000 : NaN;
  if (Number.isFinite(date)) skew = Math.abs(date - received) > 2 ? date - received : 0;
}

function render(got, t) {
  updateSkew(got);
  if (got.state) renderState(got.state.data);
  if (got.dataplane !== undefined) lastKernel = kernelRates(got.dataplane && got.dataplane.data, t);
  const dp = lastKernel;
  if (got.services && Array.isArray(got.services.data)) {
    renderServices(got.services.data, got.state && got.state.data, dp, t);
  }
  if (got.events && Array.isArray(got.events.data)) renderEvents(got.events.data);
}

// ---- header ------------------------------------------------------------------------------------

function renderState(s) {
  // The agent restarted: every counter starts again, so the histories are meaningless.
  if (lastUptime !== null && s.uptime_seconds < lastUptime) {
    history.clear();
    prevDataplane = null;
    dataplaneRetryAt = 0;
  }
  lastUptime = s.uptime_seconds;
  setText($("version"), `v${s.version}`);
  setText($("uptime"), fmtDuration(s.uptime_seconds));
  setAttr($("uptime"), "title", `started ${absTime(serverNow() - s.uptime_seconds)}`);
  const ready = $("ready");
  setText(ready, s.ready ? "ready" : "not ready");
  setAttr(ready, "data-ready", String(Boolean(s.ready)));
  const d = s.dataplane || {};
  const mode = $("mode");
  setText(mode, d.requested && d.requested !== d.mode ? `${d.mode} (asked: ${d.requested})` : String(d.mode));
  setAttr(mode, "data-mode", d.mode);
  setText($("mode-reason"), d.reason ? `Data plane: ${d.reason}` : "");
  const panic = $("panic");
  panic.hidden = !s.panic;
  if (s.panic) setText(panic, `Service ${s.service} — ${s.panic}: too few backends are usable, so traffic spreads over every backend that is not drained or removed.`);
  const ecs = $("ecs");
  ecs.hidden = !s.ecs;
  if (s.ecs) {
    const e = s.ecs;
    setText(ecs, `ECS task ${e.family || "?"}:${e.revision || "?"} (${e.launch_type || "launch type unknown"}) in ${e.cluster}, ${e.availability_zone || "zone unknown"}`);
    setAttr(ecs, "title", e.task_arn);
  }
}

function renderToken() {
  setText($("token-state"), token === null ? "not set" : "token set");
  $("token-state").dataset.set = String(token !== null);
  $("token-clear").hidden = token === null;
}

// ---- kernel counters (eBPF) --------------------------------------------------------------------

// Rates from the difference with the previous /admin/dataplane. Returns null outside eBPF mode.
function kernelRates(data, t) {
  const prev = prevDataplane;
  prevDataplane = data ? { t, data } : null;
  renderKernel(data, prev, t);
  if (!data || data.mode !== "ebpf") return null;
  const dt = prev ? (t - prev.t) / 1000 : 0;
  const rate = (cur, old) => (dt > 0 && old != null && cur >= old ? (cur - old) / dt : null);
  const index = (list, key) => new Map((list || []).map((x) => [key(x), x]));
  const oldSvc = index(prev && prev.data.services, (x) => x.service);
  const oldBe = index(prev && prev.data.backends, (x) => `${x.service}\n${x.backend}`);
  const out = { services: new Map(), backends: new Map() };
  for (const s of data.services || []) {
    const o = oldSvc.get(s.service) || {};
    out.services.set(s.service, { pps: rate(s.packets, o.packets), bps: rate(s.bytes, o.bytes), fps: rate(s.new_flows, o.new_flows) });
  }
  for (const b of data.backends || []) {
    const key = `${b.service}\n${b.backend}`;
    const o = oldBe.get(key) || {};
    out.backends.set(key, { pps: rate(b.packets, o.packets), bps: rate(b.bytes, o.bytes), fps: rate(b.new_flows, o.new_flows), flows: b.flows });
  }
  return out;
}

function renderKernel(data, prev, t) {
  const on = Boolean(data && data.mode === "ebpf");
  $("kernel").hidden = !on;
  if (!on) return;
  const dt = prev ? (t - prev.t) / 1000 : 0;
  setText($("kernel-summary"), `Maglev table swaps: ${fmtNum(num(data.table_swaps))}. Rates over the last poll interval.`);
  // Counter tables: name, rate, total; biggest totals first.
  const fill = (tbody, now, old) => {
    const rows = Object.entries(now || {}).sort((a, b) => num(b[1]) - num(a[1])).map(([name, total]) => {
      const before = old ? old[name] : undefined;
      const r = dt > 0 && before != null && total >= before ? (total - before) / dt : null;
      return el("tr", { class: r ? "hot" : null }, el("td", { text: name }),
        el("td", { class: "num", text: fmtNum(r) }), el("td", { class: "num", text: fmtNum(num(total)) }));
    });
    tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 3, class: "muted", text: "none" }))]));
  };
  fill($("drops"), data.drops, prev && prev.data.drops);
  fill($("kernel-events"), data.events, prev && prev.data.events);
  fill($("expired"), data.expired, prev && prev.data.expired);
  pollMonitor().catch((e) => setText($("monitor-state"), `GET /admin/monitor: ${e.message}`));
}

// The kernel monitor's events (eBPF mode): the newest 50, kept across polls by their number.
let monitorSince = 0;
const monitorEvents = [];
async function pollMonitor() {
  const r = await request("GET", `/admin/monitor?since=${monitorSince}`);
  if (!r.ok || !r.data) return;
  const m = r.data;
  for (const e of m.events || []) {
    monitorSince = Math.max(monitorSince, num(e.seq));
    monitorEvents.unshift(e);
  }
  monitorEvents.length = Math.min(monitorEvents.length, 50);
  setText($("monitor-state"), m.on
    ? `monitor on: ${[m.drops && "drops", m.flows && "new flows"].filter(Boolean).join(" and ")}, ${m.rate}/s per CPU, ${m.seconds_left} s left`
    : "monitor off (edge-agent monitor, or the button, switches it on)");
  const rows = monitorEvents.map((e) => el("tr", { "data-kind": e.kind },
    el("td", { text: clock(num(e.at) * 1000) }), el("td", { text: e.kind }),
    el("td", { text: String(e.event || "").replace(/^drop_/, "") }), el("td", { text: e.proto }),
    el("td", { text: e.src }), el("td", { text: e.dst }), el("td", { class: "num", text: fmtNum(num(e.lost)) })));
  $("monitor-events").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 7, class: "muted", text: "none" }))]));
}

const kernelText = (k) => (k ? `${fmtNum(k.pps, "pkt/s")} · ${fmtNum(k.bps, "B/s")} · ${fmtNum(k.fps, "flows/s")}` : "—");

// ---- services ----------------------------------------------------------------------------------

function renderServices(list, state, dp, t) {
  const seen = new Set();
  for (const s of list) {
    let sec = sections.get(s.name);
    if (!sec) {
      sec = buildSection(s.name);
      sections.set(s.name, sec);
    }
    updateSection(sec, s, state, dp, t, seen);
  }
  for (const [name, sec] of sections) {
    if (!list.some((s) => s.name === name)) {
      sec.root.remove();
      sections.delete(name);
    }
  }
  for (const key of history.keys()) if (!seen.has(key)) history.delete(key);
  reorder($("services"), list.map((s) => sections.get(s.name).root));
}

// Puts children in this order, moving only those out of place (a moved button loses its click).
function reorder(parent, nodes) {
  nodes.forEach((n, i) => {
    if (parent.children[i] !== n) parent.insertBefore(n, parent.children[i] || null);
  });
}

function buildSection(name) {
  const sec = { rows: new Map() };
  const fact = (label) => {
    const dd = el("dd");
    sec.facts.append(el("div", {}, el("dt", { text: label }), dd));
    return dd;
  };
  sec.ready = el("span", { class: "pill", "data-field": "ready" });
  sec.panic = el("span", { class: "pill warn", "data-field": "panic", hidden: true });
  sec.counts = el("span", { class: "muted small" });
  sec.facts = el("dl", { class: "facts" });
  sec.address = fact("Address");
  sec.strategy = fact("Strategy");
  sec.sources = fact("Discovery");
  sec.kernel = fact("Kernel");
  sec.kernelFact = sec.kernel.parentElement;
  sec.select = el("select", { "data-action": "strategy", "data-service": name, "aria-label": `strategy of ${name}` },
    ...STRATEGIES.map((s) => el("option", { value: s, text: s })));
  sec.hashKey = el("input", {
    type: "text", "data-field": "hash-key", "data-service": name, placeholder: "hash key: source, five-tuple, header:NAME",
    "aria-label": `hash key of ${name}`, spellcheck: "false", autocomplete: "off",
  });
  // While the operator is choosing, polls must not reset the choice.
  for (const input of [sec.select, sec.hashKey]) input.addEventListener("input", () => { input.dataset.dirty = "1"; syncHashKey(sec); });
  const apply = el("button", { type: "button", "data-action": "apply-strategy", "data-service": name, text: "Apply" });
  const head = el("tr", {}, ...COLUMNS.map(([f, label, tip]) => el("th", { class: `col-${f}`, scope: "col", title: tip || null, text: label })));
  sec.tbody = el("tbody");
  sec.table = el("table", { class: "backends" }, el("thead", {}, head), sec.tbody);
  sec.root = el("section", { class: "service panel", "data-service": name },
    el("div", { class: "service-head" }, el("h2", { text: name }), sec.ready, sec.panic, sec.counts),
    sec.facts,
    el("div", { class: "strategy-control" }, el("span", { class: "muted", text: "Switch strategy:" }), sec.select, sec.hashKey, apply),
    el("div", { class: "table-wrap" }, sec.table));
  return sec;
}

// The hash key only means something for consistent-hash.
function syncHashKey(sec) {
  sec.hashKey.hidden = sec.select.value !== "consistent-hash";
}

function updateSection(sec, s, state, dp, t, seen) {
  setText(sec.ready, s.ready ? "ready" : "not ready");
  setAttr(sec.ready, "data-ready", String(Boolean(s.ready)));
  // /admin/state reports panic mode for one service (its `service`), so only that one can show it.
  const panic = state && state.service === s.name ? state.panic : null;
  sec.panic.hidden = !panic;
  setText(sec.panic, panic || "");
  const counts = {};
  for (const b of s.backends || []) counts[b.state] = (counts[b.state] || 0) + 1;
  setText(sec.counts, `${plural((s.backends || []).length, "backend")}: ${Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(", ") || "none"}`);
  const addr = [];
  if (s.vip) addr.push(`VIP ${s.vip}`);
  if (s.listeners && s.listeners.length) addr.push(`listeners ${s.listeners.join(", ")}`);
  setText(sec.address, addr.join("; ") || "—");
  const st = s.strategy || {};
  setText(sec.strategy, st.strategy === "consistent-hash" ? `${st.strategy} (key: ${st.hash_key})` : String(st.strategy));
  if (st.strategy && !STRATEGIES.includes(st.strategy) && ![...sec.select.options].some((o) => o.value === st.strategy)) {
    sec.select.append(el("option", { value: st.strategy, text: st.strategy }));
  }
  const active = document.activeElement;
  if (!sec.select.dataset.dirty && active !== sec.select) sec.select.value = st.strategy;
  if (!sec.hashKey.dataset.dirty && active !== sec.hashKey) sec.hashKey.value = st.strategy === "consistent-hash" ? st.hash_key || "" : "";
  syncHashKey(sec);
  sec.sources.replaceChildren(...(s.sources || []).map((src) => el("span", {
    class: `source${src.errors > 0 || src.last_success == null ? " warn" : ""}`,
    title: src.last_success == null ? "never heard from its origin" : `last heard ${absTime(src.last_success)}`,
    text: `${src.source}: ${plural(src.updates, "update")}, ${plural(src.errors, "error")}, heard ${ago(src.last_success)}`,
  })));
  sec.kernelFact.hidden = !dp;
  if (dp) setText(sec.kernel, kernelText(dp.services.get(s.name)));
  sec.table.classList.toggle("no-kernel", !dp);

  const backends = s.backends || [];
  for (const b of backends) {
    let row = sec.rows.get(b.id);
    if (!row) {
      row = buildRow(s.name, b.id);
      sec.rows.set(b.id, row);
    }
    const key = `${s.name}\n${b.id}`;
    seen.add(key);
    const h = record(key, b, t);
    updateRow(row, b, h, dp && (dp.backends.get(`${s.name}\n${b.id}`) || dp.backends.get(`${s.name}\n${b.address}`)));
  }
  for (const [id, row] of sec.rows) {
    if (!backends.some((b) => b.id === id)) {
      row.tr.remove();
      sec.rows.delete(id);
    }
  }
  reorder(sec.tbody, backends.map((b) => sec.rows.get(b.id).tr));
}

// ---- backends ----------------------------------------------------------------------------------

function buildRow(service, id) {
  const row = { tr: el("tr", { "data-backend": id, "data-service": service }), cells: {} };
  for (const [f, label] of COLUMNS) {
    const td = el("td", { class: `col-${f}`, "data-field": f, "data-label": label });
    row.cells[f] = td;
    row.tr.append(td);
  }
  row.note = el("span", { class: "note" });
  row.cells.backend.append(el("div", {}, el("span", { class: "mono", text: id }), row.note));
  row.badge = el("span", { class: "badge" });
  row.cells.state.append(row.badge);
  row.svg = document.createElementNS(SVG_NS, "svg");
  row.svg.setAttribute("viewBox", "0 0 120 28");
  row.svg.setAttribute("preserveAspectRatio", "none");
  row.svg.setAttribute("class", "spark");
  row.svg.setAttribute("role", "img");
  row.svgTitle = document.createElementNS(SVG_NS, "title");
  row.line = document.createElementNS(SVG_NS, "polyline");
  row.line.setAttribute("class", "spark-line");
  row.errs = document.createElementNS(SVG_NS, "g");
  row.errs.setAttribute("class", "spark-errs");
  row.svg.append(row.svgTitle, row.errs, row.line);
  row.cells.spark.append(row.svg);
  row.k1 = el("span");
  row.k2 = el("span");
  row.cells.kernel.append(el("div", {}, row.k1, row.k2));
  row.button = el("button", { type: "button" }); // its row carries the backend and service
  row.cells.action.append(row.button);
  return row;
}

// Appends this poll's counters to the backend's history and returns the history.
function record(key, b, t) {
  let h = history.get(key);
  const lat = b.latency && Array.isArray(b.latency.counts) && Array.isArray(b.latency.le) ? b.latency : null;
  const sample = { t, req: num(b.requests), resp: b.responses || null, lat: lat && lat.counts, le: lat && lat.le };
  // A counter going back means the backend was removed and added again: start afresh.
  if (!h || (h.length && sample.req < h[h.length - 1].req)) {
    h = [];
    history.set(key, h);
  }
  h.push(sample);
  while (h.length > HISTORY || t - h[0].t > SPAN_MS) h.shift();
  return h;
}

// The newest sample at least `ms` older than the last one, else the oldest there is.
function sampleBefore(h, ms) {
  const end = h[h.length - 1].t - ms;
  for (let i = h.length - 2; i >= 0; i--) if (h[i].t <= end) return h[i];
  return h[0];
}

const sumValues = (o) => Object.values(o || {}).reduce((a, v) => a + num(v), 0);

// req/s, 5xx share and p99 from the differences between samples.
function backendStats(h) {
  const out = { rate: null, err: null, errN: 0, respN: 0, p99: null, hasResp: false, hasLat: false, secs: 0 };
  const cur = h[h.length - 1];
  out.hasResp = Boolean(cur.resp);
  out.hasLat = Boolean(cur.lat);
  if (h.length < 2) return out;
  let a = sampleBefore(h, RATE_WINDOW_MS);
  out.rate = (cur.req - a.req) / ((cur.t - a.t) / 1000);
  a = sampleBefore(h, QUALITY_WINDOW_MS);
  out.secs = Math.round((cur.t - a.t) / 1000); // shorter than the window until the page has polled that long
  if (cur.resp && a.resp) {
    out.respN = sumValues(cur.resp) - sumValues(a.resp);
    out.errN = num(cur.resp["5xx"]) - num(a.resp["5xx"]);
    out.err = out.respN > 0 ? out.errN / out.respN : null;
  }
  if (cur.lat && a.lat && cur.lat.length === a.lat.length && cur.le.length === cur.lat.length) {
    out.p99 = quantile(cur.le, cur.lat.map((c, i) => num(c) - num(a.lat[i])), 0.99);
  }
  return out;
}

// The bucket holding quantile q of per-bucket counts (not cumulative); le's last bound is null (+Inf).
function quantile(le, counts, q) {
  const total = counts.reduce((a, c) => a + c, 0);
  if (total <= 0) return null;
  const rank = Math.ceil(q * total);
  let acc = 0;
  for (let i = 0; i < counts.length; i++) {
    acc += counts[i];
    if (acc >= rank) return { upper: le[i], lower: i > 0 ? le[i - 1] : 0, n: total };
  }
  return null;
}

function updateRow(row, b, h, k) {
  const c = row.cells;
  row.tr.dataset.eligible = String(Boolean(b.eligible));
  const notes = [];
  if (b.address && b.address !== b.id) notes.push(b.address);
  if (b.unreachable) notes.push(`⚠ unreachable: ${b.unreachable}`);
  setText(row.note, notes.join(" · "));
  setAttr(row.note, "data-warn", b.unreachable ? "true" : null);

  setText(row.badge, b.state);
  setAttr(row.badge, "data-state", b.state);
  const stateTip = [`health: ${b.health}`, `eligible: ${b.eligible ? "yes" : "no"}`];
  if (b.drained) stateTip.push("drained by an operator");
  if (b.streak) stateTip.push(`streak: ${b.streak} toward the next flip`);
  if (b.slow_start != null) stateTip.push(`slow start: ${Math.round(b.slow_start * 100)} % done`);
  if (b.ejections) stateTip.push(`ejections: ${b.ejections}`);
  if (b.ejected_until != null) stateTip.push(`ejected until ${absTime(b.ejected_until)}`);
  if (b.consecutive_failures) stateTip.push(`gateway failures in a row: ${b.consecutive_failures}`);
  setAttr(c.state, "title", stateTip.join("\n"));

  setText(c.reason, b.reason || "");
  const p = b.last_probe;
  setAttr(c.reason, "title", p
    ? `last probe ${p.passed ? "passed" : "failed"}: ${p.detail} in ${trimNum(num(p.duration_ms))} ms, ${ago(p.at)}${b.next_probe != null ? `; next in ${fmtDuration(b.next_probe - serverNow())}` : ""}`
    : "not probed yet");

  setText(c.since, ago(b.since));
  setAttr(c.since, "title", absTime(b.since));
  setText(c.weight, b.weight_percent != null && b.weight_percent < 100 ? `${b.weight} (${b.weight_percent} %)` : String(b.weight));
  setText(c.active, String(num(b.active)));

  const st = backendStats(h);
  setText(c.rate, fmtNum(st.rate));
  setText(c.errors, st.err == null ? "—" : `${st.err >= 0.1 ? Math.round(st.err * 100) : (st.err * 100).toFixed(1).replace(/\.0$/, "")} %`);
  setAttr(c.errors, "data-bad", st.errN > 0 ? "true" : null);
  setAttr(c.errors, "title", !st.hasResp ? "this agent does not report response classes"
    : `${st.errN} of ${st.respN} responses were 5xx in the last ${st.secs} s`);
  setText(c.p99, st.p99 == null ? "—" : st.p99.upper == null ? `> ${fmtLatency(st.p99.lower)}` : `≤ ${fmtLatency(st.p99.upper)}`);
  setAttr(c.p99, "title", !st.hasLat ? "this agent does not report latency" : st.p99 == null ? `no responses in the last ${st.secs} s`
    : `99 % of ${st.p99.n} responses in the last ${st.secs} s took at most this (a histogram bucket's upper bound)`);
  drawSpark(row, h);
  setText(row.k1, k ? `${fmtNum(k.pps, "pkt/s")} · ${fmtNum(k.bps, "B/s")}` : "—");
  setText(row.k2, k ? `${fmtNum(k.fps, "new/s")} · ${fmtNum(k.flows)} live` : "");

  const drained = Boolean(b.drained);
  setAttr(row.button, "data-action", drained ? "undrain" : "drain");
  if (!row.button.disabled) setText(row.button, drained ? "Undrain" : "Drain");
  setAttr(row.button, "title", drained ? "take new traffic again" : "stop new traffic; existing traffic finishes");
}

// Sparkline of the per-poll request rate over the last 5 minutes, right-aligned on the newest
// sample; intervals with 5xx responses get a red tick at the bottom.
function drawSpark(row, h) {
  const W = 120, H = 28;
  const end = h[h.length - 1].t;
  const pts = [];
  const errs = [];
  let max = 0;
  for (let i = 1; i < h.length; i++) {
    const dt = (h[i].t - h[i - 1].t) / 1000;
    if (dt <= 0) continue;
    const r = Math.max(0, (h[i].req - h[i - 1].req) / dt);
    const x = W - ((end - h[i].t) / SPAN_MS) * W;
    pts.push([x, r]);
    max = Math.max(max, r);
    if (h[i].resp && h[i - 1].resp && num(h[i].resp["5xx"]) > num(h[i - 1].resp["5xx"])) errs.push(x);
  }
  const y = (r) => (H - 1 - (max > 0 ? (r / max) * (H - 4) : 0)).toFixed(1);
  row.line.setAttribute("points", pts.map(([x, r]) => `${x.toFixed(1)},${y(r)}`).join(" "));
  row.errs.replaceChildren(...errs.map((x) => {
    const tick = document.createElementNS(SVG_NS, "line");
    // A strip along the bottom: ticks on every second must not hide the line.
    for (const [k, v] of [["x1", x], ["x2", x], ["y1", H - 7], ["y2", H]]) tick.setAttribute(k, String(v));
    return tick;
  }));
  row.svgTitle.textContent = `requests per second, last 5 minutes: peak ${fmtNum(max)}/s${errs.length ? `; ${errs.length} seconds with 5xx responses` : ""}`;
}

// ---- events ------------------------------------------------------------------------------------

function renderEvents(list) {
  const top = list.slice(0, 50);
  // Rebuild only when something new arrived (keeps text selectable while reading).
  const signature = JSON.stringify(top[0] || null) + top.length;
  if (signature === eventsSignature) return;
  eventsSignature = signature;
  const state = (s, fallback) => el("span", { class: "badge", "data-state": s || null, text: s || fallback });
  $("events").replaceChildren(...top.map((e) => el("li", { "data-event-service": e.service, "data-event-backend": e.backend || null },
    el("time", { datetime: new Date(e.at * 1000).toISOString(), title: absTime(e.at), text: clock(e.at * 1000) }),
    el("span", { class: "ev-service", text: e.service }),
    el("span", { class: "ev-backend mono", text: e.backend || "(whole service)" }),
    // Both null: a decision about the whole service (panic mode); to null: one that changed nothing.
    el("span", { class: "ev-transition" }, ...(e.from == null && e.to == null ? [state(null, "decision")]
      : [state(e.from, "new"), " → ", state(e.to, "no change")])),
    el("span", { class: "ev-reason", text: e.reason }))));
  if (top.length === 0) $("events").append(el("li", { class: "muted", text: "no events yet" }));
}

// ---- commands ----------------------------------------------------------------------------------

// Runs a command: {method, path, body, label, button, done}. A 401 asks for the token and keeps
// the command to retry it; other errors show the API's message in the status line.
async function command(action) {
  if (action.button) action.button.disabled = true;
  setStatus(`${action.label}…`, "busy");
  try {
    const r = await request(action.method, action.path, action.body);
    if (r.status === 401) {
      const rejected = token !== null;
      token = null;
      renderToken();
      pending = action;
      showTokenForm(rejected ? "The agent refused that token; enter it again." : "This action needs the admin token.");
      setStatus(`${action.label}: needs the admin token (HTTP 401: ${apiError(r)})`, "error");
    } else if (!r.ok) {
      setStatus(`${action.label} failed: HTTP ${r.status}: ${apiError(r)}`, "error");
    } else {
      setStatus(`${action.label}: done`, "ok");
      if (action.done) action.done();
      pollSoon();
    }
  } catch (e) {
    setStatus(`${action.label} failed: ${e.message}`, "error");
  } finally {
    if (action.button) action.button.disabled = false;
  }
}

function showTokenForm(why) {
  setText($("token-why"), why);
  $("token-form").hidden = false;
  $("token-input").focus();
}

// The agent matches the id in the path as written (no percent-decoding), so ip:port and [v6]:port
// keep their ':', '[' and ']'; anything else is encoded, so an odd id cannot change the path.
const pathId = (id) => encodeURIComponent(id).replace(/%3A/gi, ":").replace(/%5B/gi, "[").replace(/%5D/gi, "]");

// One listener for every button, also those created later.
document.addEventListener("click", (ev) => {
  const btn = ev.target.closest("button[data-action]");
  if (!btn || btn.disabled) return;
  const row = btn.closest("tr[data-backend]");
  const service = (row || btn).dataset.service;
  const q = `?service=${encodeURIComponent(service)}`;
  if (row && (btn.dataset.action === "drain" || btn.dataset.action === "undrain")) {
    const verb = btn.dataset.action;
    const id = row.dataset.backend;
    command({
      method: "POST", path: `/admin/backends/${pathId(id)}/${verb}${q}`, button: btn,
      label: `${verb === "drain" ? "Drain" : "Undrain"} ${id} (${service})`,
    });
  } else if (btn.dataset.action === "monitor") {
    command({
      method: "POST", path: "/admin/monitor", body: { drops: true, flows: false, rate: 100, seconds: 300 }, button: btn,
      label: "Watch drops for 5 minutes",
    });
  } else if (btn.dataset.action === "apply-strategy") {
    const sec = sections.get(service);
    if (!sec) return;
    const body = { strategy: sec.select.value };
    const key = sec.hashKey.value.trim();
    if (body.strategy === "consistent-hash" && key) body.hash_key = key;
    command({
      method: "PUT", path: `/admin/strategy${q}`, body, button: btn,
      label: `Switch ${service} to ${body.strategy}${body.hash_key ? ` (key ${body.hash_key})` : ""}`,
      done: () => { delete sec.select.dataset.dirty; delete sec.hashKey.dataset.dirty; },
    });
  }
});

function init() {
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault(); // never a real submission (form-action 'none'); the token stays here
    const value = $("token-input").value.trim();
    if (!value) return;
    token = value;
    $("token-input").value = "";
    $("token-form").hidden = true;
    renderToken();
    const action = pending;
    pending = null;
    if (action) command(action);
  });
  $("token-cancel").addEventListener("click", () => {
    $("token-input").value = "";
    $("token-form").hidden = true;
    if (pending) setStatus(`${pending.label}: cancelled`, "error");
    pending = null;
  });
  $("token-clear").addEventListener("click", () => {
    token = null;
    renderToken();
    setStatus("Admin token cleared", "ok");
  });
  renderToken();
  poll();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
else init();
