//! The alert sink: payloads on the wire to a local Alertmanager stand-in
//! (axum on 127.0.0.1:0), resolve after failback, de-duplication and repeat
//! on paused time, the drop-oldest queue while the receiver is down, health
//! scores, replication lag and failed switches.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(all(feature = "alerts-http", feature = "sql"))]

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use cellctx::CellId;
use failover::alert::{Alert, AlertConfig, AlertSink, AlertmanagerClient, Labels};
use failover::{CellSpec, Decision, DecisionConfig, DecisionEngine, DrainReason, Failback, RampCurve, spawn_engine};
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tokio::time::Instant;

fn id(s: &str) -> CellId {
    s.parse().unwrap()
}

// ---------------------------------------------------------------- receivers

/// An Alertmanager stand-in: records every accepted `POST /api/v2/alerts`
/// body, answers 503 while `up` is false.
#[derive(Default)]
struct Receiver {
    up: AtomicBool,
    requests: AtomicUsize,
    accepted: Mutex<Vec<Value>>,
    content_types: Mutex<Vec<String>>,
}

impl Receiver {
    /// Every alert accepted so far, in arrival order.
    fn alerts(&self) -> Vec<Value> {
        self.accepted.lock().unwrap().iter().flat_map(|b| b.as_array().unwrap().clone()).collect()
    }
}

async fn alerts_endpoint(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: String) -> StatusCode {
    r.requests.fetch_add(1, Ordering::SeqCst);
    if !r.up.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let ct = headers.get(http::header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    r.content_types.lock().unwrap().push(ct);
    r.accepted.lock().unwrap().push(serde_json::from_str(&body).unwrap());
    StatusCode::OK
}

async fn alertmanager(up: bool) -> (String, Arc<Receiver>) {
    let r = Arc::new(Receiver::default());
    r.up.store(up, Ordering::SeqCst);
    let app = Router::new().route("/api/v2/alerts", post(alerts_endpoint)).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), r)
}

/// A plain `tower::Service` receiver recording what it gets.
#[derive(Clone)]
struct Recorder(Arc<Mutex<Vec<Alert>>>);

impl tower::Service<Vec<Alert>> for Recorder {
    type Response = ();
    type Error = Infallible;
    type Future = std::future::Ready<Result<(), Infallible>>;
    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, batch: Vec<Alert>) -> Self::Future {
        self.0.lock().unwrap().extend(batch);
        std::future::ready(Ok(()))
    }
}

fn recorder() -> (Recorder, Arc<Mutex<Vec<Alert>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    (Recorder(got.clone()), got)
}

/// Waits (polling) until `cond` holds; fails after 10 s of (possibly paused) time.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn drain(cell: &CellId) -> Decision {
    Decision::Drain { cell: cell.clone(), reason: DrainReason::Manual, detected_at: Instant::now(), decided_at: Instant::now() }
}

fn restored(cell: &CellId) -> Decision {
    Decision::Restored { cell: cell.clone(), at: Instant::now() }
}

// ---------------------------------------------------------------- scenarios

