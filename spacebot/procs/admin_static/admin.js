// Spacebot admin page: reads and acts through the operator API (docs/api.md). No build step, no
// libraries. Data from the API is only ever put in the page as text (textContent, attributes),
// never parsed as HTML.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "spacebot.adminToken";
  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    agent: "",
    tab: "processes",
    conversation: "",
    oldest: 0,
    memory: 0,
    eventsPaused: false,
    events: null, // AbortController of the event stream
  };
  window.spacebotAdmin = { state };

  // ---- DOM helpers ---------------------------------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  // Rows into a table; each cell is labelled with its column (narrow screens show rows as cards).
  function fill(tbody, rows, empty, columns) {
    tbody.replaceChildren();
    if (!rows.length) {
      tbody.append(el("tr", {}, el("td", { colspan: columns, class: "muted" }, empty)));
      return;
    }
    const labels = Array.from(tbody.parentElement.tHead.rows[0].cells).map((th) => th.textContent);
    for (const row of rows) {
      Array.from(row.cells).forEach((td, i) => { td.dataset.label = labels[i] || ""; });
      tbody.append(row);
    }
  }

  function when(ts) {
    if (!ts) return "—";
    return new Date(ts * 1000).toLocaleString();
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 60) return seconds.toFixed(1) + " s";
    if (seconds < 3600) return (seconds / 60).toFixed(1) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }

  function took(start, end) {
    return end ? age(end - start) : "running";
  }

  function money(value) {
    return "$" + (value < 0.01 && value > 0 ? value.toFixed(5) : value.toFixed(2));
  }

  function showError(text) {
    $("error").querySelector(".text").textContent = text;
    $("error").hidden = false;
  }
  $("error").querySelector(".close").addEventListener("click", () => { $("error").hidden = true; });

  // A button that acts on its second click (a first click arms it for a few seconds).
  function confirmButton(label, action) {
    const button = el("button", { type: "button", class: "danger" }, label);
    let timer = 0;
    button.addEventListener("click", async () => {
      if (!button.classList.contains("armed")) {
        button.classList.add("armed");
        button.textContent = "Sure? " + label;
        timer = setTimeout(() => { button.classList.remove("armed"); button.textContent = label; }, 4000);
        return;
      }
      clearTimeout(timer);
      button.disabled = true;
      try { await action(); } finally {
        button.disabled = false;
        button.classList.remove("armed");
        button.textContent = label;
      }
    });
    return button;
  }

  // ---- API -----------------------------------------------------------------------------------

  class Unauthorized extends Error {}

  function headers() {
    return state.token ? { Authorization: "Bearer " + state.token } : {};
  }

  async function api(path, options) {
    const response = await fetch("api/" + path, { ...(options || {}), headers: headers() });
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (response.status === 401) {
      askToken();
      throw new Unauthorized("the API wants its token");
    }
    if (!response.ok && !(path === "health" && response.status === 503)) {
      throw new Error((body && body.error) || "HTTP " + response.status + " for " + path);
    }
    return body;
  }

  function withAgent(path, params) {
    const query = new URLSearchParams(params || {});
    if (state.agent) query.set("agent", state.agent);
    const text = query.toString();
    return text ? path + "?" + text : path;
  }

  async function guarded(what, work) {
    try {
      return await work();
    } catch (e) {
      if (!(e instanceof Unauthorized)) showError(what + ": " + e.message);
      return undefined;
    }
  }

  function askToken() {
    $("login").hidden = false;
    stopEvents();
  }

  $("login").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);
    $("login-error").textContent = "";
    try {
      await api("health");
    } catch (e) {
      $("login-error").textContent = e instanceof Unauthorized ? "wrong token" : e.message;
      return;
    }
    $("login").hidden = true;
    $("token").value = "";
    $("logout").hidden = false;
    start();
  });

  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = "";
    $("logout").hidden = true;
    askToken();
  });

  // ---- health and agents ---------------------------------------------------------------------

  async function loadHealth() {
    const health = await api("health");
    const status = $("health");
    const down = Object.entries(health.processes).filter(([, s]) => !["ready", "idle", "busy"].includes(s));
    status.textContent = down.length ? "down: " + down.map(([id, s]) => id + " " + s).join(", ") : "healthy";
    status.className = "status " + (down.length ? "bad" : "ok");
    const agents = Object.keys(health.processes).filter((id) => id.startsWith("memory:")).map((id) => id.slice(7));
    const select = $("agent");
    const known = Array.from(select.options).map((o) => o.value);
    if (agents.join() !== known.join()) {
      select.replaceChildren(...agents.map((a) => el("option", { value: a }, a)));
      if (!state.agent || !agents.includes(state.agent)) state.agent = agents[0] || "";
      select.value = state.agent;
    }
  }

  $("agent").addEventListener("change", () => {
    state.agent = $("agent").value;
    state.conversation = "";
    refresh();
  });

  // ---- processes -----------------------------------------------------------------------------

  const UNKILLABLE = new Set(["supervisor", "zygote", "zygote:spare", "gateway:api"]);

  async function loadProcesses() {
    const status = await api("status");
    const rows = status.processes.map((p) => el("tr", { dataset: { id: p.id } },
      el("td", {}, p.id),
      el("td", {}, p.kind),
      el("td", {}, el("span", { class: "state " + p.state }, p.state + (p.hibernated ? " (hibernated)" : ""))),
      el("td", { class: "task" }, p.task),
      el("td", {}, age(p.heartbeat_age_s)),
      el("td", {}, p.pid ? p.rss_mb.toFixed(0) + " MB" : "—"),
      el("td", {}, p.pid && !UNKILLABLE.has(p.id)
        ? confirmButton("Kill", () => guarded("kill " + p.id, async () => {
          await api("processes/" + encodeURIComponent(p.id) + "/kill", { method: "POST" });
          await loadProcesses();
        }))
        : ""),
    ));
    fill($("processes").tBodies[0], rows, "no processes", 7);
    const running = status.processes.filter((p) => p.pid).length;
    $("proc-summary").textContent = running + " running, up " + age(status.uptime_s);
  }

  // ---- conversations -------------------------------------------------------------------------

  async function loadConversations() {
    const conversations = await api(withAgent("conversations"));
    const list = $("conversations");
    list.replaceChildren();
    if (!conversations.length) list.append(el("li", { class: "muted" }, "no conversations yet"));
    for (const c of conversations) {
      list.append(el("li", {
        class: c.id === state.conversation ? "conversation active" : "conversation",
        dataset: { id: c.id },
        onclick: () => openConversation(c.id, c.display_name || c.id),
      },
      c.live ? el("span", { class: "live", title: "its process is " + c.state }) : null,
      c.display_name || c.id,
      el("span", { class: "sub" }, c.platform + " · " + when(c.last_activity_at) + (c.state ? " · " + c.state : ""))));
    }
  }

  function messageNode(m) {
    return el("div", { class: "msg", dataset: { role: m.role, id: m.id } },
      el("div", { class: "meta" }, m.author_name + " · " + m.role + " · " + when(m.created_at)
        + (m.reply_state !== "none" ? " · " + m.reply_state : "")),
      el("div", { class: "text" }, m.text),
      m.reactions.length ? el("div", { class: "meta" }, m.reactions.join(" ")) : null);
  }

  async function openConversation(id, title) {
    state.conversation = id;
    for (const li of $("conversations").children) li.classList.toggle("active", li.dataset.id === id);
    $("transcript-title").textContent = title;
    $("transcript").replaceChildren();
    state.oldest = 0;
    await guarded("transcript", () => loadMessages(false));
  }

  async function loadMessages(older) {
    const params = { limit: "50" };
    if (older && state.oldest) params.before = String(state.oldest);
    const id = state.conversation;
    const messages = await api(withAgent("conversations/" + encodeURIComponent(id) + "/messages", params));
    if (id !== state.conversation) return;
    const nodes = messages.map(messageNode);
    if (older) $("transcript").prepend(...nodes);
    else $("transcript").replaceChildren(...nodes);
    if (messages.length) state.oldest = messages[0].id;
    $("older").hidden = messages.length < 50;
    if (!older && !messages.length) $("transcript").append(el("p", { class: "muted" }, "no messages"));
  }

  $("older").addEventListener("click", () => guarded("older messages", () => loadMessages(true)));

  // ---- memories ------------------------------------------------------------------------------

  async function loadMemoryTypes() {
    const doc = await api("openapi.json");
    const types = (doc.components.schemas.MemoryType || {}).enum || [];
    const select = $("memory-type");
    select.replaceChildren(el("option", { value: "" }, "any type"), ...types.map((t) => el("option", { value: t }, t)));
  }

  async function loadMemories() {
    const params = { limit: "50", sort: $("memory-sort").value };
    const q = $("memory-q").value.trim();
    if (q) params.q = q;
    if ($("memory-type").value) params.type = $("memory-type").value;
    const hits = await api(withAgent("memories", params));
    const list = $("memories");
    list.replaceChildren();
    if (!hits.length) list.append(el("li", { class: "muted" }, q ? "nothing matches" : "no memories yet"));
    for (const hit of hits) {
      const m = hit.memory;
      list.append(el("li", {
        class: m.id === state.memory ? "memory active" : "memory",
        dataset: { id: m.id },
        onclick: () => guarded("memory", () => openMemory(m.id)),
      }, m.content.length > 160 ? m.content.slice(0, 160) + "…" : m.content,
      el("span", { class: "sub" }, "#" + m.id + " · " + m.type + " · importance " + m.importance.toFixed(2)
        + " · " + when(m.created_at))));
    }
  }

  async function openMemory(id) {
    state.memory = id;
    for (const li of $("memories").children) li.classList.toggle("active", li.dataset.id === String(id));
    const detail = await api(withAgent("memories/" + id));
    const m = detail.memory;
    const box = $("memory-detail");
    const edges = detail.edges.map((e) => {
      const other = e.source_id === id ? e.target_id : e.source_id;
      const arrow = e.source_id === id ? "→ " : "← ";
      return el("li", {}, arrow + e.relation + " ",
        el("a", { class: "edge", dataset: { id: other }, onclick: () => guarded("memory", () => openMemory(other)) },
          "#" + other),
        " (weight " + e.weight.toFixed(2) + ")");
    });
    box.replaceChildren(
      el("h2", {}, "Memory #" + m.id + " ", el("span", { class: "muted" }, m.type + (m.forgotten ? " · forgotten" : ""))),
      el("div", { class: "memory-content" }, m.content),
      el("p", { class: "muted" }, "importance " + m.importance.toFixed(2) + " · saved " + when(m.created_at)
        + " · recalled " + m.access_count + "× · source " + (m.source || "—")
        + (m.channel ? " · conversation " + m.channel : "")),
      el("h3", {}, "Associations (" + edges.length + ")"),
      edges.length ? neighbourGraph(m.id, detail.edges) : null,
      edges.length ? el("ul", { id: "edges" }, ...edges) : el("p", { class: "muted" }, "none"),
      m.forgotten ? null : confirmButton("Forget", () => guarded("forget", async () => {
        await api(withAgent("memories/" + m.id), { method: "DELETE" });
        await openMemory(m.id);
        await loadMemories();
      })),
    );
  }

  // A small graph: the memory in the middle, its neighbours around it (click one to open it).
  function neighbourGraph(id, edges) {
    const others = [];
    for (const e of edges) {
      const other = e.source_id === id ? e.target_id : e.source_id;
      let node = others.find((n) => n.id === other);
      if (!node) { node = { id: other, edges: [] }; others.push(node); }
      node.edges.push(e);
    }
    const shown = others.slice(0, 12);
    const W = 320, H = 240, cx = W / 2, cy = H / 2, r = 88;
    const graph = svg("svg", { id: "memory-graph", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
      "aria-label": "memory #" + id + " and its " + others.length + " neighbours" });
    shown.forEach((n, i) => {
      const angle = (2 * Math.PI * i) / shown.length - Math.PI / 2;
      n.x = cx + r * Math.cos(angle);
      n.y = cy + r * Math.sin(angle);
      const weight = Math.max(...n.edges.map((e) => e.weight));
      const line = svg("line", { class: "link", x1: cx, y1: cy, x2: n.x, y2: n.y, "stroke-width": 1 + 3 * weight });
      line.append(svg("title", {}, n.edges.map((e) => (e.source_id === id ? "→ " : "← ") + e.relation
        + " (" + e.weight.toFixed(2) + ")").join(", ")));
      graph.append(line);
    });
    for (const n of shown) {
      const g = svg("g", { class: "node", "data-id": n.id, tabindex: 0 });
      g.append(svg("circle", { cx: n.x, cy: n.y, r: 17 }),
        svg("text", { x: n.x, y: n.y + 4, "text-anchor": "middle" }, "#" + n.id),
        svg("text", { class: "rel", x: n.x, y: n.y + 30, "text-anchor": "middle" }, n.edges[0].relation));
      g.addEventListener("click", () => guarded("memory", () => openMemory(n.id)));
      graph.append(g);
    }
    const centre = svg("g", { class: "node centre" });
    centre.append(svg("circle", { cx, cy, r: 22 }), svg("text", { x: cx, y: cy + 4, "text-anchor": "middle" }, "#" + id));
    graph.append(centre);
    return el("div", { class: "graph" }, graph,
      others.length > shown.length ? el("p", { class: "muted" }, (others.length - shown.length) + " more below") : null);
  }

  $("memory-search").addEventListener("submit", (ev) => {
    ev.preventDefault();
    guarded("memories", loadMemories);
  });
  $("memory-type").addEventListener("change", () => guarded("memories", loadMemories));
  $("memory-sort").addEventListener("change", () => guarded("memories", loadMemories));

  // ---- ingest --------------------------------------------------------------------------------

  const INGEST_STATES = { waiting: "waiting", ingesting: "ingesting", done: "done", retry: "will retry", failed: "failed" };

  async function loadIngest() {
    const files = await api(withAgent("ingest"));
    const rows = files.map((f) => {
      const fraction = f.total ? Math.min(1, f.done / f.total) : 0;
      const bar = el("div", { class: "progress " + f.state, role: "progressbar", "aria-valuemin": 0,
        "aria-valuemax": f.total, "aria-valuenow": f.done },
      el("div", { class: "fill" }));
      bar.firstChild.style.width = (fraction * 100).toFixed(1) + "%";  // CSSOM: allowed by the CSP
      const retry = f.state === "retry" && f.attempt
        ? " (attempt " + f.attempt + (f.max_attempts ? " of " + f.max_attempts : "") + ")" : "";
      return el("tr", { dataset: { file: f.file, state: f.state } },
        el("td", { class: "task" }, f.file),
        el("td", { class: "progress-cell" }, bar,
          el("span", { class: "chunks" }, f.total ? f.done + " / " + f.total + " chunks" : "—")),
        el("td", {}, el("span", { class: "state " + f.state }, (INGEST_STATES[f.state] || f.state) + retry)),
        el("td", { class: "task error-text" }, f.error),
        el("td", {}, when(f.updated_at)));
    });
    fill($("ingest").tBodies[0], rows, "nothing to ingest (drop files in the agent's ingest folder)", 5);
    const count = (s) => files.filter((f) => f.state === s).length;
    const parts = ["ingesting", "waiting", "retry", "failed", "done"].filter((s) => count(s))
      .map((s) => count(s) + " " + INGEST_STATES[s]);
    $("ingest-summary").textContent = parts.join(", ");
  }

  let ingestTimer = 0;
  function scheduleIngest() {
    if (ingestTimer) return;
    ingestTimer = setTimeout(() => { ingestTimer = 0; guarded("ingest", loadIngest); }, 300);
  }

  // ---- usage charts --------------------------------------------------------------------------

  function sumBy(rows, key) {
    const totals = new Map();
    for (const r of rows) {
      const k = r[key];
      const t = totals.get(k) || { cost: 0, tokens: 0, requests: 0 };
      t.cost += r.cost_usd;
      t.tokens += r.input_tokens + r.output_tokens + r.cached_tokens;
      t.requests += r.requests;
      totals.set(k, t);
    }
    return totals;
  }

  function lastDays(days) {
    const out = [];
    const now = Date.now();
    for (let i = days - 1; i >= 0; i--) out.push(new Date(now - i * 86400000).toISOString().slice(0, 10));
    return out;
  }

  // Vertical bars per day: cost (dark) and tokens (light, own scale).
  function dayChart(box, labels, totals) {
    const W = Math.max(360, labels.length * 36 + 60), H = 200, left = 50, bottom = 40, top = 16;
    const costs = labels.map((d) => (totals.get(d) || { cost: 0 }).cost);
    const tokens = labels.map((d) => (totals.get(d) || { tokens: 0 }).tokens);
    const maxCost = Math.max(...costs, 0), maxTokens = Math.max(...tokens, 0);
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "cost per day" });
    chart.append(svg("line", { class: "axis", x1: left, y1: H - bottom, x2: W - 4, y2: H - bottom }));
    chart.append(svg("text", { x: 2, y: top }, money(maxCost)));
    chart.append(svg("text", { x: 2, y: top + 14 }, maxTokens.toLocaleString() + " tok"));
    const step = (W - left - 8) / labels.length, bar = Math.max(4, step / 2 - 3), span = H - bottom - top - 14;
    labels.forEach((day, i) => {
      const x = left + i * step + 2;
      const hc = maxCost ? (costs[i] / maxCost) * span : 0;
      const ht = maxTokens ? (tokens[i] / maxTokens) * span : 0;
      const cost = svg("rect", { class: "bar", x, y: H - bottom - hc, width: bar, height: hc, "data-day": day });
      cost.append(svg("title", {}, day + ": " + money(costs[i])));
      const tok = svg("rect", { class: "bar2", x: x + bar + 1, y: H - bottom - ht, width: bar, height: ht });
      tok.append(svg("title", {}, day + ": " + tokens[i].toLocaleString() + " tokens"));
      chart.append(cost, tok);
      if (labels.length <= 16 || i % Math.ceil(labels.length / 12) === 0) {
        chart.append(svg("text", { x, y: H - bottom + 14 }, day.slice(5)));
      }
    });
    box.replaceChildren(chart);
  }

  // Horizontal bars per key (model, process kind): cost, with tokens and calls written beside.
  function barChart(box, totals, label) {
    const entries = Array.from(totals.entries()).sort((a, b) => b[1].cost - a[1].cost || b[1].tokens - a[1].tokens);
    if (!entries.length) {
      box.replaceChildren(el("p", { class: "muted" }, "no model calls in this period"));
      return;
    }
    const W = 560, row = 26, H = entries.length * row + 8, left = 170, right = 150;
    const max = Math.max(...entries.map(([, t]) => t.cost), 0);
    const maxTokens = Math.max(...entries.map(([, t]) => t.tokens), 1);
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": label });
    entries.forEach(([key, t], i) => {
      const y = 4 + i * row;
      const width = max ? (t.cost / max) * (W - left - right) : (t.tokens / maxTokens) * (W - left - right);
      chart.append(svg("text", { x: 4, y: y + 15, class: "key" }, key.length > 26 ? key.slice(0, 25) + "…" : key));
      const rect = svg("rect", { class: "bar", x: left, y: y + 3, width: Math.max(width, 1), height: row - 8, "data-key": key });
      rect.append(svg("title", {}, key + ": " + money(t.cost) + ", " + t.tokens.toLocaleString() + " tokens"));
      chart.append(rect);
      chart.append(svg("text", { x: left + Math.max(width, 1) + 6, y: y + 15 },
        money(t.cost) + " · " + t.tokens.toLocaleString() + " tok · " + t.requests));
    });
    box.replaceChildren(chart);
  }

  async function loadUsage() {
    const days = Number($("usage-days").value);
    const usage = await api("usage?days=" + days);
    const rows = usage.rows.filter((r) => !state.agent || r.agent === state.agent || r.agent === "unknown");
    dayChart($("chart-days"), lastDays(days), sumBy(rows, "day"));
    barChart($("chart-models"), sumBy(rows, "model"), "cost per model");
    barChart($("chart-kinds"), sumBy(rows, "process"), "cost per process kind");
    const total = rows.reduce((s, r) => s + r.cost_usd, 0);
    const calls = rows.reduce((s, r) => s + r.requests, 0);
    $("usage-summary").textContent = calls + " model calls, " + money(total) + " estimated, counted since "
      + when(usage.since) + " (the API keeps no older usage)";
  }

  $("usage-days").addEventListener("change", () => guarded("usage", loadUsage));

  // ---- cron ----------------------------------------------------------------------------------

  async function cronAction(job, action) {
    await api(withAgent("cron/" + encodeURIComponent(job) + "/" + action), { method: "POST" });
    await loadCron();
  }

  async function loadCron() {
    const cron = await api(withAgent("cron"));
    const lastRun = new Map();
    for (const r of cron.runs) if (!lastRun.has(r.job_id)) lastRun.set(r.job_id, r);
    const jobs = cron.jobs.map((j) => {
      const last = lastRun.get(j.id);
      const button = (label, action) => el("button", {
        type: "button", dataset: { action }, onclick: () => guarded("cron " + action, () => cronAction(j.id, action)),
      }, label);
      return el("tr", { dataset: { id: j.id } },
        el("td", {}, j.id, el("span", { class: "sub muted" }, " " + (j.prompt.length > 80 ? j.prompt.slice(0, 80) + "…" : j.prompt))),
        el("td", {}, j.cron || "every " + age(j.every)),
        el("td", {}, j.enabled ? "yes" : "no" + (j.disabled_reason ? " (" + j.disabled_reason + ")" : "")),
        el("td", {}, when(j.next_run_at)),
        el("td", {}, last ? when(last.started_at) + " · " + last.outcome : when(j.last_run_at)),
        el("td", {}, String(j.failures)),
        el("td", {}, button("Run now", "run"), " ", j.enabled ? button("Disable", "disable") : button("Enable", "enable")));
    });
    fill($("cron-jobs").tBodies[0], jobs, "no cron jobs", 7);
    const runs = cron.runs.map((r) => el("tr", { dataset: { id: r.id } },
      el("td", {}, r.job_id), el("td", {}, when(r.started_at)), el("td", {}, took(r.started_at, r.ended_at)),
      el("td", {}, r.outcome), el("td", {}, r.delivered ? "yes" : "no"), el("td", { class: "task" }, r.error)));
    fill($("cron-runs").tBodies[0], runs, "no runs yet", 6);
  }

  // ---- history -------------------------------------------------------------------------------

  async function loadHistory() {
    const runs = await api(withAgent("history", { limit: "100" }));
    const rows = runs.map((r) => el("tr", {},
      el("td", {}, r.proc_id), el("td", {}, r.kind), el("td", {}, when(r.started_at)),
      el("td", {}, took(r.started_at, r.ended_at)),
      el("td", {}, r.exit_code === null ? "—" : String(r.exit_code)),
      el("td", { class: "task" }, Object.keys(r.detail).length ? JSON.stringify(r.detail) : "")));
    fill($("history").tBodies[0], rows, "no history yet", 6);
  }

  // ---- event stream (SSE read with fetch, so the token goes in a header, not the URL) --------

  function stopEvents() {
    if (state.events) state.events.abort();
    state.events = null;
  }

  function addEvent(event) {
    if (state.eventsPaused) return;
    const list = $("events");
    const body = JSON.stringify(event.body);
    list.prepend(el("li", { dataset: { topic: event.topic } },
      el("span", { class: "muted" }, new Date(event.ts * 1000).toLocaleTimeString() + " "),
      el("span", { class: "topic" }, event.topic),
      body.length > 400 ? body.slice(0, 400) + "…" : body));
    while (list.children.length > 300) list.lastChild.remove();
    if (event.topic.startsWith("proc.") && state.tab === "processes") scheduleProcesses();
    if (/^memory\.[^.]+\.ingest$/.test(event.topic) && state.tab === "ingest") scheduleIngest();
  }

  let procTimer = 0;
  function scheduleProcesses() {
    if (procTimer) return;
    procTimer = setTimeout(() => { procTimer = 0; guarded("processes", loadProcesses); }, 500);
  }

  async function streamEvents() {
    stopEvents();
    const controller = new AbortController();
    state.events = controller;
    const prefix = $("event-prefix").value.trim();
    let delay = 1000;
    while (state.events === controller) {
      try {
        const response = await fetch("api/events?prefix=" + encodeURIComponent(prefix),
          { headers: headers(), signal: controller.signal });
        if (response.status === 401) { askToken(); return; }
        if (!response.ok) throw new Error("HTTP " + response.status);
        $("event-status").textContent = "live";
        delay = 1000;
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const chunk = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            let type = "message", data = "";
            for (const line of chunk.split("\n")) {
              if (line.startsWith("event: ")) type = line.slice(7);
              else if (line.startsWith("data: ")) data += line.slice(6);
            }
            if (!data) continue;
            const parsed = JSON.parse(data);
            if (type === "dropped") addEvent({ topic: "(dropped)", ts: Date.now() / 1000, body: parsed });
            else addEvent(parsed);
          }
        }
      } catch (e) {
        if (controller.signal.aborted) return;
      }
      $("event-status").textContent = "reconnecting…";
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 15000);
    }
  }

  $("event-prefix").addEventListener("change", streamEvents);
  $("event-pause").addEventListener("click", () => {
    state.eventsPaused = !state.eventsPaused;
    $("event-pause").textContent = state.eventsPaused ? "Resume" : "Pause";
  });

  // ---- tabs and refresh ----------------------------------------------------------------------

  const loaders = {
    processes: loadProcesses,
    conversations: loadConversations,
    memories: loadMemories,
    ingest: loadIngest,
    usage: loadUsage,
    cron: loadCron,
    history: loadHistory,
    events: async () => {},
  };

  function show(tab) {
    state.tab = tab;
    for (const b of $("tabs").querySelectorAll("button")) b.classList.toggle("active", b.dataset.tab === tab);
    for (const name of Object.keys(loaders)) $("panel-" + name).hidden = name !== tab;
    location.hash = tab;
    return guarded(tab, loaders[tab]);
  }

  for (const b of $("tabs").querySelectorAll("button")) b.addEventListener("click", () => show(b.dataset.tab));

  async function refresh() {
    await guarded("health", loadHealth);
    await show(state.tab);
    if (state.tab === "conversations" && state.conversation) await guarded("transcript", () => loadMessages(false));
  }

  let ticker = 0;
  async function start() {
    await refresh();
    await guarded("memory types", loadMemoryTypes);
    if ($("login").hidden) streamEvents();
    clearInterval(ticker);
    ticker = setInterval(() => {
      if (!$("login").hidden) return;
      guarded("health", loadHealth);
      if (state.tab === "processes") guarded("processes", loadProcesses);
      if (state.tab === "ingest") guarded("ingest", loadIngest);  // new files in the folder
    }, 5000);
  }

  const initial = location.hash.slice(1);
  if (initial in loaders) state.tab = initial;
  if (state.token) $("logout").hidden = false;
  window.spacebotAdmin.show = show;
  start();
})();
