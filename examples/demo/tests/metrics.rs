//! Every demo process serves Prometheus text at `/metrics`, and every metric
//! the Grafana dashboard (`grafana/cellsdk-demo.json`) queries is exported by
//! a demo run, with the labels the dashboard filters and groups on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)] // each test binary uses part of it
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The processes of a default run: the orchestrator, a controller, the
/// gateway, two probers and three cells.
const PROCESSES: usize = 8;

/// Metric name -> every label name seen on it.
type Seen = BTreeMap<String, BTreeSet<String>>;

const PROMQL_WORDS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"];
/// Aggregation operators: functions whose `(` may come after a `by (...)` clause.
const AGGREGATIONS: &[&str] = &["sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values"];

/// What one PromQL expression needs: metric names, and the label names it
/// matches or groups on.
fn wanted(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut metrics = BTreeSet::new();
    let mut labels = BTreeSet::new();
    let b = expr.as_bytes();
    let mut i = 0;
    let mut grouping = false;
    while i < b.len() {
        let c = b[i];
        if c == b'{' {
            // label matchers: name op "value", ...
            let end = expr[i..].find('}').map(|e| i + e).unwrap();
            for m in expr[i + 1..end].split(',') {
                let name: String = m.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    labels.insert(name);
                }
            }
            i = end + 1;
        } else if c == b'[' || c == b'"' {
            let close = if c == b'[' { ']' } else { '"' };
            i = expr[i + 1..].find(close).map(|e| i + 1 + e + 1).unwrap();
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            let word = &expr[start..i];
            let rest = expr[i..].trim_start();
            if PROMQL_WORDS.contains(&word) {
                grouping = matches!(word, "by" | "without");
            } else if grouping {
                // `by (a, b)`: label names until the closing parenthesis
                labels.insert(word.to_string());
                if rest.starts_with(')') {
                    grouping = false;
                }
            } else if !rest.starts_with('(') && !AGGREGATIONS.contains(&word) && !word.starts_with("__") {
                metrics.insert(word.to_string());
            }
        } else if c.is_ascii_digit() || c == b'.' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    (metrics, labels)
}

/// The dashboard's queries.
fn dashboard_exprs() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/cellsdk-demo.json");
    let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            out.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    out
}

/// GET `url` over plain HTTP/1.0; the body, or `None` when the process is down.
fn scrape(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/')?;
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.split(' ').nth(1).is_some_and(|code| code == "200").then(|| body.to_string())
}

/// Folds the series of a Prometheus text page into `seen` (histogram series
/// count under their `_bucket`/`_count`/`_sum` names, as PromQL sees them).
fn fold(page: &str, seen: &mut Seen, values: &mut BTreeSet<(String, String, String)>) {
    for line in page.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (name, labels) = match line.find('{') {
            Some(b) => (&line[..b], &line[b + 1..line.rfind('}').unwrap()]),
            None => (line.split_whitespace().next().unwrap(), ""),
        };
        let entry = seen.entry(name.to_string()).or_default();
        for kv in labels.split("\",").filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once("=\"").unwrap();
            entry.insert(k.trim().to_string());
            values.insert((name.to_string(), k.trim().to_string(), v.trim_end_matches('"').to_string()));
        }
    }
}

#[test]
fn the_parser_finds_metrics_and_labels() {
    let (m, l) = wanted(r#"sum by (cell, http_route) (rate(http_server_request_duration_seconds_count{otel_scope_name="demo.cell",x=~"5.."}[$__rate_interval]))"#);
    assert_eq!(m.into_iter().collect::<Vec<_>>(), ["http_server_request_duration_seconds_count"]);
    assert_eq!(l.into_iter().collect::<Vec<_>>(), ["cell", "http_route", "otel_scope_name", "x"]);
    let (m, l) = wanted("histogram_quantile(0.99, sum by (le) (rate(crdt_replication_lag_milliseconds_bucket[1m])))");
    assert_eq!(m.into_iter().collect::<Vec<_>>(), ["crdt_replication_lag_milliseconds_bucket"]);
    assert_eq!(l.into_iter().collect::<Vec<_>>(), ["le"]);
}

#[test]
fn every_dashboard_metric_is_exported_by_a_demo_run() {
    let mut want: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in dashboard_exprs() {
        let (metrics, labels) = wanted(&e);
        assert!(!metrics.is_empty(), "no metric in {e}");
        for m in metrics {
            // `le` exists on buckets only; `instance` is added by the scraper
            let bucket = m.ends_with("_bucket");
            let ls = labels.iter().filter(|l| *l != "instance" && (*l != "le" || bucket)).cloned();
            want.entry(m).or_default().extend(ls);
        }
    }
    assert!(want.len() >= 8, "the dashboard queries {} metrics", want.len());

    let mut child = support::demo(&["--duration", "12", "--rps", "80", "--kill", "shanghai", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the demo binary runs");
    // the processes' /metrics URLs, from stderr
    let stderr = support::lines(child.stderr.take().unwrap());
    let mut urls = BTreeSet::new();
    let mut seen = Seen::new();
    let mut values = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let missing = |seen: &Seen| -> Vec<String> {
        want.iter()
            .filter_map(|(m, ls)| match seen.get(m) {
                None => Some(format!("{m} (not exported)")),
                Some(have) => {
                    let lack: Vec<_> = ls.difference(have).collect();
                    (!lack.is_empty()).then(|| format!("{m} (no label {lack:?}; has {have:?})"))
                }
            })
            .collect()
    };
    while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        urls.extend(stderr.try_iter().filter_map(|l| Some(l.strip_prefix("demo: metrics ")?.rsplit(' ').next()?.to_string())));
        for u in &urls {
            if let Some(page) = scrape(u) {
                fold(&page, &mut seen, &mut values);
            }
        }
        if urls.len() == PROCESSES && missing(&seen).is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(urls.len(), PROCESSES, "every process prints its /metrics URL: {urls:?}");
    let missing = missing(&seen);
    assert!(missing.is_empty(), "dashboard metrics not exported by the demo: {missing:#?}");

    // the semantic-convention HTTP server histogram: the gateway's by serving cell, the cells' by route template
    let dur = "http_server_request_duration_seconds_count".to_string();
    for cell in ["beijing", "shanghai", "shenzhen"] {
        assert!(values.contains(&(dur.clone(), "cell".into(), cell.into())), "no {dur} series for cell {cell}");
    }
    assert!(values.contains(&(dur.clone(), "http_route".into(), "/posts/{post}/like".into())), "no route template on {dur}");
    assert!(values.contains(&(dur.clone(), "otel_scope_name".into(), "demo.gateway".into())), "no gateway series");
    assert!(
        !values.iter().any(|(m, k, v)| *m == dur && k == "http_route" && v.contains("/posts/") && !v.contains('{')),
        "a raw path leaked into http_route"
    );
}
