//! Runs the demo binary in its short mode and checks the "Must show"
//! list from the JSON report (the last line of stdout).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn short_run_fails_over_fails_back_and_loses_nothing() {
    let out = Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(["--duration", "8", "--rps", "120", "--kill", "beijing", "--json"])
        .env_remove("KAFKA_BOOTSTRAP")
        .env_remove("ETCD_ENDPOINTS")
        .env_remove("DEMO_DATABASE_URL")
        .env_remove("DEMO_REDIS_URL")
        .env_remove("DEMO_AUDIT_URL")
        .output()
        .expect("the demo binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}\n{stdout}");
    let last = stdout.lines().last().expect("a JSON line");
    let r: serde_json::Value = serde_json::from_str(last).expect("the last line is JSON");

    // every user's requests landed on its home cell before the kill
    assert!(r["requests_before_kill"].as_u64().unwrap() > 50, "{r}");
    assert_eq!(r["off_home_before_kill"], 0, "{r}");
    assert_eq!(r["misrouted"], 0, "{r}");
    for cell in ["beijing", "shanghai", "shenzhen"] {
        assert!(r["cells"][cell]["requests"].as_u64().unwrap() > 0, "{cell} served nothing: {r}");
    }

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
    assert_eq!(r["converged"], true, "{r}");

    // an audit row for the drain and one for the failback, both applied, in order
    let rows = r["audit_rows"].as_array().unwrap();
    let drain = rows.iter().position(|a| a["action"] == "drain" && a["cell"] == "beijing").expect("a drain row");
    let back = rows.iter().position(|a| a["action"] == "failback" && a["cell"] == "beijing").expect("a failback row");
    assert!(drain < back, "{r}");
    assert!(rows[back]["table_version"].as_u64() > rows[drain]["table_version"].as_u64(), "{r}");
    assert!(rows.iter().all(|a| a["status"] == "applied"), "{r}");
}