/// A drain from the running engine reaches Alertmanager as a firing alert
/// (labels, annotations, startsAt, no endsAt, JSON content type); once the
/// cell has failed back, the same labels arrive again with endsAt set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_fires_and_failback_resolves_on_the_wire() {
    let (base, am) = alertmanager(true).await;
    let config = AlertConfig::new()
        .with_label("service", "orders")
        .unwrap()
        .with_generator_url("http://control-plane:8080/plan");
    let sink = AlertSink::spawn(config, AlertmanagerClient::try_new(&base).unwrap());

    let (a, b) = (id("eu-1"), id("eu-2"));
    let config = DecisionConfig::new()
        .with_min_dwell(Duration::from_millis(50))
        .with_recover(0.001, Duration::from_millis(50))
        .with_failback(Failback::Ramp(RampCurve::try_new(vec![(Duration::ZERO, 1.0)]).unwrap()));
    let engine = DecisionEngine::try_new(
        config,
        vec![CellSpec::new(a.clone()).with_failover([b.clone()]), CellSpec::new(b.clone()).with_headroom_rps(100.0)],
    )
    .unwrap();
    let engine = spawn_engine(engine, Vec::new(), Duration::from_millis(10));
    let _watch = sink.watch_engine(&engine);

    engine.drain(&a).await.unwrap();
    // No traffic is no evidence of failure: after the dwell and the recover
    // window the engine fails the cell back on its own.
    until("the drain and its resolve", || am.alerts().len() >= 2).await;
    let alerts = am.alerts();
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    let (fired, resolved) = (&alerts[0], &alerts[1]);
    let labels = json!({ "alertname": "CellDrained", "cell": "eu-1", "severity": "critical", "service": "orders" });
    assert_eq!(fired["labels"], labels);
    assert_eq!(fired["annotations"]["summary"], "cell eu-1 drained: its traffic goes to its failover cells");
    assert_eq!(fired["annotations"]["description"], "drained by an operator");
    assert_eq!(fired["generatorURL"], "http://control-plane:8080/plan");
    let starts = fired["startsAt"].as_str().unwrap();
    assert!(starts.len() == 24 && starts.ends_with('Z') && starts.as_bytes()[10] == b'T', "{starts}");
    assert!(fired.get("endsAt").is_none(), "a firing alert has no endsAt: {fired}");
    let keys: Vec<&str> = fired.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["annotations", "generatorURL", "labels", "startsAt"]);

    assert_eq!(resolved["labels"], labels, "the resolve carries the same labels");
    assert_eq!(resolved["startsAt"], starts);
    let ends = resolved["endsAt"].as_str().unwrap();
    assert!(ends >= starts, "{starts} .. {ends}");
    assert_eq!(resolved["annotations"]["resolution"], "failback complete: the cell takes all its traffic again");
    assert!(am.content_types.lock().unwrap().iter().all(|c| c == "application/json"));
    assert!(sink.firing().is_empty());
    // the sink counts a send once its response is read, after the receiver has it
    until("the sink counts both sends", || sink.sent() == 2).await;
    assert_eq!((sink.sent(), sink.dropped(), sink.send_failures()), (2, 0, 0));
}

/// On the wire: the same drain fired three times reaches Alertmanager once
/// (one request, one alert); the repeats never enter the queue.
#[tokio::test]
async fn repeated_drain_reaches_alertmanager_once() {
    let (base, am) = alertmanager(true).await;
    let sink = AlertSink::spawn(AlertConfig::new(), AlertmanagerClient::try_new(&base).unwrap());
    let a = id("a");
    for _ in 0..3 {
        sink.on_decision(&drain(&a));
    }
    assert_eq!(sink.deduplicated(), 2);
    until("the delivery", || sink.sent() == 1 && sink.queued() == 0).await;
    assert_eq!(am.requests.load(Ordering::SeqCst), 1);
    let alerts = am.alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["labels"]["alertname"], "CellDrained");
}

/// Firing the same labels again within the repeat interval sends nothing;
/// a still-firing alert is sent again once per interval with its original
/// startsAt; other labels are other alerts; resolving twice sends one resolve.
#[tokio::test(start_paused = true)]
async fn same_labels_are_sent_once_per_repeat_interval() {
    let (svc, got) = recorder();
    let config = AlertConfig::new().with_repeat_interval(Duration::from_secs(60)).unwrap();
    let sink = AlertSink::spawn(config, svc);
    let (a, b) = (id("a"), id("b"));
    for _ in 0..3 {
        sink.on_decision(&drain(&a));
    }
    until("the first send", || got.lock().unwrap().len() == 1).await;
    assert_eq!(sink.deduplicated(), 2);
    tokio::time::sleep(Duration::from_secs(30)).await;
    sink.on_decision(&drain(&a));
    sink.on_decision(&drain(&b));
    until("b's alert", || got.lock().unwrap().len() == 2).await;
    assert_eq!(sink.deduplicated(), 3);
    assert_eq!(got.lock().unwrap()[1].labels["cell"], "b");

    // 60 s after a's first send, the sink sends it again by itself.
    tokio::time::sleep(Duration::from_secs(31)).await;
    until("a's repeat", || got.lock().unwrap().len() == 3).await;
    let sent = got.lock().unwrap().clone();
    assert_eq!(sent[2].labels, sent[0].labels);
    assert_eq!(sent[2].starts_at, sent[0].starts_at);
    assert!(!sent[2].is_resolved());

    sink.on_decision(&restored(&a));
    sink.on_decision(&restored(&a));
    until("a's resolve", || got.lock().unwrap().len() == 4).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = got.lock().unwrap().clone();
    assert_eq!(sent.len(), 4, "one resolve only");
    assert!(sent[3].is_resolved() && sent[3].labels == sent[0].labels);
    let firing: Vec<Labels> = sink.firing();
    assert_eq!(firing.len(), 1);
    assert_eq!(firing[0]["cell"], "b");
}

