// The Strom console: a hash-routed single page over the broker's JSON API (/api/...).
// Everything is built with DOM nodes and textContent, never innerHTML, so record keys and
// values (arbitrary bytes) can never inject markup.
"use strict";

const app = document.getElementById("app");
const statusLine = document.getElementById("status");
let refreshTimer = null;

/** Creates an element: h("td", {class: "num"}, "42", child, ...). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function table(id, headers, rows) {
  return h("table", { id },
    h("thead", {}, h("tr", {}, headers.map(([label, cls]) => h("th", { class: cls }, label)))),
    h("tbody", {}, rows));
}

async function api(path, options) {
  const res = await fetch(path, options);
  const text = await res.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = { error: text }; }
  if (!res.ok) throw new Error((body && body.error) || `${res.status} ${res.statusText}`);
  return body;
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function fmtRate(n) { return n ? n.toFixed(1) : "0"; }
function fmtOpt(n) { return n === null || n === undefined || n < 0 ? "–" : String(n); }

function show(content) {
  app.replaceChildren(...[content].flat());
}

function failure(e) {
  return h("p", { class: "bad", id: "error" }, `Error: ${e.message}`);
}

// ---- Views ---------------------------------------------------------------------------------

async function clusterView() {
  const c = await api("/api/cluster");
  const rows = c.nodes.map(n => h("tr", { "data-node": n.node_id },
    h("td", {}, n.node_id, n.controller ? h("span", { class: "tag" }, "controller") : null,
      n.node_id === c.node_id ? h("span", { class: "tag" }, "this node") : null),
    h("td", {}, n.address),
    h("td", { class: n.fenced ? "bad" : "ok" }, n.fenced ? "fenced" : "live"),
    h("td", {}, n.voter ? "voter" : "broker"),
    h("td", { class: "num" }, n.leader_partitions),
    h("td", { class: "num" + (n.under_replicated_partitions ? " bad" : "") }, n.under_replicated_partitions),
    h("td", { class: "num" + (n.offline_partitions ? " bad" : "") }, n.offline_partitions)));
  return [
    h("h1", {}, "Cluster"),
    h("div", { class: "cards" },
      card("Cluster id", c.cluster_id),
      card("Controller", c.controller_id < 0 ? "none" : `node ${c.controller_id}`),
      card("Raft term", c.raft_term),
      card("Metadata index", c.raft_applied_index),
      card("This node", c.ready ? "ready" : `not ready: ${c.not_ready_reason}`)),
    table("nodes-table", [["Node"], ["Address"], ["State"], ["Role"], ["Leads", "num"],
      ["Under-replicated", "num"], ["Offline", "num"]], rows),
  ];
}

function card(label, value) {
  return h("div", { class: "card" }, h("div", { class: "muted" }, label), h("div", { class: "v" }, value));
}

async function topicsView() {
  const topics = await api("/api/topics");
  const rows = topics.map(t => h("tr", { "data-topic": t.name },
    h("td", {}, h("a", { href: `#/topics/${encodeURIComponent(t.name)}` }, t.name),
      t.internal ? h("span", { class: "tag" }, "internal") : null),
    h("td", { class: "num" }, t.partitions),
    h("td", { class: "num" }, fmtBytes(t.size_bytes)),
    h("td", { class: "num" }, fmtRate(t.records_per_sec)),
    h("td", { class: "num" }, fmtBytes(t.bytes_per_sec) + "/s")));
  const message = h("span", { id: "create-result" });
  const form = h("form", { class: "inline", id: "create-topic", onsubmit: async ev => {
    ev.preventDefault();
    const f = ev.target;
    const body = { name: f.name.value.trim() };
    if (f.partitions.value) body.partitions = Number(f.partitions.value);
    if (f.replication.value) body.replication_factor = Number(f.replication.value);
    try {
      await api("/api/topics", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      location.hash = `#/topics/${encodeURIComponent(body.name)}`;
    } catch (e) {
      message.className = "bad";
      message.textContent = e.message;
    }
  } },
    h("label", {}, "Name", h("input", { name: "name", id: "topic-name", required: true, placeholder: "orders" })),
    h("label", {}, "Partitions", h("input", { name: "partitions", id: "topic-partitions", type: "number", min: 1, placeholder: "default" })),
    h("label", {}, "Replication factor", h("input", { name: "replication", type: "number", min: 1, placeholder: "default" })),
    h("button", { type: "submit", id: "create-button" }, "Create topic"), message);
  return [
    h("h1", {}, "Topics"),
    h("h2", {}, "Create a topic"), form,
    table("topics-table", [["Topic"], ["Partitions", "num"], ["Size here", "num"], ["Records/s in", "num"], ["Bytes/s in", "num"]], rows),
  ];
}

async function topicView(name) {
  const t = await api(`/api/topics/${encodeURIComponent(name)}`);
  const rows = t.partitions.map(p => h("tr", { "data-partition": p.partition },
    h("td", { class: "num" }, p.partition),
    h("td", { class: "num" }, p.leader < 0 ? h("span", { class: "bad" }, "none") : p.leader),
    h("td", {}, p.replicas.join(", ")),
    h("td", { class: p.isr.length < p.replicas.length ? "bad" : "" }, p.isr.join(", ")),
    h("td", { class: "num" }, fmtOpt(p.log_start_offset)),
    h("td", { class: "num" }, fmtOpt(p.high_watermark)),
    h("td", { class: "num" }, fmtBytes(p.size_bytes)),
    h("td", {}, p.storage_error ? h("span", { class: "bad" }, p.storage_error) : "ok"),
    h("td", {}, h("a", { href: `#/messages?topic=${encodeURIComponent(t.name)}&partition=${p.partition}` }, "browse"))));
  const configs = Object.entries(t.configs).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, v)));
  return [
    h("h1", { id: "topic-title" }, `Topic ${t.name}`),
    h("div", { class: "cards" },
      card("Partitions", t.partitions.length),
      card("Records/s in", fmtRate(t.records_per_sec)),
      card("Bytes/s in", fmtBytes(t.bytes_per_sec) + "/s")),
    table("partitions-table", [["Partition", "num"], ["Leader", "num"], ["Replicas"], ["ISR"], ["Start", "num"],
      ["High watermark", "num"], ["Size here", "num"], ["Storage"], [""]], rows),
    h("h2", {}, "Configuration"),
    table("configs-table", [["Name"], ["Value"]], configs),
  ];
}

async function groupsView() {
  const groups = await api("/api/groups");
  const rows = groups.map(g => h("tr", { "data-group": g.group_id },
    h("td", {}, h("a", { href: `#/groups/${encodeURIComponent(g.group_id)}` }, g.group_id)),
    h("td", {}, g.state),
    h("td", { class: "num" }, g.members),
    h("td", { class: "num" }, g.partitions),
    h("td", { class: "num lag" }, g.total_lag)));
  return [
    h("h1", {}, "Consumer groups"),
    groups.length ? table("groups-table", [["Group"], ["State"], ["Members", "num"], ["Partitions", "num"], ["Lag", "num"]], rows)
      : h("p", { class: "muted" }, "No group has committed offsets on this node's coordinator."),
  ];
}

async function groupView(id) {
  const g = await api(`/api/groups/${encodeURIComponent(id)}`);
  const members = g.members.map(m => h("tr", {},
    h("td", {}, m.member_id), h("td", {}, m.client_id), h("td", {}, m.client_host),
    h("td", {}, m.assignment.join(", "))));
  const partitions = g.partitions.map(p => h("tr", { "data-partition": `${p.topic}-${p.partition}` },
    h("td", {}, p.topic), h("td", { class: "num" }, p.partition),
    h("td", { class: "num" }, p.committed_offset), h("td", { class: "num" }, fmtOpt(p.end_offset)),
    h("td", { class: "num lag" }, fmtOpt(p.lag))));
  return [
    h("h1", { id: "group-title" }, `Group ${g.group_id}`),
    h("div", { class: "cards" }, card("State", g.state), card("Members", g.members.length),
      card("Total lag", h("span", { id: "total-lag" }, g.total_lag))),
    h("h2", {}, "Lag over the last minutes"), lagChart(g.lag_history),
    h("h2", {}, "Members"),
    members.length ? table("members-table", [["Member"], ["Client"], ["Host"], ["Assignment"]], members)
      : h("p", { class: "muted" }, "No members."),
    h("h2", {}, "Partitions"),
    table("lag-table", [["Topic"], ["Partition", "num"], ["Committed", "num"], ["End", "num"], ["Lag", "num"]], partitions),
  ];
}

/** A line chart of total lag over time, as inline SVG. */
function lagChart(samples) {
  const W = 640, H = 180, P = 32;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("id", "lag-chart");
  svg.setAttribute("width", W);
  svg.setAttribute("height", H);
  const text = (x, y, s, anchor) => {
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", x); t.setAttribute("y", y);
    if (anchor) t.setAttribute("text-anchor", anchor);
    t.textContent = s;
    svg.append(t);
  };
  if (!samples.length) {
    text(W / 2, H / 2, "no samples yet (one every few seconds)", "middle");
    return svg;
  }
  const t0 = samples[0].t, t1 = samples[samples.length - 1].t;
  const max = Math.max(1, ...samples.map(s => s.lag));
  const x = t => P + (t1 === t0 ? (W - 2 * P) : ((t - t0) / (t1 - t0)) * (W - 2 * P));
  const y = v => H - P + 10 - (v / max) * (H - 2 * P);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("class", "line");
  line.setAttribute("points", samples.map(s => `${x(s.t).toFixed(1)},${y(s.lag).toFixed(1)}`).join(" "));
  svg.append(line);
  text(4, y(max) + 4, String(max));
  text(4, y(0) + 4, "0");
  text(P, H - 4, new Date(t0).toLocaleTimeString());
  text(W - P, H - 4, new Date(t1).toLocaleTimeString(), "end");
  return svg;
}

