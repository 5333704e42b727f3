// dpserve fleet dashboard: polls GET <this page>/data just after each gateway sample, keeps the
// 15-minute history client-side (the gateway sends only new samples), draws tables and canvas charts.
// Everything from the server is written with textContent, never as HTML.
"use strict";
(() => {
  const DATA_URL = location.pathname.replace(/\/+$/, "") + "/data";
  const KEY_STORE = "dpserve-admin-key";
  const COLORS = ["#2f5fd0", "#d0522f", "#1a9b62", "#9b1a8f", "#c9a000", "#1a8f9b", "#6b4fd0",
                  "#8f5a1a", "#d02f7a", "#4f8f1a"];
  const state = { seq: 0, historyS: 900, intervalS: 1, times: [], fleet: {}, replicas: {},
                  key: sessionStorage.getItem(KEY_STORE), rows: new Map(), colors: new Map() };
  const $ = (id) => document.getElementById(id);

  // ---- polling --------------------------------------------------------------------------------
  async function poll() {
    let delayMs = 1000;
    try {
      const headers = state.key ? { Authorization: "Bearer " + state.key } : {};
      const resp = await fetch(DATA_URL + "?since=" + state.seq, { headers, cache: "no-store" });
      if (resp.status === 401) {
        askForKey(state.key ? "the gateway refused that key" : "");
        return; // resumes when a key is entered
      }
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      const doc = await resp.json();
      render(doc);
      setStatus("live", "live");
      // Just after the gateway's next sample, and at least twice a second: a replica going down or
      // coming back is sampled at once, between ticks, and shows within half a second.
      delayMs = Math.min(500, Math.max(100, (doc.next_sample_in_s ?? 1) * 1000 + 60));
    } catch (err) {
      setStatus("gateway unreachable (" + err.message + ")", "stale");
    }
    setTimeout(poll, delayMs);
  }

  function askForKey(message) {
    $("key-form").hidden = false;
    $("key-error").textContent = message;
    setStatus("admin key needed", "stale");
    $("key-input").focus();
  }

  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.key = $("key-input").value.trim();
    sessionStorage.setItem(KEY_STORE, state.key);
    $("key-form").hidden = true;
    poll();
  });

  function setStatus(text, cls) {
    const el = $("status");
    el.textContent = text;
    el.className = "status " + cls;
  }

  // ---- history --------------------------------------------------------------------------------
  function mergeSeries(series) {
    if (!series) return;
    if (series.first_seq !== state.seq + 1 || state.times.length === 0) {
      state.times = []; state.fleet = {}; state.replicas = {}; // a gap: start over from what came
    }
    const before = state.times.length, added = series.times.length;
    state.times.push(...series.times);
    mergeColumns(state.fleet, series.fleet, before, added);
    const labels = new Set([...Object.keys(state.replicas), ...Object.keys(series.replicas)]);
    for (const label of labels) {
      state.replicas[label] ??= {};
      mergeColumns(state.replicas[label], series.replicas[label] || {}, before, added);
    }
    const keep = Math.max(1, Math.round(state.historyS / state.intervalS));
    const cut = state.times.length - keep;
    if (cut > 0) {
      state.times.splice(0, cut);
      trimColumns(state.fleet, cut);
      for (const [label, cols] of Object.entries(state.replicas)) {
        trimColumns(cols, cut);
        if (Object.keys(cols).length === 0) delete state.replicas[label];
      }
    }
  }

  function mergeColumns(target, incoming, before, added) {
    for (const name of Object.keys(target)) {
      if (!(name in incoming)) for (let i = 0; i < added; i++) target[name].push(null);
    }
    for (const [name, values] of Object.entries(incoming)) {
      if (!(name in target)) target[name] = new Array(before).fill(null);
      target[name].push(...values);
    }
  }

  function trimColumns(cols, cut) {
    for (const [name, values] of Object.entries(cols)) {
      values.splice(0, cut);
      if (values.every((v) => v === null)) delete cols[name];
    }
  }

  // ---- rendering ------------------------------------------------------------------------------
  function render(doc) {
    state.historyS = doc.history_s; state.intervalS = doc.interval_s;
    mergeSeries(doc.series);
    state.seq = doc.seq;
    $("policy").textContent = "policy " + doc.policy;
    $("updated").textContent = doc.time ? "sample " + new Date(doc.time * 1000).toLocaleTimeString() : "";
    $("json-link").href = DATA_URL + "?series=0";
    renderDiagnosis(doc.diagnosis);
    renderTiles(doc.fleet);
    renderReplicas(doc.replicas, doc.diagnosis);
    renderDecisions(doc.fleet.decisions);
    renderRejected(doc.fleet.rejected);
    renderTenants(doc.tenants);
    renderCharts();
  }

  function renderDiagnosis(d) {
    const box = $("diagnosis");
    box.className = "diagnosis state-" + (d ? d.state : "none");
    $("diagnosis-text").textContent = d ? d.message : "waiting for the first sample…";
  }

  function renderTiles(f) {
    $("t-healthy").textContent = f.healthy + " / " + f.replicas;
    $("t-healthy").className = "tile-value " + (f.healthy < f.replicas ? "bad" : "ok");
    $("t-requests").textContent = num(f.request_rate, 1);
    $("t-tokens").textContent = num(f.generation_tokens_per_s, 0);
    $("t-inflight").textContent = f.in_flight;
    $("t-queue").textContent = f.queue_depth;
    $("t-429").textContent = num(f.rejected_429_per_s, 1) + " (" + f.rejected_429_total + ")";
  }

  const COLUMNS = [
    ["label", (r) => r.label, ""],
    ["health", (r) => health(r), (r) => "health-" + health(r)],
    ["circuit", (r) => r.circuit_state ?? "–", (r) => "circuit-" + r.circuit_state],
    ["in_flight", (r) => r.in_flight, "num"],
    ["running", (r) => num(r.running, 0), "num"],
    ["waiting", (r) => num(r.waiting, 0), "num"],
    ["tokens", (r) => num(r.generation_tokens_per_s, 0), "num"],
    ["kv", (r) => pct(r.kv_cache_usage), "num"],
    ["prefix", (r) => pct(r.prefix_cache_hit_rate), "num"],
    ["ttft50", (r) => ms(r.ttft_p50_s), "num"],
    ["ttft99", (r) => ms(r.ttft_p99_s), "num"],
    ["errors", (r) => r.errors, "num"],
    ["retries", (r) => r.retries, "num"],
    ["migrations", (r) => r.migrations, "num"],
    ["restarts", (r) => r.restarts ?? "–", "num"],
    ["verdict", (r) => r.finding ?? "", "verdict"],
  ];

  function health(r) {
    if (r.removed) return "removed";
    if (!r.healthy) return "down";
    return r.draining ? "draining" : "up";
  }

  function renderReplicas(replicas, diagnosis) {
    const body = document.querySelector("#replicas tbody");
    const seen = new Set();
    for (const r of replicas) {
      seen.add(r.label);
      let tr = state.rows.get(r.label);
      if (!tr) {
        tr = document.createElement("tr");
        tr.dataset.replica = r.label;
        for (const [name] of COLUMNS) {
          const td = document.createElement("td");
          td.dataset.col = name;
          tr.appendChild(td);
        }
        state.rows.set(r.label, tr);
      }
      body.appendChild(tr); // keeps the server's order
      tr.dataset.health = health(r);
      tr.className = [r.healthy ? "" : (r.removed ? "removed" : "down"),
                      diagnosis && diagnosis.bottleneck === r.label ? "bottleneck" : ""].join(" ").trim();
      COLUMNS.forEach(([, value, cls], i) => {
        const td = tr.children[i];
        td.textContent = String(value(r));
        td.className = typeof cls === "function" ? cls(r) : cls;
      });
      tr.children[0].title = r.url ? r.label + " · " + (r.id ?? "") + " · " + r.url : r.label;
    }
    for (const [label, tr] of state.rows) {
      if (!seen.has(label)) { tr.remove(); state.rows.delete(label); }
    }
  }

  function fillTable(selector, rows) {
    const body = document.querySelector(selector + " tbody");
    body.replaceChildren(...rows.map((cells) => {
      const tr = document.createElement("tr");
      for (const cell of cells) tr.appendChild(cell instanceof Node ? wrapCell(cell) : textCell(cell));
      return tr;
    }));
  }

  function textCell(value) {
    const td = document.createElement("td");
    td.textContent = String(value);
    if (typeof value === "number") td.className = "num";
    return td;
  }

  function wrapCell(node) {
    const td = document.createElement("td");
    td.appendChild(node);
    return td;
  }

  function renderDecisions(decisions) {
    const total = decisions.reduce((sum, d) => sum + d.total, 0) || 1;
    fillTable("#decisions", decisions.map((d) => [d.reason, Number(d.per_s.toFixed(1)), d.total,
                                                  bar(d.total / total, null)]));
  }

  function renderRejected(rejected) {
    fillTable("#rejected", Object.entries(rejected).map(([reason, n]) => [reason, n]));
  }

  function renderTenants(tenants) {
    fillTable("#tenants", tenants.map((t) => [
      t.tenant,
      usage(t.requests_last_minute, t.limits.requests_per_minute),
      usage(t.tokens_last_minute, t.limits.tokens_per_minute),
      usage(t.in_flight, t.limits.max_concurrency),
    ]));
  }

  function usage(used, limit) {
    const span = document.createElement("span");
    if (limit) span.appendChild(bar(used / limit, used / limit >= 0.9));
    span.appendChild(document.createTextNode(limit ? used + " / " + limit : used + " (no limit)"));
    return span;
  }

  function bar(fraction, hot) {
    const outer = document.createElement("span");
    outer.className = "bar" + (hot ? " hot" : "");
    const inner = document.createElement("span");
    inner.style.width = Math.round(Math.min(1, Math.max(0, fraction)) * 100) + "%";
    outer.appendChild(inner);
    return outer;
  }

  // ---- charts ---------------------------------------------------------------------------------
  function colorOf(label) {
    if (!state.colors.has(label)) state.colors.set(label, COLORS[state.colors.size % COLORS.length]);
    return state.colors.get(label);
  }

  function perReplica(name, scale = 1) {
    return Object.keys(state.replicas).sort(natural).map((label) => ({
      name: label, color: colorOf(label),
      values: (state.replicas[label][name] || []).map((v) => (v === null ? null : v * scale)),
    })).filter((s) => s.values.some((v) => v !== null));
  }

  function renderCharts() {
    const f = state.fleet;
    drawChart($("c-requests"), [
      { name: "requests/s", color: COLORS[0], values: f.request_rate || [] },
      { name: "429s/s", color: "#c62828", values: f.rejected_429_per_s || [] },
    ], "");
    drawChart($("c-tokens"), perReplica("generation_tokens_per_s"), "");
    drawChart($("c-kv"), perReplica("kv_cache_usage", 100), "%", 100);
    drawChart($("c-waiting"), [...perReplica("waiting"),
      { name: "gateway queue", color: "#444", values: f.queue_depth || [] }], "");
    drawChart($("c-ttft"), perReplica("ttft_p99_s", 1000), " ms");
    drawChart($("c-inflight"), perReplica("in_flight"), "");
  }

  function drawChart(canvas, series, unit, fixedMax) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const left = 56, right = 8, top = 22, bottom = 18;
    const plotW = w - left - right, plotH = h - top - bottom;
    let max = fixedMax || 0;
    if (!fixedMax) for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v;
    max = niceMax(max);
    ctx.font = "11px system-ui, sans-serif";
    ctx.strokeStyle = "#e1e4ea"; ctx.fillStyle = "#6a7285"; ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = top + plotH - (plotH * i) / 4;
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + plotW, y); ctx.stroke();
      ctx.textAlign = "right"; ctx.textBaseline = "middle";
      ctx.fillText(short((max * i) / 4) + unit, left - 4, y);
    }
    const slots = Math.max(1, Math.round(state.historyS / state.intervalS));
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    for (const minutes of [15, 10, 5, 0]) {
      const x = left + plotW * (1 - (minutes * 60) / state.historyS);
      ctx.fillText(minutes ? "-" + minutes + "m" : "now", Math.min(x, left + plotW - 10), top + plotH + 3);
    }
    const n = state.times.length;
    for (const s of series) {
      ctx.strokeStyle = s.color; ctx.lineWidth = 1.6; ctx.beginPath();
      let pen = false;
      s.values.forEach((v, i) => {
        if (v === null) { pen = false; return; }
        const x = left + plotW * (1 - (n - 1 - i) / (slots - 1 || 1));
        const y = top + plotH - (plotH * Math.min(v, max)) / max;
        if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
        pen = true;
      });
      ctx.stroke();
    }
    let x = left;
    ctx.textAlign = "left"; ctx.textBaseline = "top";
    for (const s of series) {
      ctx.fillStyle = s.color; ctx.fillRect(x, 6, 10, 3);
      ctx.fillStyle = "#1d2330"; ctx.fillText(s.name, x + 13, 2);
      x += 18 + ctx.measureText(s.name).width;
    }
  }

  // ---- formatting -----------------------------------------------------------------------------
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }
  function short(v) {
    if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (v >= 1e3) return (v / 1e3).toFixed(1) + "k";
    if (v >= 100 || Number.isInteger(v)) return String(Math.round(v));
    return v.toFixed(v < 10 ? 2 : 1);
  }
  function num(v, digits) { return v === null || v === undefined ? "–" : v.toFixed(digits); }
  function pct(v) { return v === null || v === undefined ? "–" : (v * 100).toFixed(0) + "%"; }
  function ms(v) { return v === null || v === undefined ? "–" : (v * 1000).toFixed(0) + " ms"; }
  function natural(a, b) { return a.localeCompare(b, undefined, { numeric: true }); }

  window.addEventListener("resize", () => renderCharts());
  poll();
})();
