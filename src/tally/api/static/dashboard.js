// Tally's live dashboard: polls dashboard/data and draws plain SVG. No library, nothing from a CDN.
//
// The server sends cumulative totals (as /metrics has them). Rates, error shares and quantiles are
// worked out here from the difference between two snapshots, the way Prometheus's rate() and
// histogram_quantile() work: a counter that went down was reset by a restart and counts from zero.
"use strict";

(() => {
  const POLL_MS = 2000;
  const WINDOW_S = 60; // tables and quantiles cover this much of the recent past
  const HISTORY_S = 300; // charts show this much
  const SVG = "http://www.w3.org/2000/svg";
  const snapshots = [];
  const points = { rate: [], errors: [], p50: [], p99: [] };

  // The ops token, when the page was opened with ?token=: kept for this tab only, and taken out of
  // the address bar so that it is not left in history, bookmarks or screenshots.
  const params = new URLSearchParams(window.location.search);
  if (params.has("token")) {
    sessionStorage.setItem("tally-ops-token", params.get("token"));
    params.delete("token");
    const query = params.toString();
    history.replaceState(null, "", window.location.pathname + (query ? "?" + query : ""));
  }
  const token = sessionStorage.getItem("tally-ops-token");

  const increase = (before, after) => (after >= before ? after - before : after);
  const fmt = (value, digits = 1) =>
    value === null || value === undefined || Number.isNaN(value) ? "–" : value.toFixed(digits);

  // histogram_quantile over cumulative bucket counts for finite bounds, and the +Inf total.
  function quantile(q, bounds, buckets, total) {
    if (!total) return null;
    const rank = q * total;
    for (let i = 0; i < bounds.length; i++) {
      if (buckets[i] >= rank) {
        const lower = i === 0 ? 0 : bounds[i - 1];
        const below = i === 0 ? 0 : buckets[i - 1];
        const inBucket = buckets[i] - below;
        return inBucket > 0 ? lower + ((bounds[i] - lower) * (rank - below)) / inBucket : bounds[i];
      }
    }
    return bounds[bounds.length - 1];
  }

  const bucketIncrease = (before, after) => after.map((n, i) => increase(before ? before[i] : 0, n));

  function byKey(rows, key) {
    const map = new Map();
    for (const row of rows || []) map.set(key(row), row);
    return map;
  }

  // The snapshot WINDOW_S before the newest (or the oldest kept), to difference against.
  function windowStart(newest) {
    let start = snapshots[0];
    for (const snap of snapshots) {
      if (newest.at - snap.at >= WINDOW_S) start = snap;
    }
    return start === newest ? null : start;
  }

  function routeRows(older, newest) {
    const before = byKey(older && older.routes, (r) => r.method + " " + r.route);
    const seconds = older ? newest.at - older.at : 0;
    return newest.routes.map((r) => {
      const was = before.get(r.method + " " + r.route);
      const count = increase(was ? was.count : 0, r.count);
      const buckets = bucketIncrease(was && was.buckets, r.buckets);
      return {
        method: r.method,
        route: r.route,
        count,
        rate: seconds > 0 ? count / seconds : null,
        errors: increase(was ? was.errors : 0, r.errors),
        clientErrors: increase(was ? was.client_errors : 0, r.client_errors),
        buckets,
      };
    });
  }

  function sumBuckets(rows) {
    const total = rows.reduce((n, r) => n + r.count, 0);
    const buckets = rows.length ? rows[0].buckets.map((_, i) => rows.reduce((n, r) => n + r.buckets[i], 0)) : [];
    return { total, buckets };
  }

  function record(newest) {
    const previous = snapshots.length > 1 ? snapshots[snapshots.length - 2] : null;
    if (!previous) return;
    const step = routeRows(previous, newest);
    const seconds = newest.at - previous.at;
    const count = step.reduce((n, r) => n + r.count, 0);
    const errors = step.reduce((n, r) => n + r.errors, 0);
    points.rate.push({ t: newest.at, v: seconds > 0 ? count / seconds : null });
    points.errors.push({ t: newest.at, v: count ? (100 * errors) / count : null });
    // Latency is the clients': the dashboard's own polls and scrapes are left out, as in the alerts.
    const api = (r) => !/^\/(metrics|dashboard)/.test(r.route);
    const recent = sumBuckets(routeRows(windowStart(newest), newest).filter(api));
    const bounds = newest.bounds.request;
    const p50 = quantile(0.5, bounds, recent.buckets, recent.total);
    const p99 = quantile(0.99, bounds, recent.buckets, recent.total);
    points.p50.push({ t: newest.at, v: p50 === null ? null : p50 * 1000 });
    points.p99.push({ t: newest.at, v: p99 === null ? null : p99 * 1000 });
    for (const list of Object.values(points)) {
      while (list.length && newest.at - list[0].t > HISTORY_S) list.shift();
    }
  }

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
    return 10 * power;
  }

  // A line chart of one or more series of {t, v} points; null values leave a gap.
  function lineChart(svg, series, options = {}) {
    const width = 600, height = 180, left = 44, right = 8, top = 8, bottom = 20;
    const now = snapshots.length ? snapshots[snapshots.length - 1].at : 0;
    // The time axis grows with the history the page has, from one minute up to HISTORY_S.
    const first = Math.min(...series.map((s) => (s.points.length ? s.points[0].t : now)));
    const span = Math.min(HISTORY_S, Math.max(60, now - first));
    const values = series.flatMap((s) => s.points.map((p) => p.v)).filter((v) => v !== null);
    if (options.target !== undefined) values.push(options.target);
    const max = niceMax(Math.max(options.floor || 0, ...values));
    const x = (t) => left + ((t - (now - span)) / span) * (width - left - right);
    const y = (v) => top + (1 - v / max) * (height - top - bottom);
    svg.replaceChildren();
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      svg.append(el("line", { class: "grid", x1: left, x2: width - right, y1: y(v), y2: y(v) }));
      svg.append(el("text", { class: "axis", x: left - 4, y: y(v) + 4, "text-anchor": "end" }, fmt(v, max < 4 ? 2 : 0)));
    }
    const ago = span >= 120 ? `−${Math.round(span / 60)} min` : `−${Math.round(span)} s`;
    svg.append(el("text", { class: "axis", x: left, y: height - 4 }, ago));
    svg.append(el("text", { class: "axis", x: width - right, y: height - 4, "text-anchor": "end" }, "now"));
    if (options.target !== undefined) {
      svg.append(el("line", { class: "target", x1: left, x2: width - right, y1: y(options.target), y2: y(options.target) }));
    }
    series.forEach((s, index) => {
      let d = "";
      let drawn = 0;
      let pen = "M";
      for (const p of s.points) {
        if (p.v === null) {
          pen = "M";
          continue;
        }
        d += `${pen}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)} `;
        pen = "L";
        drawn += 1;
      }
      svg.append(el("path", { class: "series", d: d.trim() || "M0,0", stroke: s.color, "data-series": s.name, "data-points": drawn }));
      const last = s.points.filter((p) => p.v !== null).pop();
      const label = `${s.name} ${last ? fmt(last.v, 2) : "–"}`;
      svg.append(el("text", { class: "axis", x: left + 8 + index * 130, y: top + 12, fill: s.color }, label));
    });
  }

  function fillTable(id, rows, columns, empty) {
    const body = document.querySelector(`#${id} tbody`);
    body.replaceChildren();
    if (!rows.length) {
      const tr = body.insertRow();
      tr.className = "empty";
      const td = tr.insertCell();
      td.colSpan = columns.length;
      td.textContent = empty;
      return;
    }
    for (const row of rows) {
      const tr = body.insertRow();
      for (const column of columns) {
        const td = tr.insertCell();
        const value = column(row);
        td.textContent = value.text !== undefined ? value.text : value;
        if (value.className) td.className = value.className;
        if (value.title) td.title = value.title;
      }
    }
  }

  function render() {
    const newest = snapshots[snapshots.length - 1];
    const older = windowStart(newest);
    const seconds = older ? newest.at - older.at : 0;
    document.getElementById("window").textContent = Math.round(seconds || WINDOW_S);
    lineChart(document.getElementById("chart-rate"), [{ name: "req/s", color: "#2463eb", points: points.rate }]);
    lineChart(document.getElementById("chart-errors"), [{ name: "5xx %", color: "#c92a2a", points: points.errors }], { floor: 1, target: 0.1 });
    lineChart(
      document.getElementById("chart-latency"),
      [
        { name: "P50", color: "#2463eb", points: points.p50 },
        { name: "P99", color: "#e8590c", points: points.p99 },
      ],
      { target: 25 },
    );

    const bounds = newest.bounds;
    const routes = routeRows(older, newest).filter((r) => r.count > 0 || !older);
    routes.sort((a, b) => b.count - a.count);
    fillTable("routes", routes, [
      (r) => r.method,
      (r) => r.route,
      (r) => ({ text: fmt(r.rate, 2), className: "num" }),
      (r) => ({ text: r.count ? fmt((100 * r.errors) / r.count) + " %" : "–", className: r.errors ? "num bad" : "num" }),
      (r) => ({ text: r.count ? fmt((100 * r.clientErrors) / r.count) + " %" : "–", className: "num" }),
      (r) => ({ text: fmt(1000 * quantile(0.5, bounds.request, r.buckets, r.count), 2), className: "num" }),
      (r) => ({ text: fmt(1000 * quantile(0.99, bounds.request, r.buckets, r.count), 2), className: "num" }),
    ], "no requests in the window");

    const before = byKey(older && older.statements, (s) => s.statement + " " + s.role);
    let statements = newest.statements.map((s) => {
      const was = before.get(s.statement + " " + s.role);
      const count = increase(was ? was.count : 0, s.count);
      const windowed = older && count > 0;
      const buckets = windowed ? bucketIncrease(was && was.buckets, s.buckets) : s.buckets;
      const total = windowed ? count : s.count;
      const time = windowed ? increase(was ? was.sum : 0, s.sum) : s.sum;
      return {
        ...s,
        rate: seconds > 0 ? count / seconds : null,
        mean: total ? (1000 * time) / total : null,
        p99: quantile(0.99, bounds.query, buckets, total),
      };
    });
    // The statements that ran in the window; while none did, every statement since start.
    const ranRecently = statements.filter((s) => s.rate !== null && s.rate > 0);
    statements = ranRecently.length ? ranRecently : statements.filter((s) => s.count > 0);
    statements.sort((a, b) => (b.p99 || 0) - (a.p99 || 0) || (b.mean || 0) - (a.mean || 0));
    fillTable("statements", statements.slice(0, 12), [
      (s) => ({ text: s.statement, title: s.sql, className: "sql" }),
      (s) => s.role,
      (s) => ({ text: fmt(s.rate, 2), className: "num" }),
      (s) => ({ text: fmt(s.mean, 3), className: "num" }),
      (s) => ({ text: fmt(s.p99 === null ? null : 1000 * s.p99, 3), className: "num" }),
      (s) => ({ text: String(s.slow), className: s.slow ? "num bad" : "num" }),
    ], "no statements yet");

    const pools = byKey(older && older.pools, (p) => p.role);
    fillTable("pools", newest.pools, [
      (p) => p.role,
      (p) => ({ text: String(p.in_use), className: "num" }),
      (p) => ({ text: String(p.size), className: "num" }),
      (p) => {
        const was = pools.get(p.role);
        const n = increase(was ? was.wait_count : 0, p.wait_count);
        return { text: n ? fmt((1000 * increase(was ? was.wait_sum : 0, p.wait_sum)) / n, 3) : "–", className: "num" };
      },
      (p) => {
        const was = pools.get(p.role);
        const n = increase(was ? was.wait_count : 0, p.wait_count);
        const q = quantile(0.99, bounds.wait, bucketIncrease(was && was.wait_buckets, p.wait_buckets), n);
        return { text: fmt(q === null ? null : 1000 * q, 3), className: "num" };
      },
    ], "no connections yet");

    const windowed = (rows, previous, key) => {
      const map = byKey(previous, key);
      return rows
        .map((r) => ({ ...r, delta: increase(map.get(key(r)) ? map.get(key(r)).count : 0, r.count) }))
        .filter((r) => r.delta > 0)
        .sort((a, b) => b.delta - a.delta);
    };
    fillTable("transfers", windowed(newest.transfers, older && older.transfers, (r) => r.operation + " " + r.outcome), [
      (r) => r.operation,
      (r) => r.outcome,
      (r) => ({ text: String(r.delta), className: "num" }),
    ], "none in the window");
    fillTable("rejections", windowed(newest.rejections, older && older.rejections, (r) => r.route + " " + r.code), [
      (r) => r.code,
      (r) => r.route,
      (r) => ({ text: String(r.delta), className: "num" }),
    ], "none in the window");
    document.getElementById("replays").textContent = String(increase(older ? older.replays : 0, newest.replays));

    fillTable("queue", newest.queue || [], [
      (q) => q.queue,
      (q) => ({ text: String(q.ready), className: "num" }),
      (q) => ({ text: fmt(q.oldest_age_seconds), className: "num" }),
      (q) => ({ text: String(q.dead), className: q.dead ? "num bad" : "num" }),
    ], "this Tally reports no queue yet");
    const caches = byKey(older && older.cache, (c) => c.cache);
    fillTable("cache", newest.cache || [], [
      (c) => c.cache,
      (c) => {
        const was = caches.get(c.cache);
        const hits = increase(was ? was.hits : 0, c.hits);
        const lookups = hits + increase(was ? was.misses : 0, c.misses);
        return { text: lookups ? fmt((100 * hits) / lookups) + " %" : "–", className: "num" };
      },
      (c) => {
        const was = caches.get(c.cache);
        const lookups = increase(was ? was.hits : 0, c.hits) + increase(was ? was.misses : 0, c.misses);
        return { text: fmt(seconds ? lookups / seconds : null, 2), className: "num" };
      },
    ], "this Tally reports no cache yet");
  }

  function status(state, text) {
    const node = document.getElementById("status");
    node.dataset.state = state;
    node.textContent = text;
  }

  async function poll() {
    try {
      const response = await fetch("dashboard/data", {
        cache: "no-store",
        headers: token ? { Authorization: `Bearer ${token}` } : {},
      });
      if (response.status === 401) {
        status("unauthorised", "the ops token is missing or wrong: open this page with ?token=…");
        return;
      }
      if (!response.ok) {
        status("error", `dashboard/data answered ${response.status}`);
        return;
      }
      const snapshot = await response.json();
      snapshots.push(snapshot);
      while (snapshots.length > 2 && snapshot.at - snapshots[1].at >= WINDOW_S) snapshots.shift();
      record(snapshot);
      render();
      const at = new Date(snapshot.at * 1000).toLocaleTimeString();
      status("live", `live · updated ${at} · ${snapshot.in_flight} in flight`);
    } catch (error) {
      status("error", `Tally did not answer (${error.message}); retrying`);
    }
  }

  poll();
  setInterval(poll, POLL_MS);
})();
