//! The run command with two controller processes against etcd
//! (`CELL_TEST_ETCD_ENDPOINTS`; scripts/test starts a private etcd): both
//! hear the probers and the gateway, exactly one leads, and the kill is
//! switched once (one drain row, one failback row).

#![cfg(feature = "etcd")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)] // each test binary uses part of it
mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn two_controllers_elect_one_leader_and_switch_once() {
    let etcd = std::env::var("CELL_TEST_ETCD_ENDPOINTS")
        .expect("CELL_TEST_ETCD_ENDPOINTS must name an etcd (scripts/test starts a private one and sets it)");
    let mut child = support::demo(&["--controllers", "2", "--duration", "10", "--rps", "80", "--kill", "beijing", "--json"])
        .env("ETCD_ENDPOINTS", &etcd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the demo binary runs");
    let stderr = support::lines(child.stderr.take().unwrap());
    let mut controllers = Vec::new();
    let mut leaders = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while leaders.is_none() && Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        for line in stderr.try_iter() {
            if let Some(rest) = line.strip_prefix("demo: metrics controller ") {
                controllers.push(rest.rsplit(' ').next().unwrap().trim_end_matches("/metrics").to_string());
            }
        }
        let statuses: Vec<serde_json::Value> = controllers.iter().filter_map(|c| support::get_json(c, "/admin/status")).collect();
        if controllers.len() == 2 && statuses.len() == 2 && statuses.iter().all(|s| s["engine"] == true) {
            let leading: Vec<u64> = statuses.iter().filter_map(|s| s["leader_term"].as_u64()).collect();
            if !leading.is_empty() {
                leaders = Some((leading, statuses));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (leading, statuses) = leaders.expect("two controllers running, one of them leading");
    assert_eq!(leading.len(), 1, "exactly one controller leads: {statuses:?}");
    for s in &statuses {
        assert_eq!(s["probers"], serde_json::json!(["prober-0", "prober-1"]), "every controller hears every prober: {s}");
    }

    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the demo failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: serde_json::Value = serde_json::from_str(stdout.lines().last().expect("a JSON line")).unwrap();
    assert_eq!(r["lost_writes"], 0, "{r}");
    assert_eq!(r["converged"], true, "{r}");
    let rows: Vec<&serde_json::Value> = r["audit_rows"].as_array().unwrap().iter().filter(|a| a["cell"] == "beijing").collect();
    let actions: Vec<&str> = rows.iter().map(|a| a["action"].as_str().unwrap()).collect();
    // one drain, then the failback ramp's steps (each its own table version),
    // the last restoring the cell: one switch each way, not one per controller
    assert_eq!(actions.first(), Some(&"drain"), "{r}");
    assert_eq!(actions.iter().filter(|a| **a == "drain").count(), 1, "one drain, not one per controller: {r}");
    assert_eq!(actions.last(), Some(&"failback"), "{r}");
    assert!(actions[1..actions.len() - 1].iter().all(|a| *a == "ramp"), "{r}");
    let versions: Vec<u64> = rows.iter().map(|a| a["table_version"].as_u64().unwrap()).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "each step its own table version: {r}");
    assert!(rows.iter().all(|a| a["status"] == "applied"), "{r}");
}
