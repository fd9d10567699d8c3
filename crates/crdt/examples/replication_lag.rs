//! Replication lag across three cells on loopback, end to end: outbox write
//! (SQLite) -> relay (woken after the commit, else 20 ms poll) -> Kafka (rdkafka MockCluster) -> replicator
//! (apply, save state to Redis, commit). Prints p50/p99 per (cell, origin).
//!
//! `cargo run --release -p crdt --all-features --example replication_lag`
//! (needs Redis at `CELL_TEST_REDIS_URL` or 127.0.0.1:6379).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crdt::kafka::{Relay, Replicator};
use crdt::outbox::Outbox;
use crdt::redis_state::RedisStateStore;
use crdt::Replica;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

const CELLS: [&str; 3] = ["sh", "fra", "sv"];
const WRITES_PER_CELL: usize = 300;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let run = format!("lag{}", std::process::id());
    let topic = format!("{run}-topic");
    let cluster: MockCluster<'static, DefaultProducerContext> = MockCluster::new(3).unwrap();
    cluster.create_topic(&topic, 3, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let dir = std::env::temp_dir().join(&run);
    std::fs::create_dir_all(&dir).unwrap();
    let redis = std::env::var("CELL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let state = RedisStateStore::connect(&redis, &run).await.expect("redis");

    let mut cells = Vec::new();
    let mut tasks = Vec::new();
    let mut handles = Vec::new();
    for name in CELLS {
        let url = format!("sqlite://{}/{name}.db?mode=rwc", dir.display());
        let outbox = Outbox::connect(&url, "outbox").await.unwrap();
        outbox.migrate().await.unwrap();
        let replica = Arc::new(Replica::try_new(name.parse().unwrap(), 1, Duration::from_secs(5)).unwrap());
        let relay = Relay::new(outbox.clone(), &bootstrap, &topic).unwrap();
        tasks.push(tokio::spawn(async move { relay.run(std::future::pending()).await }));
        let r = Replicator::start(replica.clone(), &bootstrap, &topic, &format!("{run}-{name}"), state.clone())
            .await
            .unwrap();
        handles.push(r.spawn());
        cells.push((replica, outbox));
    }

    // let the consumer groups settle with one write per cell
    for (replica, outbox) in &cells {
        write(replica, outbox, "warmup").await;
    }
    wait(&cells, 3).await;
    for (replica, _) in &cells {
        replica.metrics().reset_lag();
    }

    let start = Instant::now();
    let mut writers = Vec::new();
    for (replica, outbox) in cells.clone() {
        writers.push(tokio::spawn(async move {
            for i in 0..WRITES_PER_CELL {
                write(&replica, &outbox, &format!("post-{}", i % 10)).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    wait(&cells, 3 + 3 * WRITES_PER_CELL as i64).await;
    println!("{} writes per cell in {:?}", WRITES_PER_CELL, start.elapsed());
    let mut worst = 0;
    for (replica, _) in &cells {
        for origin in CELLS {
            if let Some(l) = replica.metrics().lag(origin) {
                println!(
                    "cell {:>3} <- {:>3}: n={:>4} p50={:>3} ms p99={:>3} ms max={:>3} ms",
                    replica.cell(),
                    origin,
                    l.count,
                    l.p50_ms,
                    l.p99_ms,
                    l.max_ms
                );
                if origin != replica.cell().as_str() {
                    worst = worst.max(l.p99_ms);
                }
            }
        }
    }
    println!("worst cross-cell p99: {worst} ms");
    for h in handles {
        h.shutdown().await;
    }
    for t in tasks {
        t.abort();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

async fn write(replica: &Replica, outbox: &Outbox, post: &str) {
    let mut guard = replica.lock().await;
    let change = guard.counter_add("post", post, 1).unwrap();
    let mut tx = outbox.pool().begin().await.unwrap();
    outbox.enqueue(&mut tx, &change).await.unwrap();
    tx.commit().await.unwrap();
    guard.commit(&change).unwrap();
    outbox.wake();
}

async fn wait(cells: &[(Arc<Replica>, Outbox)], total: i64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut done = true;
        for (replica, _) in cells {
            let sum: i64 = replica
                .lock()
                .await
                .store()
                .objects()
                .values()
                .filter_map(|v| v.as_counter().map(|c| c.value()))
                .sum();
            done &= sum == total;
        }
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "replication did not converge");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
