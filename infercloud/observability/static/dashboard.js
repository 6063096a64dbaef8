// infercloud's dashboard: polls /dashboard/data every 2 s and draws it. No build step, no framework;
// every value from the server goes into the page as text (textContent), never as markup.
"use strict";

(() => {
  const POLL_MS = 2000;
  const KEY = "infercloud.dashboard.key";
  const $ = (id) => document.getElementById(id);
  const charts = new Map();   // "model/metric" -> uPlot
  let timer = null;

  // -- the key: from the URL fragment (never sent to the server), else this tab's session storage -------
  function takeKeyFromFragment() {
    const match = location.hash.match(/(?:^#|&)key=([^&]+)/);
    if (match) {
      sessionStorage.setItem(KEY, decodeURIComponent(match[1]));
      history.replaceState(null, "", location.pathname + location.search);   // out of the address bar
    }
  }

  function askForKey(reason) {
    clearTimeout(timer);
    $("board").hidden = true;
    $("forget").hidden = true;
    $("login").hidden = false;
    $("login-reason").textContent = reason;
    setStatus("no key", true);
  }

  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("key").value.trim());
    $("key").value = "";
    $("login").hidden = true;
    poll();
  });

  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    askForKey("Key forgotten. This page needs the internal token or, with tenancy, an admin key.");
  });

  function setStatus(text, bad) {
    $("status").textContent = text;
    $("status").classList.toggle("bad", !!bad);
  }

  // -- polling ------------------------------------------------------------------------------------
  async function poll() {
    clearTimeout(timer);
    const key = sessionStorage.getItem(KEY);
    if (!key) {
      askForKey("This page needs the internal token or, with tenancy, an admin key.");
      return;
    }
    try {
      const response = await fetch("/dashboard/data", {headers: {Authorization: `Bearer ${key}`}, cache: "no-store"});
      if (response.status === 401 || response.status === 403) {
        sessionStorage.removeItem(KEY);
        const body = await response.json().catch(() => ({}));
        askForKey(`The key was refused (${response.status}): ${(body.error && body.error.message) || ""}`);
        return;
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      render(await response.json());
      setStatus(`updated ${new Date().toLocaleTimeString()}`);
    } catch (error) {
      setStatus(`not updated: ${error.message}`, true);
    }
    timer = setTimeout(poll, POLL_MS);
  }

  // -- drawing helpers ----------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "class") node.className = value; else node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  const num = (v, digits = 0) => (v === null || v === undefined) ? "–" :
    Number(v).toLocaleString(undefined, {minimumFractionDigits: digits, maximumFractionDigits: digits});
  const seconds = (v) => (v === null || v === undefined) ? "–" : (v < 1 ? `${(v * 1000).toFixed(v < 0.01 && v > 0 ? 1 : 0)} ms` : `${v.toFixed(2)} s`);
  const clock = (t) => new Date(t * 1000).toLocaleTimeString();
  const badge = (text) => el("span", {class: `badge ${String(text).toLowerCase()}`}, text);
  const lastOf = (values) => { for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null) return values[i]; return null; };

  // columns: [header, (row) => cell content, "num" for right-aligned]
  function table(id, columns, rows, empty) {
    const node = $(id);
    const head = el("tr", null, ...columns.map(([h, , cls]) => el("th", cls ? {class: cls} : null, h)));
    const body = rows.length ? rows.map((row) => el("tr", row.__attrs || null, ...columns.map(([, cell, cls]) => {
      const td = el("td", cls ? {class: cls} : null);
      const value = cell(row);
      td.append(value instanceof Node ? value : String(value === null || value === undefined ? "–" : value));
      return td;
    }))) : [el("tr", null, el("td", {colspan: columns.length, class: "empty"}, empty || "none"))];
    node.replaceChildren(el("thead", null, head), el("tbody", null, ...body));
  }

  function tiles(items) {
    $("tiles").replaceChildren(...items.map(([label, value, id]) =>
      el("div", {class: "tile"}, el("div", {class: "value", id: id || null}, value), el("div", {class: "label"}, label))));
  }

  // -- latency charts (uPlot) ---------------------------------------------------------------------
  function chart(model, metric, title, latency, slo) {
    const id = `${model}/${metric}`;
    const p50 = latency[`${metric}_p50`], p90 = latency[`${metric}_p90`];
    const data = [latency.t, p50, p90, latency.t.map(() => slo)];
    let plot = charts.get(id);
    if (plot) {
      plot.root.parentElement.querySelector("h3").textContent = title;
      plot.setData(data);
    } else {
      const box = el("div", {class: "chart", "data-model": model, "data-metric": metric});
      box.append(el("h3", null, title));
      $("latency").append(box);
      const width = Math.max(360, Math.min(640, box.clientWidth || 420));
      plot = new uPlot({
        width, height: 180,
        scales: {x: {time: true}, y: {range: (u, min, max) => [0, Math.max(max || 0, slo || 0, 0.01) * 1.15]}},
        axes: [{}, {values: (u, ticks) => ticks.map(seconds), size: 64}],
        series: [
          {},
          {label: "p50", stroke: "#2f6feb", width: 2, spanGaps: true, points: {show: true, size: 6}, value: (u, v) => seconds(v)},
          {label: "p90", stroke: "#bf3989", width: 2, spanGaps: true, points: {show: true, size: 6}, value: (u, v) => seconds(v)},
          {label: "SLO", stroke: "#cf222e", dash: [6, 4], width: 1, points: {show: false},
           value: (u, v) => seconds(v), show: slo !== null},
        ],
      }, data, box);
      charts.set(id, plot);
    }
  }

  // TTFT and TPOT plots of each chat model (the gateway's streams, or the single box's requests)
  function latencyCharts(models) {
    $("latency-section").hidden = !models.some((m) => m.latency);
    $("latency-counted").textContent = models.some((m) => m.latency && m.latency.counted === "requests") ?
      "of requests" : "of streams";
    for (const m of models) {
      if (!m.latency) continue;
      chart(m.name, "ttft", `${m.name}: time to first token (${num(m.latency.count)} ${m.latency.counted})`,
            m.latency, m.slo.ttft_s);
      chart(m.name, "tpot", `${m.name}: time per output token`, m.latency, m.slo.tpot_s);
    }
  }

  // -- the gateway --------------------------------------------------------------------------------
  function renderGateway(d) {
    const ready = d.replicas.filter((r) => r.state === "ready").length;
    tiles([
      ["requests", num(d.requests), "total-requests"],
      ["errors", num(d.errors_total), "total-errors"],
      ["in flight", num(d.in_flight), "in-flight"],
      ["replicas ready", `${ready} / ${d.replicas.length}`, "replicas-ready"],
      ["uptime", `${Math.floor(d.uptime_s / 60)} min`],
    ]);
    const p90 = (m, metric) => {
      const value = m.latency ? lastOf(m.latency[`${metric}_p90`]) : null;
      const slo = m.slo[`${metric}_s`];
      return el("span", {class: value !== null && slo !== null && value > slo ? "over" : ""}, seconds(value));
    };
    table("models", [
      ["model", (m) => m.name], ["kind", (m) => m.kind],
      ["serves on", (m) => m.pool ? `pool ${m.pool}` : m.regions ? Object.entries(m.regions).map(([r, n]) => `${r}×${n}`).join(" ") :
        m.external && !m.replicas ? "external" : "dedicated"],
      ["routing", (m) => m.routing],
      ["ready / replicas", (m) => `${m.ready} / ${m.replicas}`, "num"],
      ["target", (m) => m.target === undefined ? null : m.target, "num"],
      ["outstanding", (m) => num(m.outstanding), "num"],
      ["requests", (m) => el("span", {class: "model-requests", "data-model": m.name}, num(m.requests)), "num"],
      ["errors", (m) => num(m.errors), "num"],
      ["TTFT p90", (m) => p90(m, "ttft"), "num"], ["TTFT SLO", (m) => seconds(m.slo.ttft_s), "num"],
      ["TPOT p90", (m) => p90(m, "tpot"), "num"], ["TPOT SLO", (m) => seconds(m.slo.tpot_s), "num"],
    ], d.models.map((m) => ({...m, __attrs: {"data-model": m.name}})));

    latencyCharts(d.models);

    table("replicas", [
      ["replica", (r) => r.replica_id], ["model", (r) => r.model], ["state", (r) => badge(r.state)],
      ["region", (r) => r.region], ["worker", (r) => r.worker || (r.external ? "external" : "own")],
      ["outstanding", (r) => num(r.outstanding_requests), "num"], ["tokens", (r) => num(r.outstanding_tokens), "num"],
      ["running", (r) => num(r.running), "num"], ["waiting", (r) => num(r.waiting), "num"],
      ["KV blocks", (r) => r.kv_total ? `${r.kv_used} / ${r.kv_total}` : null, "num"],
      ["generated", (r) => num(r.generated_tokens), "num"],
    ], d.replicas, "no replicas");

    $("pools-section").hidden = !d.pools.length;
    table("pools", [
      ["worker", (w) => w.worker_id], ["pool", (w) => w.pool], ["state", (w) => badge(w.state)],
      ["region", (w) => w.region], ["models", (w) => w.models.join(", ")],
    ], d.pools);
    table("regions", [
      ["region", (r) => r.region], ["ready / replicas", (r) => `${r.ready} / ${r.replicas}`, "num"],
      ["outstanding", (r) => num(r.outstanding), "num"],
    ], d.regions, "no replicas");

    const events = d.timeline.map((e) => el("li", null, el("time", null, clock(e.time)),
      el("span", {class: "model"}, e.model), e.text, ...(e.reason ? [el("span", {class: "reason"}, e.reason)] : [])));
    $("timeline").replaceChildren(...(events.length ? events : [el("li", {class: "empty"}, "no change seen yet")]));

    $("tenants-section").hidden = !d.tenancy;
    table("tenants", [
      ["tenant", (t) => t.tenant], ["requests", (t) => num(t.requests), "num"],
      ["prompt tokens", (t) => num(t.prompt_tokens), "num"], ["completion tokens", (t) => num(t.completion_tokens), "num"],
      ["cost", (t) => `$${num(t.cost_usd, 4)}`, "num"],
    ], d.tenants || [], "no usage today");

    table("errors", [
      ["time", (e) => clock(e.time)], ["status", (e) => el("span", {class: `badge ${e.status >= 500 ? "bad" : "draining"}`}, e.status)],
      ["code", (e) => e.code ? el("code", null, e.code) : null], ["model", (e) => e.model], ["path", (e) => e.path],
      ["tenant", (e) => e.tenant], ["message", (e) => el("span", {class: "message", title: e.message || ""}, e.message)],
    ], d.errors, "no errors");
  }

  // -- the single box -----------------------------------------------------------------------------
  function renderWorker(d) {
    const tokens = d.models.reduce((sum, m) => sum + (m.generated_tokens || 0), 0);
    tiles([
      ["tokens generated", num(tokens), "total-tokens"],
      ["in flight", num(d.in_flight), "in-flight"],
      ["device", d.device],
      ["memory", d.memory_budget_bytes ? `${num(d.memory_used_bytes / 2 ** 20)} / ${num(d.memory_budget_bytes / 2 ** 20)} MiB` :
        `${num(d.memory_used_bytes / 2 ** 20)} MiB`],
      ["uptime", `${Math.floor(d.uptime_s / 60)} min`],
    ]);
    table("models", [
      ["model", (m) => m.name], ["kind", (m) => m.kind], ["loaded", (m) => badge(m.loaded ? "ready" : "unloaded")],
      ["in flight", (m) => num(m.in_flight), "num"], ["running", (m) => num(m.running), "num"],
      ["waiting", (m) => num(m.waiting), "num"], ["KV blocks", (m) => m.kv_total ? `${m.kv_used} / ${m.kv_total}` : null, "num"],
      ["step", (m) => seconds(m.step_time_s), "num"],
      ["prefix hits", (m) => m.prefix_cache_hit_rate === null || m.prefix_cache_hit_rate === undefined ? null :
        `${(100 * m.prefix_cache_hit_rate).toFixed(0)}%`, "num"],
      ["generated", (m) => el("span", {class: "model-tokens", "data-model": m.name}, num(m.generated_tokens)), "num"],
    ], d.models.map((m) => ({...m, __attrs: {"data-model": m.name}})));
    latencyCharts(d.models);
    for (const id of ["replicas-section", "pools-section", "regions-section", "timeline-section",
                      "tenants-section", "errors-section"]) {
      $(id).hidden = true;
    }
  }

  function render(d) {
    $("login").hidden = true;
    $("board").hidden = false;
    $("forget").hidden = false;
    $("role").textContent = d.role === "gateway" ? "gateway" : "single box";
    if (d.role === "gateway") renderGateway(d); else renderWorker(d);
  }

  takeKeyFromFragment();
  poll();
})();
