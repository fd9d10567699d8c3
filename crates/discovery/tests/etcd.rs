//! Registration and discovery against a real (private) etcd: three instances in
//! two cells, a graceful shutdown, a crash, a malformed value, etcd stopped and
//! restarted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use cellctx::{CellContext, CellId};
use discovery::{CellClient, Instance, InstanceState, Registration, RegistrationConfig, Watcher, WatcherConfig};
use etcd_client::{Client, ConnectOptions};
use futures_util::{FutureExt, StreamExt};
use tokio::time::Instant;
use tower::discover::Change;
use tower::{Service, ServiceExt};

const WAIT: Duration = Duration::from_secs(20);

async fn connect(endpoint: &str) -> Client {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_keep_alive(Duration::from_secs(1), Duration::from_secs(1));
    Client::connect([endpoint], Some(opts)).await.expect("connect to the private etcd")
}

/// Polls `cond` every 50 ms until it holds; panics with `what` after [`WAIT`].
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn cell(s: &str) -> CellId {
    s.parse().unwrap()
}

fn instance(service: &str, c: &str, port: u16) -> Instance {
    Instance::try_new(service, cell(c), format!("127.0.0.1:{port}"))
        .unwrap()
        .with_region("test-region")
        .with_version("1.0.0")
        .with_metadata("port", port.to_string())
}

fn serving(w: &Watcher, c: &str) -> Vec<String> {
    let mut v: Vec<String> = w.snapshot().serving(&cell(c)).map(|(_, i)| i.address.clone()).collect();
    v.sort();
    v
}

/// Drains the changes a discover stream has ready, as "+addr" / "-key-tail".
fn ready_changes<S: futures_util::Stream<Item = Result<Change<Arc<str>, String>, std::convert::Infallible>> + Unpin>(
    d: &mut S,
) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(Some(Ok(c))) = d.next().now_or_never() {
        out.push(show(c));
    }
    out.sort();
    out
}

fn show(c: Change<Arc<str>, String>) -> String {
    match c {
        Change::Insert(_, addr) => format!("+{addr}"),
        Change::Remove(k) => format!("-{}", k.rsplit('/').next().unwrap()),
    }
}

