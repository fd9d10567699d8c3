//! The binlog relay beside the outbox relay in one run, on one private MariaDB
//! with the binary log on (`testkit::MariaDbServer`) and one rdkafka
//! MockCluster topic: the same number of counter writes go through each
//! source to a replicator in another cell (apply, save state in memory,
//! commit). Two phases per source:
//!
//! 1. steady: one writer, `WRITES` writes one after the other, relay running.
//!    Lag from the write to Kafka (a consumer reads the message: the broker
//!    made it readable, which is what `acks=all` waits for) and to the apply
//!    at the replicator, p50/p99; writes/s end to end.
//! 2. backlog: the relay stopped, `BACKLOG` rows written, then the relay
//!    started: relay throughput in changes/s, from its start to the last
//!    change readable in Kafka.
//!
//! - outbox: `INSERT` business row + `Outbox::enqueue` in one transaction,
//!   then `Outbox::wake` (the relay publishes at once).
//! - binlog: `INSERT` business row only; the `BinlogRelay` reads it from the
//!   binlog. The row carries its write time in ms (`lww_column`), so the lag
//!   is measured from the same instant as for the outbox.
//!
//! `cargo run --release -p crdt --all-features --example binlog_vs_outbox`
//! (needs `/usr/sbin/mariadbd` and `/usr/bin/mariadb-install-db`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crdt::binlog::{BinlogConfig, BinlogRelay, PositionStore, RowKind, TableMapping};
use crdt::kafka::headers::event_from_message;
use crdt::kafka::{Relay, Replicator};
use crdt::outbox::Outbox;
use crdt::{MemoryStateStore, Replica};
use mysql_async::prelude::Queryable;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

const WRITES: usize = 500;
const BACKLOG: usize = 2000;

/// Every change a plain consumer read: (object id, read at ms, HLC ms).
type Seen = Arc<Mutex<Vec<(String, u64, u64)>>>;

/// Reads the topic from the start on a thread of its own until `stop`.
fn watch_topic(bootstrap: &str, topic: &str, stop: Arc<std::sync::atomic::AtomicBool>) -> Seen {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("watch-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "1")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let seen: Seen = Arc::default();
    let out = seen.clone();
    std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) else { continue };
            let at = now_ms();
            if let Ok(ev) = event_from_message(&m) {
                seen.lock().unwrap().push((ev.aggregate_id, at, ev.ts.physical_ms()));
            }
        }
    });
    out
}

/// Changes read of objects starting with `prefix`.
fn read_count(seen: &Seen, prefix: &str) -> usize {
    seen.lock().unwrap().iter().filter(|(id, _, _)| id.starts_with(prefix)).count()
}

