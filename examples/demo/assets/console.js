// The live console: one snapshot of the run every half second from
// /events (server-sent events); kill, restart and stop through /api.
"use strict";

const $ = (id) => document.getElementById(id);
let cells = [];
let traffic = null;
let latency = null;
let marks = [];
let lastSnap = null;

function chartWidth(el) {
  return Math.max(300, el.clientWidth - 4);
}

// The cards and charts, built once the cells are known.
function build(snap) {
  cells = snap.cells.map((c) => c.id);
  $("cells").innerHTML = snap.cells
    .map((c, i) => {
      const id = DemoCharts.esc(c.id);
      return (
        '<div class="cell" id="cell-' + id + '" data-cell="' + id + '" style="--c:' + DemoCharts.color(i) + '">' +
        "<h3>" + id + ' <span class="badge" id="proc-' + id + '"></span> <span class="badge" id="state-' + id + '"></span></h3>' +
        '<dl class="figures">' +
        '<dt>served</dt><dd><span class="rate" id="rate-' + id + '">0</span> req/s</dd>' +
        '<dt>errors</dt><dd><span id="errors-' + id + '">0</span> /s (its users)</dd>' +
        '<dt>slots</dt><dd id="slots-' + id + '">-</dd>' +
        '<dt>fails over to</dt><dd>' + DemoCharts.esc(c.failover.join(", ") || "-") + "</dd>" +
        "</dl>" +
        '<div class="actions"><button class="kill" id="kill-' + id + '" data-act="kill" data-cell="' + id + '">Kill</button>' +
        '<button class="restart" id="restart-' + id + '" data-act="restart" data-cell="' + id + '">Restart</button>' +
        '<button id="pause-' + id + '" data-act="pause" data-cell="' + id + '" title="SIGSTOP: the process hangs">Pause</button>' +
        '<button id="resume-' + id + '" data-act="resume" data-cell="' + id + '">Resume</button></div>' +
        "</div>"
      );
    })
    .join("");
  for (const b of document.querySelectorAll("button[data-act]")) {
    b.addEventListener("click", () => act(b.dataset.act, b.dataset.cell));
  }
  traffic = DemoCharts.trafficChart($("traffic"), cells, chartWidth($("traffic")), () => marks);
  latency = DemoCharts.latencyChart($("latency"), chartWidth($("latency")), () => marks);
}

async function act(action, cell) {
  $("control-msg").textContent = action + " " + cell + "…";
  try {
    const r = await fetch("/api/cells/" + encodeURIComponent(cell) + "/" + action, { method: "POST" });
    const body = await r.json();
    $("control-msg").textContent = r.ok
      ? action + " " + cell + " at " + (body.at_ms / 1000).toFixed(1) + " s"
      : action + " " + cell + " refused: " + body.error;
  } catch (e) {
    $("control-msg").textContent = action + " " + cell + " failed: " + e;
  }
}

// The last complete second of a per-second array (the newest is still filling).
function lastFull(arr) {
  return arr && arr.length >= 2 ? arr[arr.length - 2] : 0;
}

function render(snap) {
  lastSnap = snap;
  $("phase").textContent = snap.phase;
  if (snap.phase === "starting") return;
  if (!traffic) build(snap);
  $("clock").textContent = "t = " + (snap.t_ms / 1000).toFixed(1) + " s";
  $("table-version").textContent = snap.table_version == null ? "" : "routing table v" + snap.table_version;
  const s = snap.series;
  for (const c of snap.cells) {
    $("rate-" + c.id).textContent = lastFull(s.served[c.id]);
    $("errors-" + c.id).textContent = lastFull(s.errors[c.id]);
    const pct = snap.total_slots ? ((100 * c.slots) / snap.total_slots).toFixed(1) : "0";
    $("slots-" + c.id).textContent = c.slots + " (" + pct + " %)";
    $("proc-" + c.id).textContent = !c.alive ? "process killed" : c.paused ? "process paused" : "process up";
    $("proc-" + c.id).className = "badge " + (c.alive && !c.paused ? "up" : "down");
    $("state-" + c.id).textContent = c.state;
    $("state-" + c.id).className = "badge " + (c.state === "active" ? "up" : c.state === "down" ? "down" : "");
    $("cell-" + c.id).classList.toggle("dead", !c.alive || c.paused);
    $("kill-" + c.id).disabled = !c.alive;
    $("restart-" + c.id).disabled = c.alive;
    $("pause-" + c.id).disabled = !c.alive || c.paused;
    $("resume-" + c.id).disabled = !c.paused;
  }
  // slot shares
  $("share").innerHTML = snap.cells
    .filter((c) => c.slots > 0)
    .map((c) => {
      const i = cells.indexOf(c.id);
      const pct = (100 * c.slots) / Math.max(1, snap.total_slots);
      return '<span style="width:' + pct + "%;background:" + DemoCharts.color(i) + '">' + DemoCharts.esc(c.id) + " " + pct.toFixed(0) + "%</span>";
    })
    .join("");
  $("share-legend").innerHTML = snap.cells
    .map((c, i) => '<span><span class="dot" style="background:' + DemoCharts.color(i) + '"></span>' + DemoCharts.esc(c.id) + ": " + c.slots + " slots</span>")
    .join("");
  // replication
  const rows = snap.cells
    .map((c) => {
      const r = c.replication;
      const digest = r.digest == null ? "-" : r.digest;
      const dash = (v) => (v == null ? "-" : v);
      return "<tr><td>" + DemoCharts.esc(c.id) + "</td><td>" + dash(r.writes) + '</td><td id="behind-' + DemoCharts.esc(c.id) + '">' + dash(c.behind) +
        "</td><td>" + dash(r.pending_outbox) + "</td><td>" + dash(r.applied) + "</td><td><code>" + digest + "</code></td></tr>";
    })
    .join("");
  $("replication").innerHTML =
    '<p>CRDT digests: <span id="converged" class="' + (snap.converged ? "ok" : "muted") + '">' +
    (snap.converged ? "all live cells match" : "differ (writes in flight)") + "</span></p>" +
    "<table><thead><tr><th>cell</th><th>writes held</th><th>behind (lag)</th><th>outbox backlog</th><th>events applied</th><th>digest</th></tr></thead><tbody>" +
    rows + "</tbody></table>";
  // timeline and audit
  marks = DemoCharts.marksFrom(snap.events, snap.audit);
  $("switches").innerHTML = DemoCharts.switchHtml(DemoCharts.switchRows(snap.events, snap.audit));
  $("audit").innerHTML = DemoCharts.auditHtml(snap.audit);
  // the charts leave out the second still filling
  const full = DemoCharts.withoutLast(s);
  traffic.setData(DemoCharts.trafficData(full, cells));
  latency.setData(DemoCharts.latencyData(full));
}

$("stop").addEventListener("click", async () => {
  $("stop").disabled = true;
  await fetch("/api/stop", { method: "POST" });
});

window.addEventListener("resize", () => {
  if (traffic) traffic.setSize({ width: chartWidth($("traffic")), height: 260 });
  if (latency) latency.setSize({ width: chartWidth($("latency")), height: 200 });
});

const source = new EventSource("/events");
source.onmessage = (e) => render(JSON.parse(e.data));
source.onerror = () => {
  $("phase").textContent = lastSnap ? "run ended (connection closed)" : "connecting…";
};
