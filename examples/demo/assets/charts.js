// Chart and table helpers shared by the live console and the HTML report.
// Needs uPlot (window.uPlot). Data shapes are the demo's JSON: a series
// ({t, served: {cell: []}, errors: {cell: []}, p50_ms, p99_ms}), cell events
// ({at_ms, cell, action}) and audit rows ({action, cell, table_version,
// status, detected_at_ms, intent_at_ms, committed_at_ms, applied_at_ms}).
"use strict";

const DemoCharts = (() => {
  const PALETTE = ["#2f6fdb", "#e4572e", "#17a589", "#8e44ad", "#c9a100", "#7f8c8d"];
  const MARK_COLORS = { kill: "#c0392b", restart: "#1e8449", drain: "#d35400", failback: "#2471a3", ramp: "#8e44ad", pause: "#7d3c98", resume: "#148f77" };

  function color(i) {
    return PALETTE[i % PALETTE.length];
  }

  // Vertical marks: kills and restarts (from the cell events), drains,
  // failbacks and ramp steps (when their table was applied).
  function marksFrom(events, audit) {
    const marks = [];
    for (const e of events || []) {
      marks.push({ t: e.at_ms / 1000, kind: e.action, label: e.action + " " + e.cell });
    }
    for (const a of audit || []) {
      if (a.applied_at_ms == null) continue;
      const kind = a.action === "drain" || a.action === "failback" ? a.action : "ramp";
      marks.push({ t: a.applied_at_ms / 1000, kind, label: a.action + " " + a.cell + " v" + a.table_version });
    }
    return marks.sort((x, y) => x.t - y.t);
  }

  function marksPlugin(getMarks) {
    return {
      hooks: {
        draw: [
          (u) => {
            const ctx = u.ctx;
            const dpr = window.devicePixelRatio || 1;
            ctx.save();
            getMarks().forEach((m, i) => {
              const x = u.valToPos(m.t, "x", true);
              if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) return;
              ctx.strokeStyle = ctx.fillStyle = MARK_COLORS[m.kind] || "#555";
              ctx.lineWidth = 1.5 * dpr;
              ctx.setLineDash([5 * dpr, 4 * dpr]);
              ctx.beginPath();
              ctx.moveTo(x, u.bbox.top);
              ctx.lineTo(x, u.bbox.top + u.bbox.height);
              ctx.stroke();
              ctx.setLineDash([]);
              ctx.font = 11 * dpr + "px sans-serif";
              ctx.fillText(m.label, x + 3 * dpr, u.bbox.top + (12 + (i % 4) * 13) * dpr);
            });
            ctx.restore();
          },
        ],
      },
    };
  }

  // Requests/s served per cell (solid) and errors/s of each cell's users (dashed).
  function trafficChart(el, cells, width, getMarks) {
    const series = [{ label: "t (s)" }];
    cells.forEach((c, i) => series.push({ label: c, stroke: color(i), width: 2 }));
    cells.forEach((c, i) => series.push({ label: c + " errors", stroke: color(i), dash: [4, 4], width: 1 }));
    const opts = {
      width,
      height: 260,
      series,
      scales: { x: { time: false } },
      legend: { live: false },
      axes: [{ label: "seconds since start" }, { label: "requests / s" }],
      plugins: [marksPlugin(getMarks)],
    };
    return new uPlot(opts, trafficData(null, cells), el);
  }

  function trafficData(s, cells) {
    if (!s) return [[]].concat(cells.map(() => []), cells.map(() => []));
    return [s.t].concat(
      cells.map((c) => s.served[c] || []),
      cells.map((c) => s.errors[c] || []),
    );
  }

  // A series without its last second (the one still filling, or cut short).
  function withoutLast(s) {
    const cut = (a) => (a || []).slice(0, Math.max(0, s.t.length - 1));
    const each = (m) => Object.fromEntries(Object.entries(m || {}).map(([c, v]) => [c, cut(v)]));
    return { t: cut(s.t), served: each(s.served), errors: each(s.errors), p50_ms: cut(s.p50_ms), p99_ms: cut(s.p99_ms) };
  }

  // p50 and p99 latency per second.
  function latencyChart(el, width, getMarks) {
    const opts = {
      width,
      height: 200,
      series: [
        { label: "t (s)" },
        { label: "p50 ms", stroke: "#2f6fdb", width: 2 },
        { label: "p99 ms", stroke: "#e4572e", width: 2 },
      ],
      scales: { x: { time: false } },
      legend: { live: false },
      axes: [{ label: "seconds since start" }, { label: "latency (ms)" }],
      plugins: [marksPlugin(getMarks)],
    };
    return new uPlot(opts, latencyData(null), el);
  }

  function latencyData(s) {
    return s ? [s.t, s.p50_ms, s.p99_ms] : [[], [], []];
  }

  function esc(v) {
    return String(v == null ? "" : v).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
  }

  function ms(v) {
    return v == null ? "-" : Math.round(v) + " ms";
  }

  // One row per switch: detect (kill -> first bad observation, drains only),
  // decide (observation -> intent), commit (intent -> table), apply (table ->
  // every live router), as proportional bars.
  function switchRows(events, audit) {
    return (audit || []).map((a) => {
      const kill = (events || []).filter((e) => e.action === "kill" && e.cell === a.cell && e.at_ms <= a.detected_at_ms).pop();
      // failover::sla::SwitchPhases' phases, plus the demo's own notice (kill -> first bad observation)
      const notice = a.action === "drain" && kill ? a.detected_at_ms - kill.at_ms : null;
      const detect = a.decided_at_ms - a.detected_at_ms;
      const decide = a.intent_at_ms - a.decided_at_ms;
      const commit = a.committed_at_ms == null ? null : a.committed_at_ms - a.intent_at_ms;
      const apply = a.applied_at_ms == null || a.committed_at_ms == null ? null : a.applied_at_ms - a.committed_at_ms;
      return { label: a.action + " " + a.cell + " (v" + a.table_version + ")", notice, detect, decide, commit, apply };
    });
  }

  function switchHtml(rows) {
    if (!rows.length) return '<p class="muted">no switch yet</p>';
    const total = Math.max(1, ...rows.map((r) => (r.notice || 0) + (r.detect || 0) + (r.decide || 0) + (r.commit || 0) + (r.apply || 0)));
    return rows
      .map((r) => {
        const parts = ["notice", "detect", "decide", "commit", "apply"]
          .filter((p) => r[p] != null)
          .map((p) => '<span class="seg ' + p + '" style="width:' + Math.max(0.5, (100 * r[p]) / total) + '%" title="' + p + " " + ms(r[p]) + '"></span>')
          .join("");
        const text = ["notice", "detect", "decide", "commit", "apply"].map((p) => p + " " + ms(r[p])).join(" · ");
        return '<div class="switch"><div class="switch-label">' + esc(r.label) + '</div><div class="bar">' + parts + '</div><div class="switch-text">' + text + "</div></div>";
      })
      .join("");
  }

  function auditHtml(rows) {
    return (rows || [])
      .map(
        (a) =>
          '<tr data-action="' + esc(a.action) + '" data-cell="' + esc(a.cell) + '" data-status="' + esc(a.status) + '">' +
          "<td>" + esc(a.action) + "</td><td>" + esc(a.cell) + "</td><td>" + esc(a.from) + " &rarr; " + esc(a.to) + "</td>" +
          "<td>v" + esc(a.table_version) + "</td><td>" + esc(a.status) + "</td>" +
          "<td>" + (a.applied_at_ms == null ? "-" : (a.applied_at_ms / 1000).toFixed(2) + " s") + "</td><td>" + esc(a.reason) + "</td></tr>",
      )
      .join("");
  }

  return { color, withoutLast, marksFrom, trafficChart, trafficData, latencyChart, latencyData, switchRows, switchHtml, auditHtml, esc, ms };
})();
