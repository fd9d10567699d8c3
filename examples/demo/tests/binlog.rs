//! `--replication binlog`: the demo against a private MariaDB with the binary
//! log on (`testkit::MariaDbServer`), the cells writing their business tables
//! only and a binlog relay per cell publishing them; the same correctness
//! figures as the outbox run. And the typed error without a MySQL/MariaDB.
#![cfg(feature = "binlog")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)] // each test binary uses part of it
mod support;

use std::process::Command;

use testkit::MariaDbServer;

/// Creates database `db` on `server` with the `mariadb` client.
fn create_database(server: &MariaDbServer, db: &str) {
    let port = server.addr().port().to_string();
    let out = Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-P", &port, "-u", "root", "-e", &format!("CREATE DATABASE {db}")])
        .output()
        .unwrap_or_else(|e| panic!("cannot run the mariadb client ({e}): install Debian's mariadb-client"));
    assert!(out.status.success(), "CREATE DATABASE: {}\n{}", String::from_utf8_lossy(&out.stderr), server.log());
}

#[test]
fn binlog_replication_loses_nothing_and_converges() {
    let server = MariaDbServer::start();
    create_database(&server, "demo");
    let out = support::demo(&["--replication", "binlog", "--duration", "8", "--rps", "100", "--kill", "beijing", "--json"])
        .env("DEMO_DATABASE_URL", format!("{}/demo", server.url()))
        .output()
        .expect("the demo binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}\n{stdout}");
    let r: serde_json::Value = serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("the last line is JSON");
    assert_eq!(r["replication"], "binlog", "{r}");
    assert!(r["acked_writes"].as_u64().unwrap() > 100, "{r}");
    assert_eq!(r["lost_writes"], 0, "{r}");
    assert_eq!(r["converged"], true, "{r}");
    assert_eq!(r["digests"].as_object().map(|d| d.len()), Some(3), "{r}");
    assert!(r["failover_served"].as_u64().unwrap() > 0, "{r}");
}

#[test]
fn binlog_replication_without_a_mysql_database_is_a_config_error() {
    let out = support::demo(&["--replication", "binlog", "--duration", "4", "--json"]).output().expect("the demo binary runs");
    assert!(!out.status.success(), "the demo ran without a database for the binlog");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DEMO_DATABASE_URL") && stderr.contains("binlog"), "{stderr}");
}
