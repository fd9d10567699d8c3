//! replication_load: one cell writing, two cells applying, on loopback, end
//! to end: the writer commits changes into its SQLite outbox (on `/dev/shm`;
//! up to `REPL_LOAD_TX` changes per transaction, open loop at a target rate), its `Relay` publishes them to
//! an rdkafka `MockCluster` (3 brokers, 3 partitions), and two `Replicator`s
//! (cells `fra` and `sv`) apply them, persisting to Redis through
//! `RedisStateStore` and committing offsets. Each applying replica starts
//! with a state of `elements` OR-set elements (saved as its snapshot first),
//! so what a change costs to persist can be compared between state sizes.
//!
//! Reported per state size, after a warm-up:
//! - changes/s applied at each cell over the run, and the slowest 1-s window;
//! - apply lag (apply time − the change's HLC time) p50 / p99 / max;
//! - drain: the time from the writer's stop to both cells having everything;
//! - persisted bytes and writes per change (log appends and snapshots, as
//!   counted by a wrapper around the state store);
//! - the process's CPU (user + system, `/proc/self/stat`) per change;
//! - the floor of the job, measured in the same run: raw rdkafka produce ->
//!   consume on a fresh MockCluster of the same shape (same producer
//!   settings, same headers and payload size, two consumer groups), no
//!   outbox, no apply, no persistence.
//!
//! `cargo bench -p cell-benches --bench replication_load`; environment
//! overrides: `REPL_LOAD_SECS` (measured seconds, default 60),
//! `REPL_LOAD_WARMUP_SECS` (default 5), `REPL_LOAD_RATE` (changes/s the
//! writer aims at, default 20,000; 0: as fast as it can),
//! `REPL_LOAD_ELEMENTS` (state sizes, default `10000,1000000`),
//! `REPL_LOAD_TX` (changes per outbox transaction at most, default 100),
//! `REPL_LOAD_FLOOR` (messages of the floor run, default 400,000). Needs Redis
//! at `CELL_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`); the keys it
//! creates are deleted. Without `--bench` (as `cargo test --benches` runs it)
//! it does a short smoke run.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crdt::kafka::{Relay, Replicator};
use crdt::outbox::Outbox;
use crdt::redis_state::RedisStateStore;
use crdt::{CrdtError, Replica, StateStore};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};

const APPLYING: [&str; 2] = ["fra", "sv"];
const WRITER: &str = "sh";
const OBJECTS: usize = 1_000;

#[derive(Debug, Clone)]
struct Opts {
    secs: f64,
    warm_up: f64,
    rate: u64,
    elements: Vec<usize>,
    tx: usize,
    floor: usize,
}

impl Opts {
    fn from_env(bench: bool) -> Opts {
        fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
            std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
        }
        if !bench {
            return Opts { secs: 1.0, warm_up: 0.5, rate: 2_000, elements: vec![1_000], tx: 20, floor: 5_000 };
        }
        let elements = std::env::var("REPL_LOAD_ELEMENTS")
            .unwrap_or_else(|_| "10000,1000000".into())
            .split(',')
            .map(|s| s.trim().parse().expect("REPL_LOAD_ELEMENTS: numbers separated by commas"))
            .collect();
        Opts {
            secs: env("REPL_LOAD_SECS", 60.0),
            warm_up: env("REPL_LOAD_WARMUP_SECS", 5.0),
            rate: env("REPL_LOAD_RATE", 20_000u64),
            elements,
            tx: env("REPL_LOAD_TX", 100usize).max(1),
            floor: env("REPL_LOAD_FLOOR", 400_000usize).max(1),
        }
    }
}

/// User + system CPU time of this process.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let after = &stat[stat.rfind(')').expect("stat") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// A [`StateStore`] that counts what is written through it.
#[derive(Debug, Clone)]
struct Counting {
    inner: RedisStateStore,
    appends: Arc<AtomicU64>,
    appended_bytes: Arc<AtomicU64>,
    saves: Arc<AtomicU64>,
    saved_bytes: Arc<AtomicU64>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Written {
    appends: u64,
    appended_bytes: u64,
    saves: u64,
    saved_bytes: u64,
}

impl Counting {
    fn new(inner: RedisStateStore) -> Self {
        Counting { inner, appends: Arc::default(), appended_bytes: Arc::default(), saves: Arc::default(), saved_bytes: Arc::default() }
    }

