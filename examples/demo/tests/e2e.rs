//! Runs the demo binary in its short mode (once, shared by the tests here)
//! and checks the "Must show" list from the JSON report (the last line
//! of stdout) and the HTML report it wrote (`--report`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)] // each test binary uses part of it
mod support;

use support::html;

use std::sync::OnceLock;

const CELLS: [&str; 3] = ["beijing", "shanghai", "shenzhen"];

/// The short run: its JSON report and its HTML report.
struct Run {
    json: serde_json::Value,
    html: String,
}

fn short_run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temp dir");
        let report = dir.path().join("run.html");
        let out = support::demo(&["--duration", "8", "--rps", "120", "--kill", "beijing", "--json", "--report"])
            .arg(&report)
            .output()
            .expect("the demo binary runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "demo failed: {stderr}\n{stdout}");
        let last = stdout.lines().last().expect("a JSON line");
        let json = serde_json::from_str(last).expect("the last line is JSON");
        let html = std::fs::read_to_string(&report).expect("the HTML report was written");
        Run { json, html }
    })
}

#[test]
fn short_run_fails_over_fails_back_and_loses_nothing() {
    let r = &short_run().json;

    // every user's requests landed on its home cell before the kill
    assert!(r["requests_before_kill"].as_u64().unwrap() > 50, "{r}");
    assert_eq!(r["off_home_before_kill"], 0, "{r}");
    assert_eq!(r["misrouted"], 0, "{r}");
    for cell in CELLS {
        assert!(r["cells"][cell]["requests"].as_u64().unwrap() > 0, "{cell} served nothing: {r}");
    }

    // the gateway's retries on the failover cell hide the switch from clients
    assert_eq!(r["client_errors_during_switch"], 0, "{r}");
    assert_eq!(r["errors_by_phase"]["during_switch"]["errors"], 0, "{r}");
    let retries = &r["retries"];
    let (sent, received, retried) = (retries["sent"].as_u64().unwrap(), retries["received"].as_u64().unwrap(), retries["retried"].as_u64().unwrap());
    // each request sent at most once plus its retries (an attempt with no instance is not sent)
    assert!(sent <= received + retried && retried <= received, "{r}");

    // the failback ramps through the table: at least 3 steps, each a table
    // version of its own, the last one the cell fully back
    let steps = r["ramp_steps"].as_array().expect("ramp steps");
    assert!(steps.len() >= 3, "{r}");
    let versions: Vec<u64> = steps.iter().map(|s| s["table_version"].as_u64().unwrap()).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    assert_eq!(steps.last().unwrap()["to"], "state=active", "{r}");

    // the dead cell's users were served by their failover cell within 5 s of the kill
    assert_eq!(r["killed_cell"], "beijing");
    let total = r["switch_ms"]["total"].as_u64().expect("the dead cell's users were served again");
    assert!(total < 5000, "switch took {total} ms: {r}");
    assert!(r["failover_served"].as_u64().unwrap() > 0, "{r}");
    for phase in ["detect", "decide", "commit", "apply"] {
        assert!(r["switch_ms"][phase].is_u64(), "phase {phase} missing: {r}");
    }

    // no acknowledged write lost, every cell converged after failback
    assert!(r["acked_writes"].as_u64().unwrap() > 100, "{r}");
    assert_eq!(r["lost_writes"], 0, "{r}");

    // every failed request is charged once to its home cell and a phase; the
    // failures of the switch land in the killed cell's switch phases
    let budget = r["error_budget"].as_array().expect("an error budget");
    let charged: u64 = budget.iter().map(|b| b["errors"].as_u64().unwrap()).sum();
    assert_eq!(charged, r["errors_total"].as_u64().unwrap(), "{r}");
    if r["client_errors_during_switch"].as_u64().unwrap() > 0 {
        assert!(budget.iter().any(|b| b["cell"] == "beijing" && b["phase"] != "steady"), "{r}");
    }
    assert_eq!(r["converged"], true, "{r}");

    // the library's SLA gap attribution charges every failure once as well,
    // and the killed cell's detect-phase failures to a switch of that cell
    let sla = &r["sla_attribution"];
    let rows = sla["rows"].as_array().expect("SLA attribution rows");
    assert_eq!(sla["errors"], r["errors_total"], "{r}");
    assert_eq!(rows.iter().map(|b| b["errors"].as_u64().unwrap()).sum::<u64>(), r["errors_total"].as_u64().unwrap(), "{r}");
    assert_eq!(rows.iter().map(|b| b["bad_intervals"].as_u64().unwrap()).sum::<u64>(), sla["bad_intervals"].as_u64().unwrap(), "{r}");
    let in_detect = |pick: &dyn Fn(&serde_json::Value) -> bool, arr: &[serde_json::Value]| -> u64 {
        arr.iter().filter(|b| pick(b)).map(|b| b["errors"].as_u64().unwrap()).sum()
    };
    let budget_detect = in_detect(&|b| b["cell"] == "beijing" && b["phase"] == "detect", budget);
    let sla_detect = in_detect(&|b| b["cell"] == "beijing" && b["kind"] == "switch" && b["phase"] == "detect", rows);
    assert!(sla_detect >= budget_detect, "{r}");

    // an audit row for the drain and one for the failback, both applied, in order
    let rows = r["audit_rows"].as_array().unwrap();
    let drain = rows.iter().position(|a| a["action"] == "drain" && a["cell"] == "beijing").expect("a drain row");
    let back = rows.iter().position(|a| a["action"] == "failback" && a["cell"] == "beijing").expect("a failback row");
    assert!(drain < back, "{r}");
    assert!(rows[back]["table_version"].as_u64() > rows[drain]["table_version"].as_u64(), "{r}");
    assert!(rows.iter().all(|a| a["status"] == "applied"), "{r}");
}