/** Bytes as the API sends them: text (pretty-printed when JSON) or base64, with a tag. */
function payload(p) {
  if (p === null || p === undefined) return h("span", { class: "muted" }, "null");
  let shown = p.data, tag = null;
  if (p.encoding === "utf8") {
    try {
      const parsed = JSON.parse(p.data);
      if (parsed !== null && typeof parsed === "object") { shown = JSON.stringify(parsed, null, 2); tag = "json"; }
    } catch (_) { /* plain text */ }
  } else {
    tag = "base64";
  }
  return [h("pre", {}, shown), tag ? h("span", { class: "tag" }, tag) : null,
    p.truncated ? h("span", { class: "tag bad" }, "truncated") : null];
}

async function messagesView(params) {
  const topics = await api("/api/topics");
  const topic = params.get("topic") || (topics.find(t => !t.internal) || {}).name || "";
  const form = h("form", { class: "inline", id: "seek-form", onsubmit: ev => {
    ev.preventDefault();
    const f = ev.target, q = new URLSearchParams();
    q.set("topic", f.topic.value);
    q.set("partition", f.partition.value || "0");
    if (f.seek.value === "offset" && f.position.value !== "") q.set("offset", f.position.value);
    if (f.seek.value === "timestamp" && f.position.value !== "") {
      const ms = /^\d+$/.test(f.position.value) ? Number(f.position.value) : Date.parse(f.position.value);
      q.set("timestamp", String(ms));
    }
    q.set("limit", f.limit.value || "20");
    location.hash = `#/messages?${q}`;
  } },
    h("label", {}, "Topic", h("select", { name: "topic", id: "seek-topic" },
      topics.map(t => h("option", { value: t.name, selected: t.name === topic }, t.name)))),
    h("label", {}, "Partition", h("input", { name: "partition", id: "seek-partition", type: "number", min: 0, value: params.get("partition") || "0" })),
    h("label", {}, "Seek by", h("select", { name: "seek", id: "seek-by" },
      h("option", { value: "offset", selected: !params.has("timestamp") }, "offset"),
      h("option", { value: "timestamp", selected: params.has("timestamp") }, "timestamp (ms or ISO date)"))),
    h("label", {}, "Position", h("input", { name: "position", id: "seek-position", placeholder: "newest", value: params.get("offset") || params.get("timestamp") || "" })),
    h("label", {}, "Records", h("input", { name: "limit", type: "number", min: 1, max: 200, value: params.get("limit") || "20" })),
    h("button", { type: "submit", id: "seek-button" }, "Show"));
  const out = [h("h1", {}, "Messages"), form];
  if (!topic) return out.concat(h("p", { class: "muted" }, "No topics yet."));
  const q = new URLSearchParams();
  q.set("topic", topic);
  q.set("partition", params.get("partition") || "0");
  for (const k of ["offset", "timestamp", "limit"]) if (params.get(k)) q.set(k, params.get(k));
  let page;
  try { page = await api(`/api/messages?${q}`); } catch (e) { return out.concat(failure(e)); }
  const rows = page.records.map(r => h("tr", { class: "record", "data-offset": r.offset },
    h("td", { class: "num" }, r.offset),
    h("td", {}, new Date(r.timestamp).toISOString()),
    h("td", { class: "key" }, payload(r.key)),
    h("td", { class: "value" }, payload(r.value)),
    h("td", { class: "headers" }, r.headers.map(x => h("div", {}, h("b", {}, x.key), ": ", payload(x.value))))));
  const next = new URLSearchParams(q);
  next.delete("timestamp");
  next.set("offset", page.next_offset);
  return out.concat(
    h("p", { class: "muted" }, `Partition ${page.partition}: offsets ${page.log_start_offset} to ${page.high_watermark - 1}; showing from ${page.start_offset}.`),
    rows.length ? table("records-table", [["Offset", "num"], ["Timestamp"], ["Key"], ["Value"], ["Headers"]], rows)
      : h("p", { class: "muted", id: "no-records" }, "No records at this position."),
    page.next_offset < page.high_watermark ? h("a", { href: `#/messages?${next}`, id: "next-page" }, "Next page →") : null);
}

// ---- Router --------------------------------------------------------------------------------

async function route() {
  clearTimeout(refreshTimer);
  const hash = location.hash.replace(/^#/, "") || "/cluster";
  const [path, query] = hash.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query || "");
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.getAttribute("href") === `#/${parts[0] || "cluster"}`);
  }
  let view, refresh = 0;
  if (parts[0] === "topics" && parts[1]) { view = () => topicView(parts[1]); refresh = 5000; }
  else if (parts[0] === "topics") view = topicsView;
  else if (parts[0] === "groups" && parts[1]) { view = () => groupView(parts[1]); refresh = 5000; }
  else if (parts[0] === "groups") { view = groupsView; refresh = 5000; }
  else if (parts[0] === "messages") view = () => messagesView(params);
  else { view = clusterView; refresh = 5000; }
  try {
    show(await view());
    statusLine.textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.loaded = hash;
  } catch (e) {
    show(failure(e));
    document.body.dataset.loaded = hash;
  }
  if (refresh) refreshTimer = setTimeout(() => { if (!document.activeElement || document.activeElement === document.body) route(); }, refresh);
}

window.addEventListener("hashchange", route);
route();