/// Waits until `n` changes of objects starting with `prefix` were read.
async fn wait_read(seen: &Seen, prefix: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while read_count(seen, prefix) < n {
        assert!(Instant::now() < deadline, "{prefix}: {} of {n} read", read_count(seen, prefix));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// p50 and p99 (ms) of write -> readable in Kafka for objects starting with `prefix`.
fn kafka_lag(seen: &Seen, prefix: &str) -> (u64, u64, usize) {
    let mut lags: Vec<u64> =
        seen.lock().unwrap().iter().filter(|(id, _, _)| id.starts_with(prefix)).map(|(_, at, hlc)| at.saturating_sub(*hlc)).collect();
    lags.sort_unstable();
    let q = |p: f64| lags.get(((lags.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0);
    (q(0.5), q(0.99), lags.len())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = testkit::MariaDbServer::start();
    let db = format!("{}/bench", server.url());
    let pool = mysql_async::Pool::new(mysql_async::Opts::from_url(&server.url()).unwrap());
    let mut conn = pool.get_conn().await.unwrap();
    conn.query_drop("CREATE DATABASE bench").await.unwrap();
    conn.query_drop(
        "CREATE TABLE bench.like_events (id BIGINT AUTO_INCREMENT PRIMARY KEY, post_id VARCHAR(64) NOT NULL, \
         delta INT NOT NULL, at_ms BIGINT NOT NULL) ENGINE=InnoDB",
    )
    .await
    .unwrap();
    conn.query_drop(
        "CREATE TABLE bench.outbox_likes (id BIGINT AUTO_INCREMENT PRIMARY KEY, post_id VARCHAR(64) NOT NULL) ENGINE=InnoDB",
    )
    .await
    .unwrap();

    let topic = format!("cdc{}", std::process::id());
    let cluster: MockCluster<'static, DefaultProducerContext> = MockCluster::new(3).unwrap();
    cluster.create_topic(&topic, 3, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let stop_watch = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = watch_topic(&bootstrap, &topic, stop_watch.clone());

    // the receiving cell
    let fra = Arc::new(Replica::try_new("fra".parse().unwrap(), 1, Duration::from_secs(5)).unwrap());
    let replicator = Replicator::start(
        fra.clone(),
        &bootstrap,
        &topic,
        "fra",
        MemoryStateStore::new(),
    )
    .await
    .unwrap()
    .spawn();

    // source 1: the outbox of cell `sh`
    let outbox = Outbox::connect(&db, "outbox").await.unwrap();
    outbox.migrate().await.unwrap();
    let sh = Arc::new(Replica::try_new("sh".parse().unwrap(), 1, Duration::from_secs(5)).unwrap());
    let relay = Relay::new(outbox.clone(), &bootstrap, &topic).unwrap();
    let outbox_task = tokio::spawn(async move { relay.run(std::future::pending()).await });
    let start_outbox = |outbox: Outbox| {
        let relay = Relay::new(outbox, &bootstrap, &topic).unwrap();
        tokio::spawn(async move { relay.run(std::future::pending()).await })
    };

    // source 2: the binlog of the same server, published as origin `sh-cdc`
    let positions = PositionStore::try_new(&db, "cdc_positions").unwrap();
    positions.migrate().await.unwrap();
    let mapping = TableMapping {
        schema: "bench".into(),
        table: "like_events".into(),
        aggregate_type: "post".into(),
        object: "post_id".into(),
        object_prefix: "cdc:".into(),
        lww_column: Some("at_ms".into()),
        kind: RowKind::Counter {
            delta: "delta".into(),
        },
    };
    let config =
        BinlogConfig::try_new("sh-cdc", "sh-cdc", 1000 + server.server_id(), vec![mapping])
            .unwrap();
    let new_cdc = || {
        BinlogRelay::try_new(config.clone(), &server.url(), positions.clone(), &bootstrap, &topic)
            .unwrap()
    };
    let mut cdc = new_cdc();
    cdc.run_once().await.unwrap(); // stores the starting position
    let cdc_task = tokio::spawn(async move { cdc.run(std::future::pending()).await });

    // warm up both paths and the consumer group
    outbox_write(&sh, &outbox, "ob:warmup").await;
    binlog_write(&mut conn, "warmup").await;
    wait(&fra, "ob:", 1).await;
    wait(&fra, "cdc:", 1).await;
    fra.metrics().reset_lag();

    let start = Instant::now();
    for i in 0..WRITES {
        outbox_write(&sh, &outbox, &format!("ob:post-{}", i % 10)).await;
    }
    let outbox_writes = start.elapsed();
    wait(&fra, "ob:", 1 + WRITES as i64).await;
    let outbox_total = start.elapsed();

    let start = Instant::now();
    for i in 0..WRITES {
        binlog_write(&mut conn, &format!("post-{}", i % 10)).await;
    }
    let binlog_writes = start.elapsed();
    wait(&fra, "cdc:", 1 + WRITES as i64).await;
    let binlog_total = start.elapsed();

    // write -> applied of the steady phase (the backlog's is its queueing)
    let applied = [fra.metrics().lag("sh").unwrap(), fra.metrics().lag("sh-cdc").unwrap()];

    // backlog: each relay stopped, BACKLOG rows written, then the relay started
    outbox_task.abort();
    cdc_task.abort();
    for i in 0..BACKLOG {
        outbox_write(&sh, &outbox, &format!("ob:drain-{}", i % 10)).await;
    }
    let start = Instant::now();
    let outbox_task = start_outbox(outbox.clone());
    wait_read(&seen, "ob:drain", BACKLOG).await;
    let outbox_drain = start.elapsed();
    for i in 0..BACKLOG {
        binlog_write(&mut conn, &format!("drain-{}", i % 10)).await;
    }
    let start = Instant::now();
    let mut cdc = new_cdc();
    let cdc_task = tokio::spawn(async move { cdc.run(std::future::pending()).await });
    wait_read(&seen, "cdc:drain", BACKLOG).await;
    let binlog_drain = start.elapsed();

    println!(
        "{WRITES} counter writes per source, one writer, one receiving cell, then a backlog of {BACKLOG}; host cores: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let [outbox_applied, binlog_applied] = applied;
    for (name, l, prefix, writes, total, drain) in [
        ("outbox", outbox_applied, "ob:post", outbox_writes, outbox_total, outbox_drain),
        ("binlog", binlog_applied, "cdc:post", binlog_writes, binlog_total, binlog_drain),
    ] {
        let (k50, k99, kn) = kafka_lag(&seen, prefix);
        println!(
            "{name:>6}: steady: writes took {:>5} ms, last applied after {:>5} ms ({:>5.0} writes/s end to end); \
             write->Kafka n={kn} p50={k50} ms p99={k99} ms; write->applied n={} p50={} ms p99={} ms max={} ms; \
             backlog: {BACKLOG} changes relayed in {:>5} ms ({:>6.0} changes/s)",
            writes.as_millis(),
            total.as_millis(),
            WRITES as f64 / total.as_secs_f64(),
            l.count,
            l.p50_ms,
            l.p99_ms,
            l.max_ms,
            drain.as_millis(),
            BACKLOG as f64 / drain.as_secs_f64(),
        );
    }
    stop_watch.store(true, std::sync::atomic::Ordering::Relaxed);
    replicator.shutdown().await;
    outbox_task.abort();
    cdc_task.abort();
}

async fn outbox_write(replica: &Replica, outbox: &Outbox, post: &str) {
    let mut guard = replica.lock().await;
    let change = guard.counter_add("post", post, 1).unwrap();
    let mut tx = outbox.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO bench.outbox_likes (post_id) VALUES (?)")
        .bind(post)
        .execute(&mut *tx)
        .await
        .unwrap();
    outbox.enqueue(&mut tx, &change).await.unwrap();
    tx.commit().await.unwrap();
    guard.commit(&change).unwrap();
    outbox.wake();
}

async fn binlog_write(conn: &mut mysql_async::Conn, post: &str) {
    conn.exec_drop(
        "INSERT INTO bench.like_events (post_id, delta, at_ms) VALUES (?, 1, ?)",
        (post, now_ms()),
    )
    .await
    .unwrap();
}

/// Waits until the counters whose id starts with `prefix` sum to `total`.
async fn wait(replica: &Replica, prefix: &str, total: i64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let sum: i64 = replica
            .lock()
            .await
            .store()
            .objects()
            .iter()
            .filter(|(id, _)| id.starts_with(prefix))
            .filter_map(|(_, v)| v.as_counter().map(|c| c.value()))
            .sum();
        if sum == total {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replication did not converge ({prefix}: {sum} of {total})"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
