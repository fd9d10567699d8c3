//! Scheduler, handlers, axum, CellProber, TCP/HTTP probes, metrics and the
//! optional runtime-metrics and pprof endpoints. No external service needed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use cellctx::CellId;
use health::{
    CellHealth, CellProber, FnProbe, HealthError, HealthEvent, HealthHub, HttpProbe, PeerCell, ProbeKind, ProbeOutcome,
    ProbeSpec, ProbeState, Scheduler, ScorePolicy, TcpProbe,
};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::ServiceExt;

fn id(s: &str) -> CellId {
    CellId::new(s).unwrap()
}

async fn call<S>(svc: S, uri: &str) -> (StatusCode, String)
where
    S: tower::Service<Request<()>, Response = http::Response<health::HealthBody>, Error = std::convert::Infallible>,
{
    let resp = svc.oneshot(Request::get(uri).body(()).unwrap()).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

async fn wait_cell(hub: &HealthHub, cell: &CellId, pred: impl Fn(&CellHealth) -> bool) -> Arc<CellHealth> {
    let mut rx = hub.subscribe();
    let fut = async {
        loop {
            if let Some(c) = rx.borrow_and_update().get(cell).cloned().filter(|c| pred(c)) {
                return c;
            }
            rx.changed().await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .unwrap_or_else(|_| panic!("cell {cell} never reached the state: {:?}", hub.cell(cell)))
}

/// A probe whose answer the test switches.
fn switch(up: Arc<AtomicBool>) -> impl health::Probe {
    FnProbe::new(move || {
        let up = up.load(Ordering::SeqCst);
        async move { if up { Ok(ProbeOutcome::up().with_hit_ratio(0.99)) } else { Err("switched off") } }
    })
}

#[tokio::test(start_paused = true)]
async fn scheduler_runs_200_probes_at_most_16_at_once_each_at_its_interval() {
    const N: usize = 200;
    const RUN: Duration = Duration::from_millis(10);
    let hub = HealthHub::default();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let busy: Arc<Vec<AtomicBool>> = Arc::new((0..N).map(|_| AtomicBool::new(false)).collect());
    let starts: Arc<Vec<Mutex<Vec<Instant>>>> = Arc::new((0..N).map(|_| Mutex::new(Vec::new())).collect());
    let interval = |i: usize| Duration::from_millis(1000 + 250 * (i % 4) as u64);
    let t0 = Instant::now();
    let mut s = Scheduler::try_new(&hub, 16).unwrap();
    for i in 0..N {
        let (in_flight, max_seen, busy, starts) = (in_flight.clone(), max_seen.clone(), busy.clone(), starts.clone());
        let probe = FnProbe::new(move || {
            let (in_flight, max_seen, busy, starts) = (in_flight.clone(), max_seen.clone(), busy.clone(), starts.clone());
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                max_seen.fetch_max(now, Ordering::SeqCst);
                assert!(!busy[i].swap(true, Ordering::SeqCst), "probe {i} overlapped itself");
                starts[i].lock().unwrap().push(Instant::now());
                tokio::time::sleep(RUN).await;
                busy[i].store(false, Ordering::SeqCst);
                in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, HealthError>(ProbeOutcome::up())
            }
        });
        let cell = id(&format!("cell-{}", i % 10));
        s.add(ProbeSpec::new(cell, format!("p{i}"), probe).with_interval(interval(i)).with_jitter(Duration::ZERO))
            .unwrap();
    }
    let running = s.start();
    assert_eq!(running.len(), N);
    tokio::time::sleep(Duration::from_millis(10_800)).await;
    running.shutdown().await;

    assert_eq!(max_seen.load(Ordering::SeqCst), 16, "the bound is reached and never exceeded");
    // 200 runs queued at t=0 drain in 13 batches of 10 ms: no run starts later than that after its slot.
    let max_delay = RUN * (N as u32).div_ceil(16);
    for i in 0..N {
        let starts = starts[i].lock().unwrap();
        let expected = (10_800 / interval(i).as_millis() as usize) + 1;
        assert_eq!(starts.len(), expected, "probe {i} ran {} times", starts.len());
        for (k, at) in starts.iter().enumerate() {
            let slot = t0 + interval(i) * k as u32;
            assert!(*at >= slot && *at <= slot + max_delay, "probe {i} run {k} at {:?}", at.duration_since(t0));
        }
    }
    let snap = hub.snapshot();
    assert_eq!(snap.cells().count(), 10);
    assert!(snap.all_healthy());
}

#[tokio::test(start_paused = true)]
async fn handlers_flip_with_the_probe_and_reject_bad_cells() {
    let hub = HealthHub::default();
    let up = Arc::new(AtomicBool::new(true));
    let sh = id("shanghai");
    let running = Scheduler::try_new(&hub, 4)
        .unwrap()
        .with_probe(ProbeSpec::new(sh.clone(), "cache", switch(up.clone())).with_interval(Duration::from_secs(1)))
        .unwrap();
    // Registered but not run yet: pending, not ready.
    assert_eq!(hub.cell(&sh).unwrap().probes[0].state, ProbeState::Pending);
    let (status, body) = call(hub.readyz(), "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["cells"][0]["probes"][0]["state"], "pending");

    // Pending is not alerting: no score yet.
    assert_eq!(hub.snapshot().threshold(), 60);
    assert_eq!(hub.snapshot().alerting().count(), 0);

    let mut events = hub.events();
    let running = running.start();
    assert!(matches!(events.recv().await.unwrap(), HealthEvent::ProbeChanged { up: true, .. }));
    assert_eq!(events.recv().await.unwrap(), HealthEvent::Healthy { cell: sh.clone(), score: 100 });
    assert_eq!(hub.snapshot().alerting().count(), 0);
    assert_eq!(call(hub.livez(), "/livez").await, (StatusCode::OK, "ok".into()));
    assert_eq!(call(hub.readyz(), "/readyz").await, (StatusCode::OK, "ok".into()));
    assert_eq!(call(hub.healthz(), "/healthz?cell=shanghai").await, (StatusCode::OK, "ok".into()));
    assert_eq!(call(hub.healthz(), "/healthz?x=1&cell=shanghai").await, (StatusCode::OK, "ok".into()));
    assert_eq!(call(hub.healthz(), "/healthz").await, (StatusCode::OK, "ok".into()));

    for bad in ["Shanghai", "sh%20x", "", "a_b", &"x".repeat(33), "../../etc"] {
        let (status, body) = call(hub.healthz(), &format!("/healthz?cell={bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert!(body.contains("malformed"), "{bad:?}: {body}");
    }
    let (status, body) = call(hub.healthz(), "/healthz?cell").await;
    assert_eq!((status, body.contains("malformed")), (StatusCode::BAD_REQUEST, true));
    let (status, body) = call(hub.healthz(), "/healthz?cell=beijing").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("unknown cell"), "{body}");

    // Down: the next run flips the probe, the score and the handlers.
    up.store(false, Ordering::SeqCst);
    assert!(matches!(events.recv().await.unwrap(), HealthEvent::ProbeChanged { up: false, .. }));
    assert_eq!(events.recv().await.unwrap(), HealthEvent::Alert { cell: sh.clone(), score: 0, threshold: 60 });
    // The snapshot's level-triggered view agrees with the event.
    let alerting: Vec<_> = hub.snapshot().alerting().map(|c| (c.cell.clone(), c.score)).collect();
    assert_eq!(alerting, [(sh.clone(), 0)]);
    let (status, body) = call(hub.healthz(), "/healthz?cell=shanghai").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["score"], 0);
    assert_eq!(json["healthy"], false);
    assert_eq!(json["probes"][0]["name"], "cache");
    assert_eq!(json["probes"][0]["kind"], "custom");
    assert_eq!(json["probes"][0]["error"], "switched off");
    assert_eq!(call(hub.readyz(), "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(call(hub.livez(), "/livez").await.0, StatusCode::OK);

    up.store(true, Ordering::SeqCst);
    assert!(matches!(events.recv().await.unwrap(), HealthEvent::ProbeChanged { up: true, .. }));
    // The window still holds the failure: 2 of 3 succeeded.
    assert_eq!(events.recv().await.unwrap(), HealthEvent::Healthy { cell: sh.clone(), score: 67 });
    assert_eq!(hub.snapshot().alerting().count(), 0);
    assert_eq!(call(hub.healthz(), "/healthz?cell=shanghai").await.0, StatusCode::OK);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn score_weights_and_seed_thresholds() {
    let hub = HealthHub::try_new(ScorePolicy::default()).unwrap();
    let cell = id("hangzhou");
    // A cache under 95 % hits is halved; weights 10 (cache) and 30 (db).
    let cache = FnProbe::new(|| async { Ok::<_, HealthError>(ProbeOutcome::up().with_hit_ratio(0.90)) });
    let db = FnProbe::new(|| async { Ok::<_, HealthError>(ProbeOutcome::up()) }).with_kind(ProbeKind::Sql);
    let running = Scheduler::try_new(&hub, 2)
        .unwrap()
        .with_probe(ProbeSpec::new(cell.clone(), "cache", cache))
        .unwrap()
        .with_probe(ProbeSpec::new(cell.clone(), "db", db))
        .unwrap()
        .start();
    let c = wait_cell(&hub, &cell, |c| c.probes.iter().all(|p| p.state == ProbeState::Up)).await;
    assert_eq!(c.probe("cache").unwrap().score, 50);
    assert_eq!(c.probe("db").unwrap().weight, 30);
    assert_eq!(u32::from(c.score), (50 * 10 + 100 * 30 + 20) / 40);
    assert!(c.healthy);
    running.shutdown().await;

    // A slow probe beyond its timeout is a failure.
    let hub = HealthHub::default();
    let slow = FnProbe::new(|| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok::<_, HealthError>(ProbeOutcome::up())
    });
    let running = Scheduler::try_new(&hub, 1)
        .unwrap()
        .with_probe(ProbeSpec::new(cell.clone(), "slow", slow).with_timeout(Duration::from_millis(100)))
        .unwrap()
        .start();
    let c = wait_cell(&hub, &cell, |c| c.probes[0].state == ProbeState::Down).await;
    assert!(c.probes[0].error.as_deref().unwrap().contains("timed out"), "{c:?}");
    running.shutdown().await;
}

#[test]
fn invalid_config_is_an_error() {
    let hub = HealthHub::default();
    let p = || FnProbe::new(|| async { Ok::<_, HealthError>(ProbeOutcome::up()) });
    let c = id("c1");
    assert!(Scheduler::try_new(&hub, 0).is_err());
    let mut s = Scheduler::try_new(&hub, 1).unwrap();
    let zero = ProbeSpec::new(c.clone(), "a", p()).with_interval(Duration::ZERO);
    assert!(matches!(s.add(zero), Err(HealthError::InvalidConfig(_))));
    assert!(s.add(ProbeSpec::new(c.clone(), "a", p()).with_jitter(Duration::from_secs(5))).is_err());
    assert!(s.add(ProbeSpec::new(c.clone(), "a", p()).with_timeout(Duration::ZERO)).is_err());
    assert!(s.add(ProbeSpec::new(c.clone(), "a", p()).with_weight(0)).is_err());
    assert!(s.add(ProbeSpec::new(c.clone(), "", p())).is_err());
    s.add(ProbeSpec::new(c.clone(), "a", p())).unwrap();
    assert!(s.add(ProbeSpec::new(c.clone(), "a", p())).is_err(), "duplicate name");
    assert!(HealthHub::try_new(ScorePolicy::default().with_hit_ratio_low(2.0)).is_err());
    assert!(HttpProbe::try_new("ftp://x/").is_err());
    assert!(HttpProbe::try_new("not a url").is_err());
    let policy: ScorePolicy = serde_json::from_str(r#"{"unhealthy_below": 70}"#).unwrap();
    assert_eq!(policy.unhealthy_below, 70);
    assert_eq!(policy.window, 32);
}

async fn serve(router: Router) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (addr, task)
}

fn health_router(hub: &HealthHub) -> Router {
    Router::new()
        .route_service("/livez", hub.livez())
        .route_service("/readyz", hub.readyz())
        .route_service("/healthz", hub.healthz())
}

#[tokio::test]
async fn axum_routes_and_cell_prober_follow_a_peer() {
    // The peer cell "east" serves its own health from its own hub.
    let peer_hub = HealthHub::default();
    let east = id("east");
    let up = Arc::new(AtomicBool::new(true));
    let fast = Duration::from_millis(50);
    let _peer_probes = Scheduler::try_new(&peer_hub, 2)
        .unwrap()
        .with_probe(ProbeSpec::new(east.clone(), "cache", switch(up.clone())).with_interval(fast))
        .unwrap()
        .start();
    wait_cell(&peer_hub, &east, |c| c.healthy).await;
    let (addr, server) = serve(health_router(&peer_hub)).await;

    // axum serves the handlers: bytes on the wire.
    let probe = HttpProbe::try_new(&format!("http://{addr}/healthz?cell=east")).unwrap().with_body_contains("ok");
    assert!(health::Probe::check(&probe).await.ok);
    let bad = HttpProbe::try_new(&format!("http://{addr}/healthz?cell=NOPE")).unwrap();
    let out = health::Probe::check(&bad).await;
    assert!(!out.ok && out.error.as_deref().unwrap().contains("400"), "{out:?}");
    let wrong_body = HttpProbe::try_new(&format!("http://{addr}/livez")).unwrap().with_body_contains("nope");
    assert!(!health::Probe::check(&wrong_body).await.ok);
    let teapot = HttpProbe::try_new(&format!("http://{addr}/livez")).unwrap().with_expected_status(StatusCode::IM_A_TEAPOT);
    assert!(!health::Probe::check(&teapot).await.ok);

    // The local cell probes the peer: its /healthz plus a TCP check of its endpoint.
    let hub = HealthHub::default();
    let prober = CellProber::new(&hub)
        .with_peer(PeerCell::new(east.clone(), format!("http://{addr}/")).with_tcp(addr))
        .with_interval(fast)
        .with_timeout(Duration::from_secs(2));
    assert_eq!(prober.specs().unwrap().len(), 2);
    let _prober = prober.start().unwrap();
    let c = wait_cell(&hub, &east, |c| c.healthy).await;
    assert_eq!(c.score, 100);

    // The peer's own dependency fails: its /healthz says 503, the prober sees the cell unhealthy (TCP still up).
    up.store(false, Ordering::SeqCst);
    let c = wait_cell(&hub, &east, |c| !c.healthy).await;
    assert_eq!(c.probe("healthz").unwrap().state, ProbeState::Down);
    assert!(c.probe("healthz").unwrap().error.as_deref().unwrap().contains("503"));
    assert_eq!(c.probes[1].state, ProbeState::Up);
    assert!(c.score <= 30, "{c:?}");
    up.store(true, Ordering::SeqCst);
    wait_cell(&hub, &east, |c| c.healthy).await;

    // The peer goes away entirely: both checks fail, score 0.
    server.abort();
    let _ = server.await;
    let c = wait_cell(&hub, &east, |c| c.probes.iter().all(|p| p.state == ProbeState::Down)).await;
    assert_eq!(c.score, 0);
    assert!(!c.healthy);
}

#[tokio::test]
async fn tcp_probe_closed_port_is_down_open_port_is_up() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = listener.local_addr().unwrap();
    assert!(health::Probe::check(&TcpProbe::new(open)).await.ok);
    drop(listener);
    let out = health::Probe::check(&TcpProbe::new(open)).await;
    assert!(!out.ok);
    assert!(out.error.unwrap().contains(&open.to_string()));
}

fn metric_names(exporter: &opentelemetry_sdk::metrics::InMemoryMetricExporter) -> Vec<String> {
    exporter
        .get_finished_metrics()
        .unwrap()
        .iter()
        .flat_map(|rm| rm.scope_metrics().flat_map(|sm| sm.metrics().map(|m| m.name().to_string())))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn probe_metrics_are_exported() {
    use opentelemetry::metrics::MeterProvider;
    let exporter = opentelemetry_sdk::metrics::InMemoryMetricExporter::default();
    let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder().with_periodic_exporter(exporter.clone()).build();
    let hub = HealthHub::try_with_meter(ScorePolicy::default(), &provider.meter("health")).unwrap();
    let up = Arc::new(AtomicBool::new(false));
    let cell = id("metrics");
    let running = Scheduler::try_new(&hub, 1)
        .unwrap()
        .with_probe(ProbeSpec::new(cell.clone(), "p", switch(up)))
        .unwrap()
        .start();
    wait_cell(&hub, &cell, |c| !c.probes.is_empty() && c.probes[0].runs > 0).await;
    running.shutdown().await;
    provider.force_flush().unwrap();
    let names = metric_names(&exporter);
    for n in ["health.probe.duration", "health.probe.up", "health.cell.score", "health.cell.alerts"] {
        assert!(names.iter().any(|m| m == n), "{n} missing from {names:?}");
    }
}

#[cfg(feature = "runtime-metrics")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_metrics_are_exported() {
    use opentelemetry::metrics::MeterProvider;
    let exporter = opentelemetry_sdk::metrics::InMemoryMetricExporter::default();
    let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder().with_periodic_exporter(exporter.clone()).build();
    let mut reporter =
        health::RuntimeMetricsReporter::new(&tokio::runtime::Handle::current(), &provider.meter("rt"));
    let m = reporter.sample().unwrap();
    assert_eq!(m.workers_count, 2);
    provider.force_flush().unwrap();
    let names = metric_names(&exporter);
    for n in ["tokio.runtime.workers", "tokio.runtime.live_tasks", "tokio.runtime.busy_ratio", "tokio.runtime.park_count"] {
        assert!(names.iter().any(|m| m == n), "{n} missing from {names:?}");
    }
}

#[cfg(feature = "pprof")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_profile_endpoint() {
    use pprof::protos::Message;
    let svc = health::CpuProfile::new().with_max_seconds(5);
    for bad in ["seconds=0", "seconds=6", "seconds=x", "format=gif"] {
        let resp = svc.clone().oneshot(Request::get(format!("/debug/pprof/profile?{bad}")).body(()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    // Keep a CPU busy while sampling.
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let spin = std::thread::spawn(move || {
        let mut x = 0u64;
        while !s2.load(Ordering::Relaxed) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
    });
    let resp = svc.clone().oneshot(Request::get("/debug/pprof/profile?seconds=1&format=pprof").body(()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let profile = pprof::protos::Profile::decode(body).unwrap();
    assert!(!profile.sample.is_empty(), "no samples in a busy second");
    let resp = svc.oneshot(Request::get("/debug/pprof/profile?seconds=1").body(()).unwrap()).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    spin.join().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "image/svg+xml");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(body.starts_with(b"<?xml") || body.windows(4).any(|w| w == b"<svg"));
}