#[test]
fn html_report_is_one_file_with_a_series_per_cell() {
    let run = short_run();
    let page = &run.html;
    // one file: nothing it would load from anywhere
    html::assert_self_contained(page);
    // the data: one served and one error series per cell, as long as the time axis
    let data = html::embedded_json(page, "report-data");
    let t = data["series"]["t"].as_array().expect("a time axis");
    assert!(t.len() >= 8, "{} seconds for an 8 s run", t.len());
    for key in ["served", "errors"] {
        let series = data["series"][key].as_object().expect("per-cell series");
        let mut cells: Vec<&str> = series.keys().map(String::as_str).collect();
        cells.sort_unstable();
        assert_eq!(cells, CELLS, "{key}");
        for (cell, values) in series {
            assert_eq!(values.as_array().map(Vec::len), Some(t.len()), "{key} of {cell}");
        }
    }
    // the series are the counters the JSON report counts
    for cell in CELLS {
        let served: u64 = data["series"]["served"][cell].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(served, run.json["cells"][cell]["requests"].as_u64().unwrap(), "{cell}");
    }
    // latency percentiles per second, and the marks' sources: kill, restart, drain, failback
    assert_eq!(data["series"]["p50_ms"].as_array().map(Vec::len), Some(t.len()));
    assert_eq!(data["series"]["p99_ms"].as_array().map(Vec::len), Some(t.len()));
    let actions: Vec<&str> = data["events"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["kill", "restart"]);
    let rows = data["report"]["audit_rows"].as_array().unwrap().iter().filter(|a| a["cell"] == "beijing");
    let audit: Vec<&str> = rows.map(|a| a["action"].as_str().unwrap()).collect();
    assert_eq!((audit.first(), audit.last()), (Some(&"drain"), Some(&"failback")), "{audit:?}");
    assert!(audit[1..audit.len() - 1].iter().all(|a| *a == "ramp" || *a == "drain"), "{audit:?}");
    let cells: Vec<&str> = data["events"].as_array().unwrap().iter().map(|e| e["cell"].as_str().unwrap()).collect();
    assert_eq!(cells, ["beijing", "beijing"]);
    assert_eq!(data["report"], run.json, "the page embeds the JSON report");
}
