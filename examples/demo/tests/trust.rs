//! The demo's trust boundary, tried from outside during a run: the gateway
//! routes only users it verified (tokens from the run's identity provider),
//! and a cell serves its posts API only to signed hops from the gateway.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)] // each test binary uses part of it
mod support;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// One HTTP/1.0 request; the status code and the body.
fn http(url: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let a = support::http(url, method, path, headers);
    (a.status, a.body)
}

#[test]
fn forged_users_are_refused_at_the_gateway_and_unsigned_hops_at_the_cells() {
    let mut child = support::demo(&["--duration", "10", "--rps", "60", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the demo binary runs");
    // the gateway's and the cells' addresses, from stderr
    let rx = support::lines(child.stderr.take().unwrap());
    let mut gateway = None;
    let mut cells = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while (gateway.is_none() || cells.len() < 3) && Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else { continue };
        if let Some(url) = line.strip_prefix("demo: gateway ") {
            gateway = Some(url.to_string());
        } else if let Some(rest) = line.strip_prefix("demo: metrics cell ") {
            let (cell, url) = rest.split_once(' ').unwrap();
            cells.insert(cell.to_string(), url.trim_end_matches("/metrics").to_string());
        }
    }
    let gateway = gateway.expect("the demo prints its gateway's URL");

    // at the gateway: a user named in X-User-ID without a token, or with a forged token, is not served
    let (status, _) = http(&gateway, "POST", "/posts/p1/like", &[("x-user-id", "beijing-user-1")]);
    assert_eq!(status, 401, "a client-chosen user without a token");
    let forged = "eyJhbGciOiJFZERTQSIsImtpZCI6ImRlbW8ifQ.eyJzdWIiOiJiZWlqaW5nLXVzZXItMSJ9.c2lnbmF0dXJl";
    let (status, _) = http(&gateway, "POST", "/posts/p1/like", &[("authorization", &format!("Bearer {forged}")), ("x-user-id", "x")]);
    assert_eq!(status, 401, "a forged token");

    // at a cell: the posts API refuses what did not come signed from the gateway,
    // whatever context headers the request states
    for (cell, url) in &cells {
        for path in ["/posts/p1/like", "/posts/p1/comments"] {
            let (status, body) = http(url, "POST", path, &[("x-user-id", "beijing-user-1"), ("x-cell-id", cell), ("x-cell-sig", "v2;iat=1;exp=9999999999;sig=AAAA")]);
            assert_eq!(status, 403, "{cell} {path}: {body}");
        }
        let (status, _) = http(url, "GET", "/posts/p1", &[("x-user-id", "shanghai-user-2")]);
        assert_eq!(status, 403, "{cell}: an unsigned read");
        // the operator's endpoints stay open
        let (status, _) = http(url, "GET", "/admin/status", &[]);
        assert_eq!(status, 200, "{cell}: /admin/status");
    }

    // meanwhile the run's own users, with their tokens, were served and lost nothing
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let last = String::from_utf8_lossy(&out.stdout).lines().last().unwrap().to_string();
    let r: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert!(r["acked_writes"].as_u64().unwrap() > 50, "{r}");
    assert_eq!(r["lost_writes"], 0, "{r}");
    assert_eq!(r["misrouted"], 0, "{r}");
}
