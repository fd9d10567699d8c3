//! Probes against the real Redis, MariaDB, PostgreSQL on the machine, SQLite and
//! a MockCluster Kafka: healthy, then the dependency is made unavailable and
//! the probe, the score and `/healthz` flip within two runs; recovery flips
//! them back.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(all(feature = "sql", feature = "redis", feature = "kafka"))]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cellctx::CellId;
use health::{
    CellHealth, HealthEvent, HealthHub, KafkaProbe, ProbeSpec, ProbeState, RedisProbe, Scheduler, SchedulerHandle,
    ScorePolicy, SqlProbe,
};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower::ServiceExt;

const INTERVAL: Duration = Duration::from_millis(250);
/// Generous bound on waiting for the flip (the assertion is on probe runs, not time).
const DEADLINE: Duration = Duration::from_secs(30);

fn cell(prefix: &str) -> CellId {
    let u = testkit::unique(prefix);
    // Keep within the 32-byte cell id limit: the tail of the unique name.
    let tail = &u[u.len().saturating_sub(28)..];
    CellId::new(&format!("c{}", tail.trim_start_matches('-'))).unwrap()
}

fn start(hub: &HealthHub, spec: ProbeSpec) -> SchedulerHandle {
    Scheduler::try_new(hub, 4)
        .unwrap()
        .with_probe(spec.with_interval(INTERVAL).with_jitter(Duration::ZERO).with_timeout(Duration::from_secs(3)))
        .unwrap()
        .start()
}

/// Waits until the cell satisfies `pred`, returning its health.
async fn wait_cell(hub: &HealthHub, id: &CellId, what: &str, pred: impl Fn(&CellHealth) -> bool) -> Arc<CellHealth> {
    let mut rx = hub.subscribe();
    let fut = async {
        loop {
            if let Some(c) = rx.borrow_and_update().get(id).cloned().filter(|c| pred(c)) {
                return c;
            }
            rx.changed().await.expect("hub dropped");
        }
    };
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(c) => c,
        Err(_) => panic!("cell {id} never became {what}: {:?}", hub.cell(id)),
    }
}

fn runs(c: &CellHealth) -> u64 {
    c.probes[0].runs
}

async fn healthz(hub: &HealthHub, id: &CellId) -> (StatusCode, serde_json::Value) {
    let resp = hub.healthz().oneshot(Request::get(format!("/healthz?cell={id}")).body(()).unwrap()).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    if status == StatusCode::OK {
        assert_eq!(&body[..], b"ok");
        (status, serde_json::Value::Null)
    } else {
        (status, serde_json::from_slice(&body).unwrap())
    }
}

/// Runs the up → down → up cycle: `down` makes the dependency unavailable,
/// `up` brings it back. Returns the 503 JSON seen while down.
async fn flip_cycle<D, U>(hub: &HealthHub, id: &CellId, down: D, up: U) -> serde_json::Value
where
    D: AsyncFnOnce(),
    U: AsyncFnOnce(),
{
    let mut events = hub.events();
    let healthy = wait_cell(hub, id, "healthy", |c| c.healthy).await;
    assert_eq!(healthy.score, 100, "{healthy:?}");
    assert_eq!(healthz(hub, id).await.0, StatusCode::OK);

    down().await;
    let broken_at = runs(&hub.cell(id).unwrap());
    let sick = wait_cell(hub, id, "unhealthy", |c| !c.healthy).await;
    assert!(runs(&sick) <= broken_at + 2, "flip took {} runs", runs(&sick) - broken_at);
    assert_eq!(sick.probes[0].state, ProbeState::Down);
    assert!(sick.score < 60);
    let (status, json) = healthz(hub, id).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json["cell"], id.as_str());
    assert_eq!(json["healthy"], false);
    assert_eq!(json["probes"][0]["state"], "down");
    assert!(json["probes"][0]["error"].is_string());

    up().await;
    let fixed_at = runs(&hub.cell(id).unwrap());
    let back = wait_cell(hub, id, "healthy again", |c| c.healthy).await;
    assert!(runs(&back) <= fixed_at + 2, "recovery took {} runs", runs(&back) - fixed_at);
    assert_eq!(healthz(hub, id).await.0, StatusCode::OK);

    // The events told the same story: alert, then healthy again.
    let mut seen = Vec::new();
    while !seen.ends_with(&["alert", "healthy"]) {
        let e = match tokio::time::timeout(DEADLINE, events.recv()).await {
            Ok(Ok(e)) => e,
            other => panic!("events so far {seen:?}, then {other:?}"),
        };
        match e {
            HealthEvent::Alert { cell, score, threshold } if &cell == id => {
                assert!(score < threshold);
                seen.push("alert")
            }
            HealthEvent::Healthy { cell, .. } if &cell == id => seen.push("healthy"),
            _ => {}
        }
    }
    assert_eq!(seen.iter().filter(|s| **s == "alert").count(), 1, "events: {seen:?}");
    json
}