    fn written(&self) -> Written {
        Written {
            appends: self.appends.load(Ordering::Relaxed),
            appended_bytes: self.appended_bytes.load(Ordering::Relaxed),
            saves: self.saves.load(Ordering::Relaxed),
            saved_bytes: self.saved_bytes.load(Ordering::Relaxed),
        }
    }
}

impl Written {
    fn since(self, e: Written) -> Written {
        Written {
            appends: self.appends - e.appends,
            appended_bytes: self.appended_bytes - e.appended_bytes,
            saves: self.saves - e.saves,
            saved_bytes: self.saved_bytes - e.saved_bytes,
        }
    }
}

impl StateStore for Counting {
    async fn load(&self, key: &str) -> Result<Option<Vec<u8>>, CrdtError> {
        self.inner.load(key).await
    }
    async fn save(&self, key: &str, state: &[u8]) -> Result<(), CrdtError> {
        self.saves.fetch_add(1, Ordering::Relaxed);
        self.saved_bytes.fetch_add(state.len() as u64, Ordering::Relaxed);
        self.inner.save(key, state).await
    }
    async fn append(&self, key: &str, records: &[Vec<u8>]) -> Result<(), CrdtError> {
        self.appends.fetch_add(1, Ordering::Relaxed);
        self.appended_bytes.fetch_add(records.iter().map(|r| r.len() as u64).sum(), Ordering::Relaxed);
        self.inner.append(key, records).await
    }
    async fn load_log(&self, key: &str) -> Result<Vec<Vec<u8>>, CrdtError> {
        self.inner.load_log(key).await
    }
}

fn cluster(topic: &str) -> (MockCluster<'static, DefaultProducerContext>, String) {
    let cluster = MockCluster::new(3).expect("mock cluster");
    cluster.create_topic(topic, 3, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    (cluster, bootstrap)
}

fn consumer(bootstrap: &str, group: &str, topic: &str) -> StreamConsumer {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    c
}

/// The floor: `n` messages shaped like the relay's (same producer settings,
/// headers and payload size) produced as fast as the producer takes them and
/// consumed by two groups; messages/s until both have all of them.
async fn floor(n: usize, payload_len: usize) -> f64 {
    let topic = format!("floor-{}", std::process::id());
    let (_cluster, bootstrap) = cluster(&topic);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .create()
        .expect("producer");
    let consumers: Vec<StreamConsumer> = (0..2).map(|i| consumer(&bootstrap, &format!("{topic}-g{i}"), &topic)).collect();
    let payload = vec![7u8; payload_len];
    // one message per partition first: timing starts once both groups have them
    let (joined_tx, mut joined_rx) = tokio::sync::mpsc::channel::<()>(2);
    let counting: Vec<_> = consumers
        .into_iter()
        .map(|c| {
            let joined = joined_tx.clone();
            tokio::spawn(async move {
                for _ in 0..3 {
                    c.recv().await.expect("recv");
                }
                joined.send(()).await.unwrap();
                for _ in 0..n {
                    let m = c.recv().await.expect("recv");
                    std::hint::black_box(m.payload());
                }
                Instant::now()
            })
        })
        .collect();
    for p in 0..3 {
        let rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).partition(p).payload(&payload[..]);
        producer.send(rec, Duration::from_secs(30)).await.expect("join message");
    }
    for _ in 0..2 {
        joined_rx.recv().await.unwrap();
    }
    let t0 = Instant::now();
    let mut deliveries = std::collections::VecDeque::new();
    for i in 0..n {
        let seq = (i + 1).to_string();
        let key = format!("likes/{}", i % OBJECTS);
        let h = OwnedHeaders::new_with_capacity(5)
            .insert(Header { key: "x-crdt-origin", value: Some(WRITER) })
            .insert(Header { key: "x-crdt-seq", value: Some(seq.as_str()) })
            .insert(Header { key: "x-crdt-hlc", value: Some("7400000000000000000") })
            .insert(Header { key: "x-crdt-type", value: Some("crdt.pn_counter") })
            .insert(Header { key: "x-crdt-aggregate-type", value: Some("post") });
        let mut rec = FutureRecord::to(&topic).key(key.as_bytes()).payload(&payload).headers(h);
        loop {
            match producer.send_result(rec) {
                Ok(d) => {
                    deliveries.push_back(d);
                    break;
                }
                Err((_, back)) => {
                    rec = back;
                    if let Some(d) = deliveries.pop_front() {
                        d.await.expect("delivery").expect("acked");
                    }
                }
            }
        }
        if deliveries.len() > 10_000
            && let Some(d) = deliveries.pop_front()
        {
            d.await.expect("delivery").expect("acked");
        }
    }
    for d in deliveries {
        d.await.expect("delivery").expect("acked");
    }
    let mut last = t0;
    for c in counting {
        last = last.max(c.await.unwrap());
    }
    n as f64 / (last - t0).as_secs_f64()
}

struct Applying {
    replica: Arc<Replica>,
    store: Counting,
}

/// An applying cell's replica holding `elements` OR-set elements over
/// [`OBJECTS`] sets, saved as its snapshot.
async fn applying(cell: &str, elements: usize, redis: &RedisStateStore) -> Applying {
    let replica = Arc::new(Replica::try_new(cell.parse().unwrap(), 1, Duration::from_secs(5)).unwrap());
    {
        let mut g = replica.lock().await;
        for i in 0..elements {
            let c = g.or_add("post", &format!("comments/{}", i % OBJECTS), &format!("c{i:08}")).unwrap();
            g.commit(&c).unwrap();
        }
    }
    let store = Counting::new(redis.clone());
    replica.save_to(&store).await.unwrap();
    Applying { replica, store }
}

fn applied_from_writer(r: &Replica) -> u64 {
    r.metrics().stats().applied
}

#[derive(Debug)]
struct RunResult {
    elements: usize,
    snapshot_bytes: usize,
    written: u64,
    window: f64,
    applied: Vec<u64>,
    slowest_window: Vec<f64>,
    lag: Vec<crdt::LagSummary>,
    drain: Duration,
    persisted: Vec<Written>,
    cpu: Duration,
}

async fn run(opts: &Opts, elements: usize, redis_url: &str) -> RunResult {
    let run = format!("repl{}-{elements}", std::process::id());
    let topic = format!("{run}-topic");
    let (_cluster, bootstrap) = cluster(&topic);
    let redis = RedisStateStore::connect(redis_url, &run)
        .await
        .unwrap_or_else(|e| panic!("Redis at {redis_url} (set CELL_TEST_REDIS_URL): {e}"));
    // the outbox on tmpfs when there is one: the disk's fsync per commit is not the job measured
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm).unwrap() } else { tempfile::tempdir().unwrap() };
    let url = format!("sqlite://{}/{WRITER}.db?mode=rwc", dir.path().display());
    let outbox = Outbox::connect(&url, "outbox").await.unwrap();
    outbox.migrate().await.unwrap();
    let writer = Arc::new(Replica::try_new(WRITER.parse().unwrap(), 1, Duration::from_secs(5)).unwrap());
    let relay = Relay::new(outbox.clone(), &bootstrap, &topic).unwrap();
    let relay_task = tokio::spawn(async move { relay.run(std::future::pending()).await });

    let mut cells = Vec::new();
    let mut handles = Vec::new();
    let mut snapshot_bytes = 0;
    for cell in APPLYING {
        let a = applying(cell, elements, &redis).await;
        snapshot_bytes = a.replica.snapshot().await.unwrap().len();
        let r = Replicator::start(a.replica.clone(), &bootstrap, &topic, &format!("{run}-{cell}"), a.store.clone())
            .await
            .unwrap();
        handles.push(r.spawn());
        cells.push(a);
    }

    // the writer: open loop at `rate` (0: as fast as it can), `tx` changes per transaction
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer_task = {
        let (stop, written, outbox, writer) = (stop.clone(), written.clone(), outbox.clone(), writer.clone());
        let (rate, tx) = (opts.rate, opts.tx);
        tokio::spawn(async move {
            let t0 = Instant::now();
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let due = if rate == 0 { n + tx as u64 } else { (t0.elapsed().as_secs_f64() * rate as f64) as u64 };
                if n >= due {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                let k = (due - n).min(tx as u64);
                let mut guard = writer.lock().await;
                let mut changes = Vec::with_capacity(k as usize);
                for i in 0..k {
                    changes.push(guard.counter_add("post", &format!("likes/{}", (n + i) as usize % OBJECTS), 1).unwrap());
                }
                let mut t = outbox.pool().begin().await.unwrap();
                outbox.enqueue_all(&mut t, &changes).await.unwrap();
                t.commit().await.unwrap();
                for c in &changes {
                    guard.commit(c).unwrap();
                }
                drop(guard);
                outbox.wake();
                n += k;
                written.store(n, Ordering::Relaxed);
            }
        })
    };

    // the consumer groups join: wait for the first applied change at both cells, then warm up
    let joined = Instant::now();
    while cells.iter().any(|c| applied_from_writer(&c.replica) == 0) {
        assert!(joined.elapsed() < Duration::from_secs(60), "the replicators applied nothing within 60 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs_f64(opts.warm_up)).await;
    for c in &cells {
        c.replica.metrics().reset_lag();
    }
    let start_applied: Vec<u64> = cells.iter().map(|c| applied_from_writer(&c.replica)).collect();
    let start_written = written.load(Ordering::Relaxed);
    let start_persisted: Vec<Written> = cells.iter().map(|c| c.store.written()).collect();
    let cpu0 = process_cpu();
    let t0 = Instant::now();
    let mut slowest = vec![f64::MAX; cells.len()];
    let mut last: Vec<u64> = start_applied.clone();
    let mut last_t = t0;
    while t0.elapsed().as_secs_f64() < opts.secs {
        tokio::time::sleep(Duration::from_secs(1).min(Duration::from_secs_f64(opts.secs))).await;
        let now = Instant::now();
        for (i, c) in cells.iter().enumerate() {
            let a = applied_from_writer(&c.replica);
            slowest[i] = slowest[i].min((a - last[i]) as f64 / (now - last_t).as_secs_f64());
            last[i] = a;
        }
        last_t = now;
    }
    let window = t0.elapsed().as_secs_f64();
    let cpu = process_cpu() - cpu0;
    let applied: Vec<u64> = cells.iter().zip(&start_applied).map(|(c, s)| applied_from_writer(&c.replica) - s).collect();
    let lag: Vec<crdt::LagSummary> = cells.iter().map(|c| c.replica.metrics().lag(WRITER).expect("lag samples")).collect();
    let persisted: Vec<Written> = cells.iter().zip(&start_persisted).map(|(c, s)| c.store.written().since(*s)).collect();
    let written_in_window = written.load(Ordering::Relaxed) - start_written;

    stop.store(true, Ordering::Relaxed);
    writer_task.await.unwrap();
    let total = written.load(Ordering::Relaxed);
    let stopped = Instant::now();
    let deadline = stopped + Duration::from_secs(300);
    while cells.iter().any(|c| applied_from_writer(&c.replica) < total) {
        assert!(Instant::now() < deadline, "replication did not drain within 300 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drain = stopped.elapsed();
    // every change applied once, at both cells
    for c in &cells {
        let sum: i64 = c
            .replica
            .lock()
            .await
            .store()
            .objects()
            .values()
            .filter_map(|v| v.as_counter().map(|c| c.value()))
            .sum();
        assert_eq!(sum as u64, total, "cell {} converged on the writer's total", c.replica.cell());
    }
    for h in handles {
        h.shutdown().await;
    }
    relay_task.abort();
    for c in &cells {
        redis.remove(c.replica.state_key()).await.unwrap();
    }
    RunResult {
        elements,
        snapshot_bytes,
        written: written_in_window,
        window,
        applied,
        slowest_window: slowest,
        lag,
        drain,
        persisted,
        cpu,
    }
}

fn print(r: &RunResult, floor: f64) {
    println!(
        "\n{} elements per applying replica (snapshot {:.1} MB); window {:.1} s; writer {:.0} changes/s",
        r.elements,
        r.snapshot_bytes as f64 / 1e6,
        r.window,
        r.written as f64 / r.window
    );
    for (i, cell) in APPLYING.iter().enumerate() {
        let (a, l, w) = (r.applied[i], r.lag[i], r.persisted[i]);
        let n = a.max(1) as f64;
        println!(
            "  {cell}: applied {:.0}/s (slowest 1 s: {:.0}/s) = {:.2} of the floor; lag p50 {} ms, p99 {} ms, max {} ms; \
             persisted {:.1} B/change ({:.1} log + {:.1} snapshot), {:.4} writes/change ({} appends, {} snapshots)",
            a as f64 / r.window,
            r.slowest_window[i],
            a as f64 / r.window / floor,
            l.p50_ms,
            l.p99_ms,
            l.max_ms,
            (w.appended_bytes + w.saved_bytes) as f64 / n,
            w.appended_bytes as f64 / n,
            w.saved_bytes as f64 / n,
            (w.appends + w.saves) as f64 / n,
            w.appends,
            w.saves,
        );
    }
    let changes: u64 = r.applied.iter().sum();
    println!(
        "  drain after the writer stopped: {:?}; process CPU {:.1} µs per applied change (both cells, writer and relay included)",
        r.drain,
        r.cpu.as_secs_f64() * 1e6 / changes.max(1) as f64
    );
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let opts = Opts::from_env(bench);
    let redis_url = std::env::var("CELL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        println!("replication_load: {opts:?}");
        for &elements in &opts.elements {
            let floor_before = floor(opts.floor, 20).await;
            let r = run(&opts, elements, &redis_url).await;
            let floor_after = floor(opts.floor, 20).await;
            let floor = (floor_before + floor_after) / 2.0;
            println!("floor (raw produce -> 2 consumer groups): {floor_before:.0} / {floor_after:.0} msg/s");
            print(&r, floor);
        }
    });
}