/// While the receiver answers 503, nothing is lost silently: the queue keeps
/// the newest alerts up to its capacity, the oldest are dropped and counted
/// (the counter and the `failover.alerts.dropped` instrument), and the kept
/// ones are delivered, in order, once the receiver is back.
#[tokio::test]
async fn receiver_down_drops_the_oldest_and_counts_them() {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder().with_reader(PeriodicReader::builder(exporter.clone()).build()).build();
    let (base, am) = alertmanager(false).await;
    let config = AlertConfig::new()
        .with_queue_capacity(4)
        .unwrap()
        .with_retry_backoff(Duration::from_millis(5), Duration::from_millis(20))
        .unwrap();
    let sink = AlertSink::spawn_with_meter(config, AlertmanagerClient::try_new(&base).unwrap(), &provider.meter("failover"));
    let cell = id("a");
    // Ten distinct alerts, enqueued without waiting for anything.
    for i in 0..10 {
        sink.observe_replication_lag(&id(&format!("o{i}")), &cell, Duration::from_secs(60));
    }
    until("the oldest six dropped", || sink.dropped() == 6 && sink.send_failures() >= 1).await;
    assert!(am.requests.load(Ordering::SeqCst) >= 1);
    assert!(am.alerts().is_empty());
    assert_eq!(sink.sent(), 0);

    am.up.store(true, Ordering::SeqCst);
    until("the kept alerts delivered", || sink.sent() == 4).await;
    let origins: Vec<String> =
        am.alerts().iter().map(|a| a["labels"]["origin"].as_str().unwrap().to_string()).collect();
    assert_eq!(origins, ["o6", "o7", "o8", "o9"]);
    assert_eq!(sink.dropped(), 6);

    provider.force_flush().unwrap();
    let mut dropped = None;
    for rm in exporter.get_finished_metrics().unwrap() {
        for sm in rm.scope_metrics() {
            for m in sm.metrics() {
                if m.name() == failover::alert::metrics::ALERTS_DROPPED
                    && let AggregatedMetrics::U64(MetricData::Sum(s)) = m.data()
                {
                    dropped = Some(s.data_points().map(|d| d.value()).sum::<u64>());
                }
            }
        }
    }
    assert_eq!(dropped, Some(6));
}

/// A receiver nobody listens on: the caller never waits, the failure is
/// counted and the alert stays queued for the next attempt.
#[tokio::test]
async fn unreachable_receiver_counts_failures_and_keeps_the_alert() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = AlertConfig::new().with_retry_backoff(Duration::from_millis(5), Duration::from_millis(20)).unwrap();
    let sink = AlertSink::spawn(config, AlertmanagerClient::try_new(&format!("http://127.0.0.1:{port}")).unwrap());
    sink.on_decision(&drain(&id("a")));
    until("two failed attempts", || sink.send_failures() >= 2).await;
    assert_eq!((sink.sent(), sink.dropped()), (0, 0));
    until("the alert back in the queue", || sink.queued() == 1).await;
    assert!(matches!(AlertmanagerClient::try_new("https://am:9093"), Err(failover::Error::Config(_))));
    assert!(matches!(AlertmanagerClient::try_new("not a url"), Err(failover::Error::Config(_))));
    assert_eq!(
        AlertmanagerClient::try_new("http://am:9093/prefix/").unwrap().uri().to_string(),
        "http://am:9093/prefix/api/v2/alerts"
    );
}