fn hub() -> HealthHub {
    HealthHub::try_new(ScorePolicy::default()).unwrap()
}

async fn sql_exhaustion<DB: sqlx::Database>(hub: &HealthHub, id: &CellId, pool: sqlx::Pool<DB>) {
    let held: Arc<tokio::sync::Mutex<Option<sqlx::pool::PoolConnection<DB>>>> = Arc::default();
    let h1 = held.clone();
    let json = flip_cycle(
        hub,
        id,
        async move || *h1.lock().await = Some(pool.acquire().await.expect("acquire the only connection")),
        async move || *held.lock().await = None,
    )
    .await;
    let w = &json["probes"][0]["water_level"];
    assert_eq!(w["max"], 1, "{json}");
    assert_eq!(w["in_use"], 1, "{json}");
    assert_eq!(w["idle"], 0, "{json}");
    assert!(json["probes"][0]["error"].as_str().unwrap().contains("SELECT 1"), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_pool_exhausted_flips_and_recovers() {
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_millis(300))
        .connect(&testkit::mysql_url())
        .await
        .unwrap_or_else(|e| panic!("MariaDB at {} unreachable: {e}", testkit::mysql_url()));
    let hub = hub();
    let id = cell("mysql");
    let _run = start(&hub, ProbeSpec::new(id.clone(), "mysql", SqlProbe::mysql(pool.clone())));
    sql_exhaustion(&hub, &id, pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_pool_exhausted_flips_and_recovers() {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_millis(300))
        .connect(&testkit::postgres_url())
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {} unreachable: {e}", testkit::postgres_url()));
    let hub = hub();
    let id = cell("pg");
    let _run = start(&hub, ProbeSpec::new(id.clone(), "postgres", SqlProbe::postgres(pool.clone())));
    sql_exhaustion(&hub, &id, pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_pool_exhausted_flips_and_recovers() {
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_millis(300))
        .connect("sqlite::memory:")
        .await
        .unwrap();
    let hub = hub();
    let id = cell("sqlite");
    let _run = start(&hub, ProbeSpec::new(id.clone(), "sqlite", SqlProbe::sqlite(pool.clone())));
    sql_exhaustion(&hub, &id, pool).await;
}

/// A TCP forwarder in front of the real Redis that can be shut (port closed,
/// connections cut) and reopened on the same port.
struct Proxy {
    port: u16,
    target: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    async fn open(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.expect("rebind proxy port");
        self.port = listener.local_addr().unwrap().port();
        let target = self.target;
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                conns.spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        }));
    }

    async fn shut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}

