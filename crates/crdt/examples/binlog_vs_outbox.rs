//! The binlog relay beside the outbox relay in one run, on one private MariaDB
//! with the binary log on (`testkit::MariaDbServer`) and one rdkafka
//! MockCluster topic: the same number of counter writes go through each
//! source to a replicator in another cell (apply, save state in memory,
//! commit). Prints throughput (writes until the last was applied) and
//! replication lag p50/p99 per source.
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

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crdt::binlog::{BinlogConfig, BinlogRelay, PositionStore, RowKind, TableMapping};
use crdt::kafka::{Relay, Replicator};
use crdt::outbox::Outbox;
use crdt::{MemoryStateStore, Replica};
use mysql_async::prelude::Queryable;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

const WRITES: usize = 500;

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
    let mut cdc =
        BinlogRelay::try_new(config, &server.url(), positions, &bootstrap, &topic).unwrap();
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

    println!(
        "{WRITES} counter writes per source, one writer, one receiving cell; host cores: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for (name, origin, writes, total) in [
        ("outbox", "sh", outbox_writes, outbox_total),
        ("binlog", "sh-cdc", binlog_writes, binlog_total),
    ] {
        let l = fra.metrics().lag(origin).unwrap();
        println!(
            "{name:>6}: writes took {:>5} ms, last applied after {:>5} ms ({:>5.0} writes/s end to end); lag n={} p50={} ms p99={} ms max={} ms",
            writes.as_millis(),
            total.as_millis(),
            WRITES as f64 / total.as_secs_f64(),
            l.count,
            l.p50_ms,
            l.p99_ms,
            l.max_ms
        );
    }
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