/// Waits for the next `n` changes of a discover stream (the watcher publishes
/// its snapshot a moment before the stream sees it), sorted.
async fn changes<S>(d: &mut S, n: usize) -> Vec<String>
where
    S: futures_util::Stream<Item = Result<Change<Arc<str>, String>, std::convert::Infallible>> + Unpin,
{
    let mut out = Vec::new();
    for _ in 0..n {
        let c = tokio::time::timeout(WAIT, d.next()).await.expect("a discover change").unwrap().unwrap();
        out.push(show(c));
    }
    out.extend(ready_changes(d));
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_against_real_etcd() {
    let mut etcd = testkit::EtcdServer::start();
    let endpoint = etcd.endpoint();
    let client = connect(&endpoint).await;
    let service = testkit::unique("orders");
    let reg_config = RegistrationConfig::new()
        .with_ttl(Duration::from_secs(2))
        .with_grace(Duration::from_secs(2))
        .with_op_timeout(Duration::from_secs(1))
        .with_retry(Duration::from_millis(200));
    let watcher = Watcher::start(
        client.clone(),
        &service,
        WatcherConfig::new()
            .with_op_timeout(Duration::from_secs(1))
            .with_backoff(Duration::from_millis(100), Duration::from_millis(400))
            .with_progress_interval(Duration::from_millis(300)),
    )
    .unwrap();
    watcher.synced(WAIT).await.unwrap();
    assert!(watcher.snapshot().is_empty());
    let mut discover_a = watcher.discover(cell("a"), |i: &Instance| i.address.clone());
    assert!(ready_changes(&mut discover_a).is_empty());

    // Three instances in two cells register; the watcher sees them per cell.
    let a1 = Registration::register(client.clone(), instance(&service, "a", 1001), reg_config.clone()).await.unwrap();
    let a2 = Registration::register(client.clone(), instance(&service, "a", 1002), reg_config.clone()).await.unwrap();
    let b1 = Registration::register(client.clone(), instance(&service, "b", 2001), reg_config.clone()).await.unwrap();
    wait_until("3 instances in 2 cells", || serving(&watcher, "a").len() == 2 && serving(&watcher, "b").len() == 1).await;
    assert_eq!(serving(&watcher, "a"), ["127.0.0.1:1001", "127.0.0.1:1002"]);
    assert_eq!(serving(&watcher, "b"), ["127.0.0.1:2001"]);
    let snap = watcher.snapshot();
    let stored = snap.get(a1.key()).unwrap();
    assert_eq!((stored.region.as_str(), stored.version.as_str()), ("test-region", "1.0.0"));
    assert_eq!(stored.metadata.get("port").map(String::as_str), Some("1001"));
    assert_eq!(changes(&mut discover_a, 2).await, ["+127.0.0.1:1001", "+127.0.0.1:1002"]);

    // Graceful shutdown of a1: draining first (removed from the cell's endpoints,
    // still registered), gone after the grace period.
    let a1_key = a1.key().to_string();
    let shutdown = tokio::spawn(a1.shutdown());
    wait_until("a1 draining", || {
        watcher.snapshot().get(&a1_key).is_some_and(|i| i.state == InstanceState::Draining)
    })
    .await;
    let draining_seen = Instant::now();
    assert_eq!(serving(&watcher, "a"), ["127.0.0.1:1002"]);
    assert_eq!(changes(&mut discover_a, 1).await, ["-127.0.0.1:1001"]);
    wait_until("a1 removed", || watcher.snapshot().get(&a1_key).is_none()).await;
    assert!(
        draining_seen.elapsed() >= Duration::from_secs(1),
        "a1 was removed {:?} after draining was seen; the grace period is 2 s",
        draining_seen.elapsed()
    );
    shutdown.await.unwrap().unwrap();
    assert!(ready_changes(&mut discover_a).is_empty(), "no change for a key already removed");

    // b1 is killed: no revoke, its key stays until the lease expires.
    let b1_key = b1.key().to_string();
    b1.abandon();
    let mut kv = client.kv_client();
    assert_eq!(kv.get(b1_key.as_str(), None).await.unwrap().kvs().len(), 1, "abandoning does not delete");
    wait_until("b1 removed after its TTL", || watcher.snapshot().get(&b1_key).is_none()).await;
    assert!(serving(&watcher, "b").is_empty());

    // A malformed value is skipped and counted, not fatal.
    let bad_key = format!("{}a/bad-instance", watcher.prefix());
    kv.put(bad_key.as_str(), "{not json", None).await.unwrap();
    let wrong_cell = instance(&service, "b", 2002); // a cell-b value under a cell-a key
    kv.put(format!("{}a/127.0.0.1:2002", watcher.prefix()), wrong_cell.to_json(), None).await.unwrap();
    wait_until("2 malformed values counted", || watcher.stats().malformed >= 2).await;
    let a3 = Registration::register(client.clone(), instance(&service, "a", 1003), reg_config.clone()).await.unwrap();
    wait_until("a3 after the malformed values", || serving(&watcher, "a").len() == 2).await;
    assert_eq!(serving(&watcher, "a"), ["127.0.0.1:1002", "127.0.0.1:1003"]);
    assert!(watcher.snapshot().get(&bad_key).is_none());
    assert!(serving(&watcher, "b").is_empty());
    assert_eq!(changes(&mut discover_a, 1).await, ["+127.0.0.1:1003"]);

    // Requests keep flowing while etcd is down: a cell client over the watcher.
    let mut cell_client = CellClient::new(watcher.clone(), |i: &Instance| {
        let addr = i.address.clone();
        tower::service_fn(move |_req: http::Request<()>| {
            let addr = addr.clone();
            async move { Ok::<_, std::convert::Infallible>(addr) }
        })
    });
    let ctx = Arc::new(CellContext::new().with_cell(cell("a")));

    etcd.stop();
    wait_until("the watcher notices etcd is gone", || !watcher.stats().connected).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let stats = watcher.stats();
    assert!(stats.staleness >= Duration::from_secs(1), "staleness {:?}", stats.staleness);
    assert!(stats.reconnects >= 1);
    assert_eq!(serving(&watcher, "a"), ["127.0.0.1:1002", "127.0.0.1:1003"], "last known instances kept");
    let mut seen = Vec::new();
    for _ in 0..4 {
        let mut req = http::Request::new(());
        req.extensions_mut().insert(ctx.clone());
        seen.push(cell_client.ready().await.unwrap().call(req).await.unwrap());
    }
    seen.sort();
    assert_eq!(seen, ["127.0.0.1:1002", "127.0.0.1:1002", "127.0.0.1:1003", "127.0.0.1:1003"]);
    assert!(ready_changes(&mut discover_a).is_empty(), "no endpoint dropped while etcd is down");

    // etcd comes back: the watch resumes and updates flow again.
    etcd.restart();
    wait_until("the watcher reconnects", || watcher.stats().connected).await;
    let a4 = Registration::register(client.clone(), instance(&service, "a", 1004), reg_config.clone()).await.unwrap();
    wait_until("a4 after the restart", || serving(&watcher, "a").len() == 3).await;
    assert_eq!(serving(&watcher, "a"), ["127.0.0.1:1002", "127.0.0.1:1003", "127.0.0.1:1004"]);
    assert!(watcher.stats().staleness < Duration::from_secs(1));
    assert_eq!(changes(&mut discover_a, 1).await, ["+127.0.0.1:1004"]);
    // the instances that lived through the outage still hold their leases
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(serving(&watcher, "a").len(), 3, "leases kept alive after the restart");

    for r in futures_util::future::join_all([a2, a3, a4].map(Registration::shutdown)).await {
        r.unwrap();
    }
    wait_until("everything deregistered", || watcher.snapshot().is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_is_an_error() {
    let etcd = testkit::EtcdServer::start();
    let client = connect(&etcd.endpoint()).await;
    let inst = instance("svc", "a", 1);
    let bad_ttl = RegistrationConfig::new().with_ttl(Duration::from_millis(1500));
    assert!(matches!(
        Registration::register(client.clone(), inst.clone(), bad_ttl).await,
        Err(discovery::Error::InvalidConfig(_))
    ));
    let bad_root = RegistrationConfig::new().with_root("relative");
    assert!(Registration::register(client.clone(), inst, bad_root).await.is_err());
    assert!(Watcher::start(client.clone(), "a/b", WatcherConfig::new()).is_err());
    let bad_backoff = WatcherConfig::new().with_backoff(Duration::from_secs(2), Duration::from_secs(1));
    assert!(Watcher::start(client.clone(), "svc", bad_backoff).is_err());
    assert!(Watcher::start(client, "svc", WatcherConfig::new().with_progress_interval(Duration::ZERO)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_is_a_timeout_not_a_hang() {
    let etcd = testkit::EtcdServer::start();
    let endpoint = etcd.endpoint();
    drop(etcd);
    let client = connect(&endpoint).await;
    let cfg = RegistrationConfig::new().with_op_timeout(Duration::from_millis(300));
    let err = Registration::register(client.clone(), instance("svc", "a", 1), cfg).await.unwrap_err();
    assert!(matches!(err, discovery::Error::Timeout(_) | discovery::Error::Etcd(_)), "{err}");
    let watcher = Watcher::start(client, "svc", WatcherConfig::new().with_op_timeout(Duration::from_millis(300))).unwrap();
    assert!(matches!(watcher.synced(Duration::from_millis(800)).await, Err(discovery::Error::Timeout(_))));
    assert!(!watcher.stats().synced);
    assert!(watcher.snapshot().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_instances_per_cell_staleness_and_malformed() {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder().with_reader(PeriodicReader::builder(exporter.clone()).build()).build();
    let meter = provider.meter("discovery");
    let collect = || {
        provider.force_flush().unwrap();
        let all = exporter.get_finished_metrics().unwrap();
        let mut seen = std::collections::BTreeMap::new();
        for sm in all.last().unwrap().scope_metrics() {
            for m in sm.metrics() {
                let key = |attrs: Vec<String>| format!("{} {}", m.name(), attrs.join(","));
                let attrs = |it: &mut dyn Iterator<Item = &opentelemetry::KeyValue>| {
                    it.filter(|kv| kv.key.as_str() != "service").map(|kv| format!("{}={}", kv.key, kv.value)).collect()
                };
                match m.data() {
                    AggregatedMetrics::U64(MetricData::Gauge(g)) => {
                        for dp in g.data_points() {
                            seen.insert(key(attrs(&mut dp.attributes())), dp.value() as f64);
                        }
                    }
                    AggregatedMetrics::U64(MetricData::Sum(s)) => {
                        for dp in s.data_points() {
                            seen.insert(key(attrs(&mut dp.attributes())), dp.value() as f64);
                        }
                    }
                    AggregatedMetrics::F64(MetricData::Gauge(g)) => {
                        for dp in g.data_points() {
                            seen.insert(key(attrs(&mut dp.attributes())), dp.value());
                        }
                    }
                    _ => {}
                }
            }
        }
        seen
    };

    let etcd = testkit::EtcdServer::start();
    let client = connect(&etcd.endpoint()).await;
    let service = testkit::unique("metered");
    let watcher = Watcher::start(client.clone(), &service, WatcherConfig::new().with_meter(meter.clone())).unwrap();
    watcher.synced(WAIT).await.unwrap();
    let cfg = RegistrationConfig::new().with_ttl(Duration::from_secs(2)).with_meter(meter.clone());
    let a1 = Registration::register(client.clone(), instance(&service, "a", 1), cfg.clone()).await.unwrap();
    let _a2 = Registration::register(client.clone(), instance(&service, "a", 2), cfg.clone()).await.unwrap();
    let b1 = Registration::register(client.clone(), instance(&service, "b", 3), cfg.clone()).await.unwrap();
    let mut kv = client.kv_client();
    kv.put(format!("{}a/broken", watcher.prefix()), "", None).await.unwrap();
    wait_until("instances and the malformed value", || {
        serving(&watcher, "a").len() == 2 && serving(&watcher, "b").len() == 1 && watcher.stats().malformed == 1
    })
    .await;
    let seen = collect();
    assert_eq!(seen.get("discovery.instances cell=a"), Some(&2.0), "{seen:?}");
    assert_eq!(seen.get("discovery.instances cell=b"), Some(&1.0), "{seen:?}");
    assert_eq!(seen.get("discovery.registry.malformed "), Some(&1.0), "{seen:?}");
    let staleness = seen.get("discovery.registry.staleness ").copied().unwrap();
    assert!((0.0..5.0).contains(&staleness), "{staleness}");

    // the last instance of cell b crashes: its gauge drops to zero
    b1.abandon();
    wait_until("b1 expired", || serving(&watcher, "b").is_empty()).await;
    assert_eq!(collect().get("discovery.instances cell=b"), Some(&0.0));

    // a1's lease is revoked behind its back (as when it expired during a long
    // outage): the registration notices, takes a new lease and writes itself again
    let old_lease = a1.lease_id();
    let mut lc = client.lease_client();
    lc.revoke(old_lease).await.unwrap();
    wait_until("a1 registered again", || a1.regrants() == 1 && watcher.snapshot().get(a1.key()).is_some()).await;
    assert_ne!(a1.lease_id(), old_lease);
    let got = kv.get(a1.key(), None).await.unwrap();
    assert_eq!(got.kvs()[0].lease(), a1.lease_id(), "the key is tied to the new lease");
    assert_eq!(collect().get("discovery.registration.lease_regrants cell=a"), Some(&1.0));
}