fn redis_addr() -> SocketAddr {
    let url = testkit::redis_url();
    let rest = url.split("://").nth(1).unwrap_or(&url);
    let hostport = rest.rsplit('@').next().unwrap().split('/').next().unwrap();
    hostport.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 6379)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_flips_and_recovers() {
    // The real Redis answers.
    tokio::net::TcpStream::connect(redis_addr())
        .await
        .unwrap_or_else(|e| panic!("Redis at {} unreachable: {e}", redis_addr()));
    let proxy = Arc::new(tokio::sync::Mutex::new(Proxy { port: 0, target: redis_addr(), task: None }));
    proxy.lock().await.open().await;
    let port = proxy.lock().await.port;
    let hub = hub();
    let id = cell("redis");
    let probe = RedisProbe::try_new(&format!("redis://127.0.0.1:{port}")).unwrap();
    let _run = start(&hub, ProbeSpec::new(id.clone(), "redis", probe));
    let (p1, p2) = (proxy.clone(), proxy.clone());
    flip_cycle(&hub, &id, async move || p1.lock().await.shut().await, async move || p2.lock().await.open().await).await;
    let c = hub.cell(&id).unwrap();
    let status = &c.probes[0];
    assert!(status.p50_ms.is_some() && status.p99_ms.is_some());
    assert!(status.p50_ms <= status.p99_ms);
    assert!(status.success_ratio.unwrap() < 1.0, "the window remembers the failures");
}

#[tokio::test]
async fn redis_nothing_listening_is_down_then_real_one_is_up() {
    let hub = hub();
    let dead = cell("redisdead");
    let live = cell("redislive");
    let mut s = Scheduler::try_new(&hub, 4).unwrap();
    let spec = |id: &CellId, url: String| {
        ProbeSpec::new(id.clone(), "redis", RedisProbe::try_new(&url).unwrap())
            .with_interval(INTERVAL)
            .with_timeout(Duration::from_secs(3))
    };
    s.add(spec(&dead, format!("redis://127.0.0.1:{}", testkit::free_port()))).unwrap();
    s.add(spec(&live, testkit::redis_url())).unwrap();
    let _run = s.start();
    let d = wait_cell(&hub, &dead, "down", |c| c.probes[0].state == ProbeState::Down).await;
    assert_eq!(d.score, 0);
    assert!(d.probes[0].error.as_deref().unwrap().contains("connect"), "{d:?}");
    assert_eq!(healthz(&hub, &dead).await.0, StatusCode::SERVICE_UNAVAILABLE);
    wait_cell(&hub, &live, "healthy", |c| c.healthy).await;
    assert_eq!(healthz(&hub, &live).await.0, StatusCode::OK);
    assert!(RedisProbe::try_new("not a url").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_broker_down_flips_and_recovers_and_reports_lag() {
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::{Offset, TopicPartitionList};

    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let topic = testkit::unique("health-lag");
    let group = testkit::unique("health-group");
    cluster.create_topic(&topic, 1, 1).unwrap();

    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
    for i in 0..10 {
        producer.send(BaseRecord::to(&topic).key("k").payload(&format!("m{i}"))).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let committer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &bootstrap).set("group.id", &group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(4)).unwrap();
    committer.commit(&tpl, CommitMode::Sync).unwrap();

    let probe = KafkaProbe::with_consumer_lag(&bootstrap, &group, [topic.clone()])
        .unwrap()
        .with_request_timeout(Duration::from_millis(800));
    let hub = hub();
    let id = cell("kafka");
    let _run = start(&hub, ProbeSpec::new(id.clone(), "kafka", probe));

    let c = wait_cell(&hub, &id, "healthy", |c| c.healthy).await;
    assert_eq!(c.probes[0].backlog, Some(6), "10 produced, 4 committed: {c:?}");

    let cluster = std::rc::Rc::new(cluster);
    let (c1, c2) = (cluster.clone(), cluster.clone());
    let json = flip_cycle(&hub, &id, async move || c1.broker_down(-1).unwrap(), async move || c2.broker_up(-1).unwrap()).await;
    assert!(json["probes"][0]["error"].as_str().unwrap().contains("kafka"), "{json}");
    assert!(KafkaProbe::try_new("").is_err());
    assert!(KafkaProbe::with_consumer_lag(&bootstrap, "", ["t"]).is_err());
}