/// A cell whose health score falls under the threshold (60) fires
/// `CellHealthScoreLow` with its score; back above, it resolves.
#[tokio::test(start_paused = true)]
async fn low_health_score_fires_and_resolves() {
    use health::{FnProbe, HealthHub, ProbeOutcome, ProbeSpec, Scheduler};

    let hub = HealthHub::default();
    let up = Arc::new(AtomicBool::new(true));
    let u = up.clone();
    let probe = FnProbe::new(move || {
        let up = u.load(Ordering::SeqCst);
        async move { if up { Ok(ProbeOutcome::up().with_hit_ratio(0.99)) } else { Err("down") } }
    });
    let cell = id("shanghai");
    let running = Scheduler::try_new(&hub, 2)
        .unwrap()
        .with_probe(ProbeSpec::new(cell.clone(), "cache", probe).with_interval(Duration::from_secs(1)))
        .unwrap()
        .start();
    let (svc, got) = recorder();
    let sink = AlertSink::spawn(AlertConfig::new(), svc);
    let _watch = sink.watch_health(hub.subscribe());
    until("a healthy score", || hub.cell(&cell).is_some_and(|c| c.healthy)).await;
    assert!(got.lock().unwrap().is_empty(), "a healthy cell alerts");

    up.store(false, Ordering::SeqCst);
    until("the alert", || !got.lock().unwrap().is_empty()).await;
    let fired = got.lock().unwrap()[0].clone();
    assert_eq!(fired.name(), "CellHealthScoreLow");
    assert_eq!((fired.labels["cell"].as_str(), fired.labels["severity"].as_str()), ("shanghai", "warning"));
    assert_eq!((fired.annotations["score"].as_str(), fired.annotations["threshold"].as_str()), ("0", "60"));

    up.store(true, Ordering::SeqCst);
    until("the resolve", || got.lock().unwrap().iter().any(Alert::is_resolved)).await;
    let sent = got.lock().unwrap().clone();
    let resolved = sent.iter().find(|a| a.is_resolved()).unwrap();
    assert_eq!(resolved.labels, fired.labels);
    // Snapshots arrive every second while the cell is down: sent once.
    assert_eq!(sent.iter().filter(|a| !a.is_resolved()).count(), 1);
    running.shutdown().await;
}

/// Replication lag over the bound fires per (origin, cell), under it resolves.
#[tokio::test(start_paused = true)]
async fn replication_lag_over_the_bound_fires_and_resolves() {
    let (svc, got) = recorder();
    let sink = AlertSink::spawn(AlertConfig::new().with_max_replication_lag(Duration::from_secs(2)), svc);
    let (eu, us, ap) = (id("eu"), id("us"), id("ap"));
    sink.observe_replication_lag(&us, &eu, Duration::from_secs(2)); // at the bound: fine
    sink.observe_replication_lag(&us, &eu, Duration::from_millis(2_500));
    sink.observe_replication_lag(&ap, &eu, Duration::from_secs(9));
    until("two alerts", || got.lock().unwrap().len() == 2).await;
    sink.observe_replication_lag(&us, &eu, Duration::from_millis(100));
    until("the resolve", || got.lock().unwrap().len() == 3).await;
    let sent = got.lock().unwrap().clone();
    assert_eq!(sent[0].name(), "ReplicationLagHigh");
    assert_eq!((sent[0].labels["origin"].as_str(), sent[0].labels["cell"].as_str()), ("us", "eu"));
    assert_eq!((sent[0].annotations["lag_ms"].as_str(), sent[0].annotations["bound_ms"].as_str()), ("2500", "2000"));
    assert_eq!(sent[1].labels["origin"], "ap");
    assert!(sent[2].is_resolved() && sent[2].labels == sent[0].labels);
    assert_eq!(sink.firing().len(), 1);
}

