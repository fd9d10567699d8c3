// The HTML report: renders the run's data, embedded in #report-data.
"use strict";

(() => {
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const r = data.report;
  // the last second is partial (the load stopped during it): left out
  const s = DemoCharts.withoutLast(data.series);
  const cells = Object.keys(r.cells);
  const $ = (id) => document.getElementById(id);
  const esc = DemoCharts.esc;
  const ms = DemoCharts.ms;
  const marks = DemoCharts.marksFrom(data.events, r.audit_rows);

  $("headline").textContent = "killed " + r.killed_cell + " at " + (r.kill_at_ms / 1000).toFixed(1) + " s · " + r.total_requests + " requests";
  const figures = [
    ["requests", r.total_requests],
    ["errors", r.errors_total],
    ["switch (kill → first success)", ms(r.switch_ms.total)],
    ["client errors during the switch", r.client_errors_during_switch],
    ["failback (restart → applied)", ms(r.failback_ms)],
    ["acknowledged writes", r.acked_writes],
    ["lost writes", r.lost_writes],
    ["converged", r.converged ? "yes" : "no"],
    ["misrouted", r.misrouted],
  ];
  $("summary").innerHTML = figures.map(([k, v]) => "<div>" + esc(k) + "<b>" + esc(v) + "</b></div>").join("");

  const width = (el) => Math.max(500, el.clientWidth - 4);
  DemoCharts.trafficChart($("traffic"), cells, width($("traffic")), () => marks).setData(DemoCharts.trafficData(s, cells));
  DemoCharts.latencyChart($("latency"), width($("latency")), () => marks).setData(DemoCharts.latencyData(s));

  $("switches").innerHTML = DemoCharts.switchHtml(DemoCharts.switchRows(data.events, r.audit_rows));
  $("cells").innerHTML = cells
    .map((c) => {
      const n = r.cells[c];
      return "<tr><td>" + esc(c) + "</td><td>" + n.requests + "</td><td>" + n.errors + "</td></tr>";
    })
    .join("");
  const blame = (b) =>
    b.kind === "switch" ? "switch " + b.switch + " " + b.phase : b.kind === "probe" ? "probe " + b.probe + " down" : "unattributed";
  $("attribution").innerHTML = r.sla_attribution.rows
    .map(
      (b) =>
        "<tr><td>" + esc(b.cell) + "</td><td>" + esc(blame(b)) + "</td><td>" + b.errors + "</td><td>" +
        (b.error_share * 100).toFixed(1) + " %</td><td>" + b.bad_intervals + "</td></tr>",
    )
    .join("");
  $("audit").innerHTML = DemoCharts.auditHtml(r.audit_rows);
})();
