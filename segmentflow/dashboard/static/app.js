/* segmentflow dashboard: polls /api/state and draws everything as inline SVG (no libraries). */
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#58a6ff", "#3fb950", "#d29922", "#f85149", "#a371f7", "#39c5cf", "#ff7b72",
    "#e3b341", "#56d364", "#bc8cff", "#79c0ff", "#ffa657", "#8b949e", "#f778ba"];
  const STAGE_COLORS = { "(first)": "#6e7681", prospect: "#8b949e", new: "#58a6ff", active: "#3fb950",
    reactivated: "#a371f7", at_risk: "#d29922", churned: "#f85149", in: "#3fb950", out: "#8b949e" };
  const DIM_ORDER = ["lifecycle", "rfm", "persona"];
  let selected = null;
  let updates = 0;

  function svg(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }
  function html(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
  function fmt(n) {
    if (n === null || n === undefined || Number.isNaN(n)) return "–";
    if (Math.abs(n) >= 100 || Number.isInteger(n)) return Math.round(n).toLocaleString("en-US");
    return n.toFixed(1);
  }
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const e = Math.pow(10, Math.floor(Math.log10(v)));
    for (const s of [1, 2, 5, 10]) if (s * e >= v) return s * e;
    return 10 * e;
  }
  function clock(t) {
    const d = new Date(t * 1000);
    return d.toISOString().slice(11, 19);
  }
  function colorOf(dim, value, index) {
    if ((dim === "lifecycle" || dim.startsWith("rule:")) && STAGE_COLORS[value]) return STAGE_COLORS[value];
    return PALETTE[index % PALETTE.length];
  }
  function orderedDims(pops) {
    const dims = Object.keys(pops);
    return dims.sort((a, b) => {
      const ia = DIM_ORDER.indexOf(a), ib = DIM_ORDER.indexOf(b);
      return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
    });
  }
  function orderedValues(dim, values) {
    const stages = Object.keys(STAGE_COLORS);
    return values.slice().sort((a, b) => {
      const ia = stages.indexOf(a), ib = stages.indexOf(b);
      if (dim === "lifecycle" && ia >= 0 && ib >= 0) return ia - ib;
      return a.localeCompare(b);
    });
  }
  // draw in CSS pixels: the viewBox follows the element's size, so text is never stretched
  function sized(root, fallbackW, H) {
    const W = Math.max(200, Math.round(root.clientWidth || root.getBoundingClientRect().width || fallbackW));
    root.setAttribute("viewBox", `0 0 ${W} ${H}`);
    return W;
  }
  function emptyText(root, w, h, text) {
    root.appendChild(svg("text", { x: w / 2, y: h / 2, "text-anchor": "middle", class: "empty" }, text));
  }

  // ---- populations over time ------------------------------------------------------------------
  function renderTabs(state) {
    const tabs = clear(document.getElementById("dimension-tabs"));
    const dims = orderedDims(state.history.series);
    if (!selected || !dims.includes(selected)) selected = dims[0] || null;
    for (const dim of dims) {
      const b = html("button", { type: "button", "data-dimension": dim, class: dim === selected ? "active" : "" }, dim);
      b.addEventListener("click", () => { selected = dim; render(window.__lastState); });
      tabs.appendChild(b);
    }
  }

  function renderLineChart(state) {
    const root = clear(document.getElementById("population-chart"));
    const legend = clear(document.getElementById("population-legend"));
    const H = 300, L = 54, R = 12, T = 10, B = 24;
    const W = sized(root, 900, H);
    const t = state.history.t;
    const series = selected ? state.history.series[selected] || {} : {};
    const values = orderedValues(selected || "", Object.keys(series));
    root.setAttribute("data-dimension", selected || "");
    if (!t.length || !values.length) { emptyText(root, W, H, "waiting for the worker's /segments …"); return; }
    let ymax = 0;
    for (const v of values) for (const n of series[v]) ymax = Math.max(ymax, n);
    ymax = niceMax(ymax);
    const t0 = t[0], t1 = t.length > 1 ? t[t.length - 1] : t[0] + 1;
    const x = (ti) => L + (W - L - R) * (ti - t0) / (t1 - t0 || 1);
    const y = (n) => T + (H - T - B) * (1 - n / ymax);
    for (let i = 0; i <= 4; i++) {
      const v = ymax * i / 4;
      root.appendChild(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
      root.appendChild(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v)));
    }
    for (let i = 0; i <= 4; i++) {
      const ti = t0 + (t1 - t0) * i / 4;
      root.appendChild(svg("text", { x: x(ti), y: H - 6, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" }, clock(ti)));
    }
    values.forEach((v, i) => {
      const color = colorOf(selected, v, i);
      const pts = series[v];
      const d = pts.map((n, k) => `${k ? "L" : "M"}${x(t[k]).toFixed(1)},${y(n).toFixed(1)}`).join("");
      const path = svg("path", { d, fill: "none", stroke: color, "stroke-width": 2, class: "series",
        "data-segment": v, "data-last": pts[pts.length - 1], "vector-effect": "non-scaling-stroke" });
      path.appendChild(svg("title", {}, `${v}: ${pts[pts.length - 1]}`));
      root.appendChild(path);
      root.appendChild(svg("circle", { cx: x(t[t.length - 1]), cy: y(pts[pts.length - 1]), r: 3, fill: color }));
      const item = html("span", { "data-segment": v });
      item.appendChild(html("span", { class: "swatch", style: `background:${color}` }));
      item.appendChild(document.createTextNode(`${v} ${fmt(pts[pts.length - 1])}`));
      legend.appendChild(item);
    });
  }

  // ---- lifecycle Sankey -----------------------------------------------------------------------
  function renderSankey(state) {
    const root = clear(document.getElementById("sankey"));
    const H = 300, T = 8, B = 8, NODE = 12, GAP = 10;
    const W = sized(root, 440, H), X0 = 120, X1 = W - 120 - NODE;
    const flows = state.flows;
    document.getElementById("flow-window").textContent = `(last ${Math.round(state.flow_window_s / 60)} min)`;
    const tbody = clear(document.querySelector("#flows-table tbody"));
    for (const f of flows) {
      const tr = html("tr", { "data-from": f.from, "data-to": f.to });
      tr.appendChild(html("td", {}, f.from));
      tr.appendChild(html("td", {}, f.to));
      tr.appendChild(html("td", { class: "num" }, fmt(f.count)));
      tr.appendChild(html("td", { class: "num" }, f.per_min.toFixed(1)));
      tbody.appendChild(tr);
    }
    if (!flows.length) { emptyText(root, W, H, "no lifecycle transitions yet"); return; }
    const order = state.stages;
    const sum = (arr) => arr.reduce((a, b) => a + b, 0);
    const left = order.filter((s) => flows.some((f) => f.from === s));
    const right = order.filter((s) => flows.some((f) => f.to === s));
    const total = sum(flows.map((f) => f.count));
    const scale = (side) => (H - T - B - GAP * (side.length - 1)) / total;
    const k = Math.min(scale(left), scale(right));
    function place(side, key) {
      const nodes = {}; let y = T;
      for (const s of side) {
        const v = sum(flows.filter((f) => f[key] === s).map((f) => f.count));
        nodes[s] = { y, h: v * k, v, off: 0 };
        y += v * k + GAP;
      }
      return nodes;
    }
    const ln = place(left, "from"), rn = place(right, "to");
    const sorted = flows.slice().sort((a, b) => order.indexOf(a.from) - order.indexOf(b.from) || order.indexOf(a.to) - order.indexOf(b.to));
    const xm = (X0 + NODE + X1) / 2;
    for (const f of sorted) {
      const w = f.count * k;
      const a = ln[f.from], b = rn[f.to];
      const y0 = a.y + a.off, y1 = b.y + b.off;
      a.off += w; b.off += w;
      const xa = X0 + NODE, xb = X1;
      const d = `M${xa},${y0}C${xm},${y0} ${xm},${y1} ${xb},${y1}L${xb},${y1 + w}C${xm},${y1 + w} ${xm},${y0 + w} ${xa},${y0 + w}Z`;
      const p = svg("path", { d, fill: STAGE_COLORS[f.to] || "#58a6ff", "fill-opacity": 0.45, class: "link",
        "data-from": f.from, "data-to": f.to, "data-count": f.count });
      p.appendChild(svg("title", {}, `${f.from} → ${f.to}: ${f.count} (${f.per_min.toFixed(1)}/min)`));
      root.appendChild(p);
    }
    for (const [side, nodes, x, anchor, dx] of [["from", ln, X0, "end", -6], ["to", rn, X1, "start", NODE + 6]]) {
      for (const [s, n] of Object.entries(nodes)) {
        root.appendChild(svg("rect", { x, y: n.y, width: NODE, height: Math.max(1, n.h), fill: STAGE_COLORS[s] || "#8b949e",
          class: "node", "data-side": side, "data-stage": s }));
        root.appendChild(svg("text", { x: x + dx, y: n.y + n.h / 2 + 4, "text-anchor": anchor, class: "node-label" }, `${s} ${fmt(n.v)}`));
      }
    }
  }

  // ---- per-minute bars ------------------------------------------------------------------------
  function renderPerMinute(state) {
    const root = clear(document.getElementById("per-minute"));
    const H = 200, L = 36, R = 6, T = 8, B = 20;
    const W = sized(root, 440, H);
    const rows = state.per_minute;
    const stages = state.stages.filter((s) => s !== "(first)");
    const max = niceMax(Math.max(0, ...rows.map((r) => r.total)));
    const bw = (W - L - R) / rows.length;
    const y = (n) => T + (H - T - B) * (1 - n / max);
    for (let i = 0; i <= 2; i++) {
      const v = max * i / 2;
      root.appendChild(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
      root.appendChild(svg("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end" }, fmt(v)));
    }
    rows.forEach((r, i) => {
      let base = 0;
      for (const s of stages) {
        const n = r[s] || 0;
        if (!n) continue;
        const rect = svg("rect", { x: L + i * bw + 1, y: y(base + n), width: Math.max(1, bw - 2), height: y(base) - y(base + n),
          fill: STAGE_COLORS[s] || "#58a6ff", class: "bar", "data-minute": r.minute, "data-stage": s, "data-count": n });
        rect.appendChild(svg("title", {}, `${clock(r.minute).slice(0, 5)} → ${s}: ${n}`));
        root.appendChild(rect);
        base += n;
      }
      if (i % 10 === 0 || i === rows.length - 1) {
        const last = i === rows.length - 1;
        root.appendChild(svg("text", { x: last ? W - R : L + i * bw, y: H - 5, "text-anchor": last ? "end" : "start" }, clock(r.minute).slice(0, 5)));
      }
    });
  }

  // ---- tables -----------------------------------------------------------------------------------
  function renderPopulations(state) {
    const tbody = clear(document.querySelector("#populations-table tbody"));
    const pops = state.populations;
    for (const dim of orderedDims(pops)) {
      for (const v of orderedValues(dim, Object.keys(pops[dim]))) {
        const tr = html("tr", { "data-dimension": dim, "data-segment": v });
        tr.appendChild(html("td", {}, dim));
        const members = html("a", { href: `/members/${encodeURIComponent(dim)}/${encodeURIComponent(v)}`,
          title: "download the customers in this segment (CSV)" }, v);  // dashboard/members.py
        tr.appendChild(html("td", {})).appendChild(members);
        tr.appendChild(html("td", { class: "num count", "data-count": pops[dim][v] }, fmt(pops[dim][v])));
        tbody.appendChild(tr);
      }
    }
  }

  function renderRecent(state) {
    const tbody = clear(document.querySelector("#recent-table tbody"));
    for (const c of state.recent.slice(0, 20)) {
      const tr = html("tr", { "data-id": c.id });
      tr.appendChild(html("td", {}, (c.time || "").replace("T", " ").replace("Z", "")));
      tr.appendChild(html("td", {}, c.customer_id));
      tr.appendChild(html("td", {}, c.dimension));
      tr.appendChild(html("td", {}, `${c.previous === null ? "∅" : c.previous} → ${c.current}`));
      tr.appendChild(html("td", { title: c.event_id || "" }, c.cause === "time" ? "time" : "event"));
      tbody.appendChild(tr);
    }
  }

  function spark(id, points, color) {
    const root = clear(document.getElementById(id));
    const H = 90, T = 6, B = 14;
    const W = sized(root, 440, H);
    if (points.length < 2) { emptyText(root, W, H, "collecting…"); return; }
    const t0 = points[0][0], t1 = points[points.length - 1][0];
    const max = niceMax(Math.max(...points.map((p) => p[1])));
    const x = (t) => W * (t - t0) / (t1 - t0 || 1);
    const y = (v) => T + (H - T - B) * (1 - v / max);
    const line = points.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("");
    root.appendChild(svg("path", { d: `${line}L${W},${H - B}L0,${H - B}Z`, fill: color, "fill-opacity": 0.15 }));
    root.appendChild(svg("path", { d: line, fill: "none", stroke: color, "stroke-width": 1.5, class: "series", "vector-effect": "non-scaling-stroke" }));
    root.appendChild(svg("text", { x: 2, y: H - 2 }, clock(t0)));
    root.appendChild(svg("text", { x: W - 2, y: H - 2, "text-anchor": "end" }, `max ${fmt(max)}/min`));
  }

  function kvTable(selector, obj) {
    const tbody = clear(document.querySelector(`${selector} tbody`));
    const entries = Object.entries(obj).sort((a, b) => b[1] - a[1]);
    if (!entries.length) { const tr = html("tr"); tr.appendChild(html("td", { class: "muted", colspan: 2 }, "none")); tbody.appendChild(tr); }
    for (const [k, v] of entries) {
      const tr = html("tr", { "data-key": k });
      tr.appendChild(html("td", {}, k));
      tr.appendChild(html("td", { class: "num" }, fmt(v)));
      tbody.appendChild(tr);
    }
  }

  function renderDeadLetters(state) {
    const w = state.deadletters.worker, tr = state.deadletters.triggers;
    spark("dl-worker-chart", w.series, "#f85149");
    spark("dl-triggers-chart", tr.series, "#d29922");
    kvTable("#dl-reasons", w.reasons);
    kvTable("#dl-targets", tr.by_target);
    document.getElementById("kpi-dl-worker").textContent = fmt(w.per_min);
    document.getElementById("kpi-dl-worker-sub").textContent = `${fmt(w.total)} of ${fmt(w.received)} received (${(100 * w.share).toFixed(2)}%)`;
    document.getElementById("kpi-dl-triggers").textContent = fmt(tr.per_min);
    document.getElementById("kpi-dl-triggers-sub").textContent = `${fmt(tr.total)} in total`;
  }

  function renderStatus(state) {
    const ws = document.getElementById("worker-status");
    ws.dataset.ok = String(state.worker.ok);
    ws.textContent = state.worker.ok ? "worker ok" : "worker unreachable";
    ws.title = state.worker.error || state.worker.url || "";
    const ks = document.getElementById("kafka-status");
    ks.dataset.ok = String(state.kafka.ok);
    ks.textContent = state.kafka.ok ? "kafka ok" : "kafka …";
    ks.title = state.kafka.error || "";
    document.getElementById("updated").textContent = `updated ${clock(state.now)} UTC`;
    document.getElementById("kpi-customers").textContent = fmt(state.customers);
    document.getElementById("kpi-changes").textContent = fmt(state.changes_seen);
    document.getElementById("kpi-flow-rate").textContent = fmt(state.lifecycle_per_min);
  }

  // ---- config re-evaluation (CONTRACT §6): shown while the worker walks its stored customers --
  function renderConfigWalk(state) {
    const box = document.getElementById("config-walk");
    const walk = state.config_walk;
    box.hidden = !(walk && walk.running);
    if (!walk) return;
    document.getElementById("config-walk-customers").textContent = fmt(walk.customers);
    document.getElementById("config-walk-changes").textContent = fmt(walk.changes);
    document.getElementById("config-walk-pending").textContent = fmt(walk.pending_shards);
  }

  function render(state) {
    if (!state) return;
    window.__lastState = state;
    renderStatus(state);
    renderConfigWalk(state);
    renderTabs(state);
    renderLineChart(state);
    renderSankey(state);
    renderPerMinute(state);
    renderPopulations(state);
    renderRecent(state);
    renderDeadLetters(state);
    updates += 1;
    document.body.dataset.updates = String(updates);
    if (state.history.t.length > 1 && state.flows.length) document.body.dataset.rendered = "1";
  }

  async function tick() {
    try {
      const response = await fetch("/api/state", { cache: "no-store", credentials: "same-origin" });
      if (response.status === 401) { window.location.assign("/login"); return; }
      if (response.ok) render(await response.json());
    } catch (err) {
      document.getElementById("updated").textContent = `dashboard unreachable (${err})`;
    }
  }

  tick();
  setInterval(tick, 1500);
})();