/// The controller's failed switch (a cell the engine knows but the routing
/// table does not) fires `TrafficSwitchFailed` through the controller's event
/// stream; a later successful switch of that cell resolves it.
#[tokio::test]
async fn failed_switch_from_the_controller_fires() {
    use cellrouter::{Cell, RoutingTable, TableStore};
    use failover::audit::AuditLog;
    use failover::{Controller, ControllerEvent, LocalSwitch};

    let (a, b, ghost, eu) = (id("a"), id("b"), id("ghost"), id("eu"));
    let mut cell_a = Cell::new(a.clone(), eu.clone(), "http://127.0.0.1:1");
    cell_a.failover = vec![b.clone()];
    let table = RoutingTable::uniform(eu.clone(), vec![cell_a, Cell::new(b.clone(), eu, "http://127.0.0.1:2")], 64);
    let store = TableStore::with_table(table.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("audit.db").display());
    let audit = AuditLog::connect(&url, "failover_audit").await.unwrap();
    let switch = LocalSwitch::new(store, audit, idgen::Generator::try_new(idgen::Layout::seed(), 0, 1).unwrap());
    let mut specs = CellSpec::from_table(&table, 10.0);
    specs.push(CellSpec::new(ghost.clone()));
    let engine = DecisionEngine::try_new(DecisionConfig::new().with_max_drained(3), specs).unwrap();
    let engine = spawn_engine(engine, Vec::new(), Duration::from_secs(1));
    let controller = Controller::new(switch).spawn(&engine).await.unwrap();
    let (svc, got) = recorder();
    let sink = AlertSink::spawn(AlertConfig::new(), svc);
    let _w1 = sink.watch_controller(&controller);

    engine.drain(&ghost).await.unwrap();
    until("the failed switch alert", || got.lock().unwrap().len() == 1).await;
    let fired = got.lock().unwrap()[0].clone();
    assert_eq!(fired.name(), "TrafficSwitchFailed");
    assert_eq!((fired.labels["cell"].as_str(), fired.labels["severity"].as_str()), ("ghost", "critical"));
    assert!(fired.annotations["description"].contains("ghost"), "{:?}", fired.annotations);

    // A switch of another cell does not resolve it; one of this cell does.
    engine.drain(&a).await.unwrap();
    sink.on_controller_event(&ControllerEvent::NoChange { cell: ghost.clone(), version: 1 });
    until("the resolve", || got.lock().unwrap().len() == 2).await;
    let sent = got.lock().unwrap().clone();
    assert!(sent[1].is_resolved() && sent[1].labels == fired.labels);
}

/// After missed decisions the sink re-reads the plan: drained and awaiting
/// cells fire (awaiting also `CellFailbackPending`), serving cells resolve.
#[tokio::test(start_paused = true)]
async fn plan_resync_fires_and_resolves_drains() {
    use failover::{Allocation, CellPhase, Plan};

    let (svc, got) = recorder();
    let sink = AlertSink::spawn(AlertConfig::new(), svc);
    let alloc = |phase| Allocation { phase, share: 0.0, spill: Vec::new(), shed: 0.0, load_rps: 0.0 };
    let mut plan = Plan::default();
    plan.cells.insert(id("a"), alloc(CellPhase::Drained));
    plan.cells.insert(id("b"), alloc(CellPhase::AwaitingFailback));
    plan.cells.insert(id("c"), alloc(CellPhase::Serving));
    sink.on_plan(&plan);
    until("three alerts", || got.lock().unwrap().len() == 3).await;
    let names: Vec<(String, String)> = sink
        .firing()
        .iter()
        .map(|l| (l["alertname"].clone(), l["cell"].clone()))
        .collect();
    assert_eq!(
        names,
        [
            ("CellDrained".to_string(), "a".to_string()),
            ("CellDrained".into(), "b".into()),
            ("CellFailbackPending".into(), "b".into()),
        ]
    );
    plan.cells.insert(id("a"), alloc(CellPhase::Serving));
    plan.cells.insert(id("b"), alloc(CellPhase::Ramping { share: 0.5 }));
    sink.on_plan(&plan);
    until("two resolves", || got.lock().unwrap().len() == 5).await;
    let sent = got.lock().unwrap().clone();
    assert!(sent[3..].iter().all(Alert::is_resolved));
    assert_eq!(sink.firing().len(), 1, "b stays drained while ramping");
    assert_eq!(sink.deduplicated(), 1, "b's drain was already firing");
}
