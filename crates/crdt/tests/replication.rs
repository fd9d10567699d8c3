//! Three cells in one process over one `rdkafka` MockCluster: outboxes on real
//! MariaDB, PostgreSQL and SQLite, replica state in real Redis.
#![cfg(all(feature = "sql", feature = "kafka", feature = "redis"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crdt::kafka::headers as hdr;
use crdt::kafka::{Relay, Replicator, ReplicatorHandle};
use crdt::outbox::{Dialect, Outbox};
use crdt::redis_state::RedisStateStore;
use crdt::{Change, Replica, Value};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tokio::sync::oneshot;

const CONVERGE: Duration = Duration::from_secs(90);

type Cluster = MockCluster<'static, DefaultProducerContext>;

fn cluster(topic: &str) -> Cluster {
    let c = MockCluster::new(3).expect("mock cluster");
    c.create_topic(topic, 3, 1).expect("topic");
    c
}

struct Cell {
    replica: Arc<Replica>,
    outbox: Outbox,
    biz: String,
    relay: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
    replicator: Option<ReplicatorHandle>,
    state: RedisStateStore,
    group: String,
}

struct Env {
    _dir: tempfile::TempDir,
    cluster: Cluster,
    bootstrap: String,
    topic: String,
    cells: Vec<Cell>,
    /// Heartbeats on and replicas know all cells: tombstones get collected.
    gc: bool,
}

const NAMES: [&str; 3] = ["sh", "fra", "sv"];

async fn outbox_for(i: usize, dir: &tempfile::TempDir, table: &str) -> Outbox {
    let url = match i {
        0 => testkit::mysql_url(),
        1 => testkit::postgres_url(),
        _ => format!("sqlite://{}/outbox.db?mode=rwc", dir.path().display()),
    };
    let outbox = Outbox::connect(&url, table).await.unwrap_or_else(|e| panic!("outbox database {url}: {e}"));
    outbox.migrate().await.unwrap();
    outbox
}

impl Env {
    /// Three cells; relays and replicators running unless `spawn` is false.
    async fn new(spawn: bool) -> Env {
        Self::with_gc(spawn, false).await
    }

    async fn with_gc(spawn: bool, gc: bool) -> Env {
        let topic = testkit::unique("crdt");
        let cluster = cluster(&topic);
        let bootstrap = cluster.bootstrap_servers();
        let dir = tempfile::tempdir().unwrap();
        let prefix = testkit::unique("crdt").replace('-', "_");
        let state = RedisStateStore::connect(&testkit::redis_url(), &prefix).await.expect("redis");
        let mut cells = Vec::new();
        for (i, name) in NAMES.iter().enumerate() {
            let outbox = outbox_for(i, &dir, &format!("{prefix}_{name}_outbox")).await;
            let biz = format!("{prefix}_{name}_likes");
            sqlx::query(&format!("CREATE TABLE {biz} (post VARCHAR(64) NOT NULL, user_id VARCHAR(64) NOT NULL)"))
                .execute(outbox.pool())
                .await
                .unwrap();
            let mut replica = Replica::try_new(name.parse().unwrap(), 1, Duration::from_secs(5)).unwrap();
            if gc {
                replica = replica.with_cells(NAMES.iter().map(|n| n.parse().unwrap()));
            }
            let replica = Arc::new(replica);
            cells.push(Cell {
                replica,
                outbox,
                biz,
                relay: None,
                replicator: None,
                state: state.clone(),
                group: format!("{topic}-{name}"),
            });
        }
        let mut env = Env { _dir: dir, cluster, bootstrap, topic, cells, gc };
        if spawn {
            for i in 0..3 {
                env.start_relay(i);
                env.start_replicator(i).await;
            }
        }
        env
    }

    fn relay(&self, i: usize) -> Relay {
        Relay::new(self.cells[i].outbox.clone(), &self.bootstrap, &self.topic).unwrap()
    }

    fn start_relay(&mut self, i: usize) {
        let mut relay = self.relay(i);
        if self.gc {
            relay = relay.with_heartbeat(self.cells[i].replica.clone(), Duration::from_millis(200));
        }
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            relay
                .run(async move {
                    let _ = rx.await;
                })
                .await
        });
        self.cells[i].relay = Some((tx, task));
    }

    async fn start_replicator(&mut self, i: usize) {
        let c = &self.cells[i];
        let r = Replicator::start(c.replica.clone(), &self.bootstrap, &self.topic, &c.group, c.state.clone())
            .await
            .unwrap();
        self.cells[i].replicator = Some(r.spawn());
    }

    async fn stop(mut self) {
        for c in &mut self.cells {
            if let Some((tx, task)) = c.relay.take() {
                let _ = tx.send(());
                let _ = task.await;
            }
            if let Some(h) = c.replicator.take() {
                h.shutdown().await;
            }
        }
    }
}

/// The business row and the deltas in one transaction, then the local commit.
async fn write(cell: &Cell, post: &str, user: &str, f: impl FnOnce(&mut crdt::ReplicaGuard<'_>) -> Vec<Change>) {
    let mut guard = cell.replica.lock().await;
    let changes = f(&mut guard);
    let mut tx = cell.outbox.pool().begin().await.unwrap();
    let ph = if cell.outbox.dialect() == Dialect::Postgres { "$1, $2" } else { "?, ?" };
    sqlx::query(&format!("INSERT INTO {} (post, user_id) VALUES ({ph})", cell.biz))
        .bind(post)
        .bind(user)
        .execute(&mut *tx)
        .await
        .unwrap();
    for c in &changes {
        cell.outbox.enqueue(&mut tx, c).await.unwrap();
    }
    tx.commit().await.unwrap();
    for c in &changes {
        guard.commit(c).unwrap();
    }
    cell.outbox.wake();
}

async fn like(cell: &Cell, post: &str, user: &str) {
    write(cell, post, user, |g| {
        vec![
            g.counter_add("post", &format!("{post}/likes"), 1).unwrap(),
            g.lww_add("post", &format!("{post}/likers"), user).unwrap(),
        ]
    })
    .await
}

async fn unlike(cell: &Cell, post: &str, user: &str) {
    write(cell, post, user, |g| {
        vec![
            g.counter_add("post", &format!("{post}/likes"), -1).unwrap(),
            g.lww_remove("post", &format!("{post}/likers"), user).unwrap(),
        ]
    })
    .await
}

async fn comment(cell: &Cell, post: &str, text: &str) {
    write(cell, post, "c", |g| vec![g.or_add("post", &format!("{post}/comments"), text).unwrap()]).await
}

async fn uncomment(cell: &Cell, post: &str, text: &str) {
    write(cell, post, "c", |g| vec![g.or_remove("post", &format!("{post}/comments"), text).unwrap()]).await
}

async fn objects(cell: &Cell) -> std::collections::BTreeMap<String, Value> {
    cell.replica.lock().await.store().objects().clone()
}

async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + CONVERGE;
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn converged(cells: &[&Cell]) -> bool {
    let first = objects(cells[0]).await;
    for c in &cells[1..] {
        if objects(c).await != first {
            return false;
        }
    }
    true
}

async fn wait_converged(env: &Env) {
    let cells: Vec<&Cell> = env.cells.iter().collect();
    wait_until("three cells to converge", || converged(&cells)).await;
}

async fn counter(cell: &Cell, id: &str) -> i64 {
    cell.replica.get(id).await.and_then(|v| v.as_counter().map(|c| c.value())).unwrap_or(0)
}

async fn members(cell: &Cell, id: &str) -> Vec<String> {
    cell.replica.get(id).await.and_then(|v| v.members()).unwrap_or_default()
}

/// Each cell: likes from 4 users, one unlike, two comments (one removed), all
/// on the same posts, concurrently.
async fn concurrent_round(env: &Env, round: &str) {
    let work = |i: usize| async move {
        let cell = &env.cells[i];
        for u in 0..4 {
            like(cell, "p1", &format!("{round}-u{i}{u}")).await;
        }
        unlike(cell, "p1", &format!("{round}-u{i}0")).await;
        comment(cell, "p1", &format!("{round}-c{i}a")).await;
        comment(cell, "p1", &format!("{round}-c{i}b")).await;
        uncomment(cell, "p1", &format!("{round}-c{i}b")).await;
        // the same comment text written in every cell
        comment(cell, "p1", &format!("{round}-shared")).await;
    };
    tokio::join!(work(0), work(1), work(2));
}

fn expected_round(round: &str, likers: &mut Vec<String>, comments: &mut Vec<String>) {
    for i in 0..3 {
        for u in 1..4 {
            likers.push(format!("{round}-u{i}{u}"));
        }
        comments.push(format!("{round}-c{i}a"));
    }
    comments.push(format!("{round}-shared"));
    likers.sort();
    comments.sort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_cells_converge_and_a_partitioned_cell_catches_up() {
    let env = Env::new(true).await;
    let (mut likers, mut comments) = (Vec::new(), Vec::new());

    concurrent_round(&env, "r1").await;
    expected_round("r1", &mut likers, &mut comments);
    wait_converged(&env).await;
    for c in &env.cells {
        assert_eq!(counter(c, "p1/likes").await, 9);
        assert_eq!(members(c, "p1/likers").await, likers);
        assert_eq!(members(c, "p1/comments").await, comments);
    }

    // partition: the third cell stops consuming
    env.cells[2].replicator.as_ref().unwrap().pause();
    let applied_before = env.cells[2].replica.metrics().stats().applied;
    concurrent_round(&env, "r2").await;
    expected_round("r2", &mut likers, &mut comments);
    let two: Vec<&Cell> = env.cells[..2].iter().collect();
    // equal is not enough: they may be equal before the third cell's round arrived
    let first = &env.cells[0];
    wait_until("the two connected cells to converge", || async {
        converged(&two).await && counter(first, "p1/likes").await == 18
    })
    .await;
    // the partitioned cell has only its own writes of round 2
    assert_eq!(counter(&env.cells[2], "p1/likes").await, 9 + 3);
    assert_eq!(env.cells[2].replica.metrics().stats().applied, applied_before);

    env.cells[2].replicator.as_ref().unwrap().resume();
    wait_converged(&env).await;
    for c in &env.cells {
        assert_eq!(counter(c, "p1/likes").await, 18);
        assert_eq!(members(c, "p1/likers").await, likers);
        assert_eq!(members(c, "p1/comments").await, comments);
    }
    // lag was measured per origin cell
    let m = env.cells[0].replica.metrics();
    for origin in NAMES {
        assert!(m.lag(origin).is_some_and(|l| l.count > 0), "no lag samples from {origin}");
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_errors_and_a_broker_down_lose_nothing() {
    let env = Env::new(true).await;
    let (mut likers, mut comments) = (Vec::new(), Vec::new());
    concurrent_round(&env, "w").await;
    expected_round("w", &mut likers, &mut comments);
    wait_converged(&env).await;

    // produce, fetch and offset-commit requests fail for a while
    use RDKafkaRespErr::*;
    env.cluster.request_errors(RDKafkaApiKey::Produce, &[RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 6]);
    env.cluster.request_errors(RDKafkaApiKey::Produce, &[RD_KAFKA_RESP_ERR__TRANSPORT; 3]);
    env.cluster.request_errors(RDKafkaApiKey::Fetch, &[RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT; 6]);
    env.cluster.request_errors(RDKafkaApiKey::OffsetCommit, &[RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT; 3]);
    concurrent_round(&env, "x").await;
    expected_round("x", &mut likers, &mut comments);

    // one broker (leader of some partitions) down while cells keep writing
    env.cluster.broker_down(2).unwrap();
    concurrent_round(&env, "y").await;
    expected_round("y", &mut likers, &mut comments);
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.cluster.broker_up(2).unwrap();

    wait_converged(&env).await;
    for c in &env.cells {
        assert_eq!(counter(c, "p1/likes").await, 27);
        assert_eq!(members(c, "p1/likers").await, likers);
        assert_eq!(members(c, "p1/comments").await, comments);
        assert_eq!(c.outbox.pending_count().await.unwrap(), 0);
        assert_eq!(c.replica.metrics().stats().rejected, 0);
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_crash_between_publish_and_mark_and_cell_restart_lose_nothing() {
    let mut env = Env::new(false).await;
    for i in 0..3 {
        env.start_replicator(i).await;
    }
    // cells 1 and 2 relay normally; cell 0's relay publishes, then "crashes"
    env.start_relay(1);
    env.start_relay(2);
    concurrent_round(&env, "a").await;
    let rows = env.cells[0].outbox.pending_count().await.unwrap();
    assert!(rows > 0);
    let (published, err) = env.relay(0).publish_pending().await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(published.len() as i64, rows);
    // the crash: nothing was marked
    assert_eq!(env.cells[0].outbox.pending_count().await.unwrap(), rows);
    wait_converged(&env).await;
    // a new relay publishes the same rows again and marks them
    assert_eq!(env.relay(0).run_once().await.unwrap() as i64, rows);
    assert_eq!(env.cells[0].outbox.pending_count().await.unwrap(), 0);
    let dups = env.cells[1].replica.metrics();
    wait_until("the re-published rows to be skipped", || async { dups.stats().duplicates >= rows as u64 }).await;
    let (mut likers, mut comments) = (Vec::new(), Vec::new());
    expected_round("a", &mut likers, &mut comments);
    for c in &env.cells {
        assert_eq!(counter(c, "p1/likes").await, 9, "double-applied in {}", c.replica.cell());
        assert_eq!(members(c, "p1/comments").await, comments);
    }
    // every row of cell 0 was applied exactly once in cell 1, the copies skipped
    let s = env.cells[1].replica.metrics().stats();
    assert_eq!(s.duplicates, rows as u64);

    // cell 1 crashes (no clean shutdown), misses a round, restarts from Redis + its committed offset
    env.cells[1].replicator.take().unwrap().abort();
    if let Some((tx, task)) = env.cells[1].relay.take() {
        let _ = tx.send(());
        let _ = task.await;
    }
    env.start_relay(0);
    let old = env.cells[1].replica.clone();
    env.cells[1].replica = Arc::new(Replica::try_new(NAMES[1].parse().unwrap(), 1, Duration::from_secs(5)).unwrap());
    let restarted = env.cells[1].replica.clone();
    {
        let cells = &env.cells;
        let work = |i: usize| async move {
            for u in 0..3 {
                like(&cells[i], "p2", &format!("b-u{i}{u}")).await;
            }
            comment(&cells[i], "p2", &format!("b-c{i}")).await;
        };
        tokio::join!(work(0), work(2));
    }
    // recovery: Redis state plus own outbox rows, before any local write
    restarted.recover(&env.cells[1].state, &env.cells[1].outbox).await.unwrap();
    assert!(restarted.is_restored());
    // the restored state already holds round "a" (from Redis), before any new message
    assert_eq!(counter(&env.cells[1], "p1/likes").await, 9);
    assert_eq!(members(&env.cells[1], "p1/comments").await, members(&env.cells[0], "p1/comments").await);
    // a local write after recovery: `Replicator::start` must not restore over it
    like(&env.cells[1], "p1", "after-restart").await;
    env.start_replicator(1).await;
    assert_eq!(counter(&env.cells[1], "p1/likes").await, 10);
    env.start_relay(1);
    wait_converged(&env).await;
    for c in &env.cells {
        assert_eq!(counter(c, "p2/likes").await, 6);
        assert_eq!(counter(c, "p1/likes").await, 10);
    }
    assert!(Arc::ptr_eq(&restarted, &env.cells[1].replica) && !Arc::ptr_eq(&old, &restarted));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_is_transactional_context_rides_in_headers_and_bad_messages_are_rejected() {
    let mut env = Env::new(false).await;
    env.start_replicator(1).await;
    let cell = &env.cells[0];

    // a rolled-back transaction leaves no outbox row and no local change
    {
        let mut guard = cell.replica.lock().await;
        let change = guard.counter_add("post", "p9/likes", 1).unwrap();
        let mut tx = cell.outbox.pool().begin().await.unwrap();
        cell.outbox.enqueue(&mut tx, &change).await.unwrap();
        tx.rollback().await.unwrap();
    }
    assert_eq!(cell.outbox.pending_count().await.unwrap(), 0);
    assert_eq!(counter(cell, "p9/likes").await, 0);

    // a write inside a request's cell context
    let ctx = cellctx::CellContext::new()
        .with_cell("sh".parse().unwrap())
        .with_request_id("req-42")
        .unwrap()
        .with_tenant("acme")
        .unwrap();
    cellctx::scope(Arc::new(ctx), like(cell, "p9", "alice")).await;
    let rows = cell.outbox.pending(10).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].aggregate_type, "post");
    assert_eq!(rows[0].aggregate_id, "p9/likes");
    assert_eq!(rows[0].event_type, crdt::TYPE_PN_COUNTER);
    assert_eq!(rows[0].payload[0], crdt::codec::WIRE_VERSION);
    assert_eq!(env.relay(0).run_once().await.unwrap(), 2);

    // the bytes on the topic
    let raw: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &env.bootstrap)
        .set("group.id", testkit::unique("raw"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    raw.subscribe(&[env.topic.as_str()]).unwrap();
    let msg = tokio::time::timeout(CONVERGE, raw.recv()).await.expect("a message").unwrap();
    let h = msg.headers().unwrap();
    let get = |k: &str| {
        (0..h.count())
            .filter_map(|i| h.try_get(i))
            .find(|x| x.key == k)
            .and_then(|x| x.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let names = cellctx::HeaderNames::default();
    assert_eq!(get(hdr::ORIGIN).as_deref(), Some("sh"));
    assert_eq!(get(names.cell.as_str()).as_deref(), Some("sh"));
    assert_eq!(get(names.request_id.as_str()).as_deref(), Some("req-42"));
    assert_eq!(get(names.tenant.as_str()).as_deref(), Some("acme"));
    // key = object id, sequence = that row's outbox id, payload = the row's bytes
    let key = std::str::from_utf8(msg.key().unwrap()).unwrap();
    let row = rows.iter().find(|r| r.aggregate_id == key).expect("a row for the key");
    assert_eq!(get(hdr::SEQ), Some(row.id.to_string()));
    assert_eq!(get(hdr::HLC), Some(row.hlc.0.to_string()));
    assert_eq!(get(hdr::TYPE).as_deref(), Some(row.event_type.as_str()));
    assert_eq!(msg.payload().unwrap(), row.payload.as_slice());

    let other = &env.cells[1];
    wait_until("cell 1 to apply", || async { counter(other, "p9/likes").await == 1 }).await;

    // bad messages: corrupt payload, unknown version, missing headers, clock far ahead
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &env.bootstrap).create().unwrap();
    let good = crdt::codec::encode(&crdt::Delta::Counter(crdt::PnCounter::new().add_delta(crdt::SiteId(7), 5)))
        .unwrap();
    let now = crdt::Timestamp::new(crdt::Clock::now_ms(&crdt::SystemClock), 0);
    let future = crdt::Timestamp::new(now.physical_ms() + 3_600_000, 0);
    let mut unknown = good.clone();
    unknown[0] = 99;
    let cases: Vec<(Vec<u8>, Option<crdt::Timestamp>, u64)> = vec![
        (good[..good.len() - 1].to_vec(), Some(now), 101),
        (unknown, Some(now), 102),
        (good.clone(), None, 103),
        (good.clone(), Some(future), 104),
        (good.clone(), Some(now), 105), // valid: applied after the bad ones
    ];
    for (payload, ts, seq) in &cases {
        let seq = seq.to_string();
        let mut headers = OwnedHeaders::new()
            .insert(Header { key: hdr::ORIGIN, value: Some("sv") })
            .insert(Header { key: hdr::SEQ, value: Some(seq.as_str()) })
            .insert(Header { key: hdr::TYPE, value: Some(crdt::TYPE_PN_COUNTER) });
        if let Some(ts) = ts {
            let v = ts.0.to_string();
            headers = headers.insert(Header { key: hdr::HLC, value: Some(v.as_str()) });
        }
        let rec = FutureRecord::to(&env.topic).key("p9/likes").payload(payload).headers(headers);
        producer.send(rec, Duration::from_secs(30)).await.unwrap();
    }
    wait_until("the valid message after the bad ones", || async { counter(other, "p9/likes").await == 6 }).await;
    // undecodable ones are skipped but kept as dead letters; the one from a
    // clock an hour ahead is parked, not lost
    assert_eq!(other.replica.metrics().stats().rejected, 3);
    assert_eq!(other.replica.metrics().stats().parked, 1);
    let dead = other.replica.dead_letters().await;
    assert_eq!(dead.iter().map(|d| d.reason.as_str()).collect::<Vec<_>>(), ["corrupt", "unknown_version", "corrupt"]);
    let parked = other.replica.parked().await;
    assert_eq!((parked.len(), parked[0].event.seq, parked[0].event.ts), (1, 104, future));
    // the far clock was not adopted
    assert!(other.replica.hlc().last() < future);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tombstones_are_collected_once_every_cell_acknowledged_and_stay_dead() {
    let env = Env::with_gc(true, true).await;
    let (mut likers, mut comments) = (Vec::new(), Vec::new());
    concurrent_round(&env, "g").await;
    expected_round("g", &mut likers, &mut comments);

    // a comment added in one cell and removed in another
    let mut ghost = None;
    write(&env.cells[0], "p1", "c", |g| {
        let c = g.or_add("post", "p1/comments", "ghost").unwrap();
        ghost = Some(c.clone());
        vec![c]
    })
    .await;
    let ghost = ghost.unwrap();
    let c1 = &env.cells[1];
    wait_until("the ghost comment to reach cell 1", || async {
        members(c1, "p1/comments").await.contains(&"ghost".to_string())
    })
    .await;
    uncomment(c1, "p1", "ghost").await;
    wait_converged(&env).await;

    // heartbeats move every cell's watermark past the removes: tombstones go
    for c in &env.cells {
        wait_until("tombstones to be collected", || async { c.replica.lock().await.store().tombstones() == 0 }).await;
        assert!(c.replica.global_watermark().is_some_and(|w| w > ghost.ts));
    }
    wait_converged(&env).await;
    for c in &env.cells {
        assert_eq!(counter(c, "p1/likes").await, 9);
        assert_eq!(members(c, "p1/likers").await, likers);
        assert_eq!(members(c, "p1/comments").await, comments);
    }

    // a late copy of the old add (new sequence, so not caught as a duplicate)
    // must not resurrect the collected comment
    let applied = c1.replica.metrics().stats().applied;
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &env.bootstrap).create().unwrap();
    let payload = ghost.payload().unwrap();
    let hlc = ghost.ts.0.to_string();
    let headers = OwnedHeaders::new()
        .insert(Header { key: hdr::ORIGIN, value: Some("sh") })
        .insert(Header { key: hdr::SEQ, value: Some("999999") })
        .insert(Header { key: hdr::HLC, value: Some(hlc.as_str()) })
        .insert(Header { key: hdr::TYPE, value: Some(crdt::TYPE_OR_SET) });
    let rec = FutureRecord::to(&env.topic).key("p1/comments").payload(&payload).headers(headers);
    producer.send(rec, Duration::from_secs(30)).await.unwrap();
    wait_until("the late copy to be applied", || async { c1.replica.metrics().stats().applied > applied }).await;
    for c in &env.cells {
        assert!(!members(c, "p1/comments").await.contains(&"ghost".to_string()));
    }
    env.stop().await;
}

/// Restarting a cell whose saved state is older than its last writes, and the
/// SQL state store; no Kafka: outbox rows are delivered by hand.
mod recovery {
    use super::*;
    use crdt::StateStore;
    use crdt::sql_state::SqlStateStore;
    use crdt::{Clock, Timestamp};

    const POST: &str = "post-1";

    /// A unique SQL table name.
    fn table(prefix: &str) -> String {
        testkit::unique(prefix).replace('-', "_")
    }

    fn cell(name: &str) -> cellctx::CellId {
        name.parse().unwrap()
    }

    fn replica(name: &str) -> Replica {
        Replica::try_new(cell(name), 1, Duration::from_secs(5)).unwrap()
    }

    /// A like: the change goes to the outbox in a transaction, then is committed locally.
    async fn like(replica: &Replica, outbox: &Outbox) -> Change {
        let mut guard = replica.lock().await;
        let change = guard.counter_add("post", POST, 1).unwrap();
        let mut tx = outbox.pool().begin().await.unwrap();
        outbox.enqueue(&mut tx, &change).await.unwrap();
        tx.commit().await.unwrap();
        guard.commit(&change).unwrap();
        change
    }

    async fn count(replica: &Replica) -> i64 {
        replica.get(POST).await.and_then(|v| v.as_counter().map(|c| c.value())).unwrap_or(0)
    }

    /// Delivers every row of `from` to `to`, as its replicator would.
    async fn deliver(from: &Outbox, to: &Replica) {
        for row in from.pending(10_000).await.unwrap() {
            let ev = crdt::Event {
                origin: cell(&row.origin),
                seq: u64::try_from(row.id).unwrap(),
                ts: row.hlc,
                aggregate_id: row.aggregate_id,
                event_type: row.event_type,
                payload: row.payload,
            };
            to.apply_event(&ev).await.unwrap();
        }
    }

    async fn scenario(url: &str) {
        let a_out = Outbox::connect(url, &table("crdt_rec_a")).await.unwrap();
        let b_out = Outbox::connect(url, &table("crdt_rec_b")).await.unwrap();
        a_out.migrate().await.unwrap();
        b_out.migrate().await.unwrap();
        let state = SqlStateStore::for_outbox(&a_out, &table("crdt_state")).unwrap();
        state.migrate().await.unwrap();

        // cell "sh" likes 5 times, saves its state, likes 3 more times, dies unsaved
        let a = replica("sh");
        let b = replica("fra");
        for _ in 0..5 {
            like(&a, &a_out).await;
        }
        state.save(a.state_key(), &a.snapshot().await.unwrap()).await.unwrap();
        for _ in 0..3 {
            like(&a, &a_out).await;
        }
        for _ in 0..2 {
            like(&b, &b_out).await;
        }
        assert_eq!(count(&a).await, 8);
        drop(a);

        // without recovery, the restarted cell's next like would carry total 6
        // (below the 8 already in the outbox): the join by maximum would lose it
        let stale = replica("sh");
        stale.restore(&state.load(stale.state_key()).await.unwrap().unwrap()).await.unwrap();
        let change = stale.lock().await.counter_add("post", POST, 1).unwrap();
        let crdt::Delta::Counter(d) = &change.delta else { panic!("counter delta") };
        assert_eq!(d.entries[0].p, 6);

        // recovery: snapshot plus the 3 own rows written after it
        let a = replica("sh");
        assert_eq!(a.recover(&state, &a_out).await.unwrap(), 3);
        assert!(a.is_restored());
        assert_eq!(count(&a).await, 8);
        for _ in 0..4 {
            let change = like(&a, &a_out).await;
            let crdt::Delta::Counter(d) = &change.delta else { panic!("counter delta") };
            assert!(d.entries[0].p > 8, "a like after recovery carries the full total");
        }
        like(&b, &b_out).await;

        // every cell gets every row (a fresh third cell too): 12 + 3 everywhere
        deliver(&b_out, &a).await;
        deliver(&a_out, &b).await;
        let c = replica("sv");
        deliver(&b_out, &c).await;
        deliver(&a_out, &c).await;
        for r in [&a, &b, &c] {
            assert_eq!(count(r).await, 15, "cell {}", r.cell());
        }
        assert_eq!(a.get(POST).await, b.get(POST).await);
        assert_eq!(b.get(POST).await, c.get(POST).await);

        // a second restart without any saved state replays every own row
        let empty = SqlStateStore::for_outbox(&a_out, &table("crdt_state")).unwrap();
        empty.migrate().await.unwrap();
        let a2 = replica("sh");
        assert_eq!(a2.recover(&empty, &a_out).await.unwrap(), 12);
        assert_eq!(count(&a2).await, 12);
        // replaying again changes nothing
        assert_eq!(a_out.replay_into(&a2).await.unwrap(), 12);
        assert_eq!(count(&a2).await, 12);
        let change = a2.lock().await.counter_add("post", POST, 1).unwrap();
        let crdt::Delta::Counter(d) = &change.delta else { panic!("counter delta") };
        assert_eq!(d.entries[0].p, 13);
    }

    #[tokio::test]
    async fn restarted_cell_recovers_from_outbox_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        scenario(&format!("sqlite://{}/cell.db?mode=rwc", dir.path().display())).await;
    }

    #[tokio::test]
    async fn restarted_cell_recovers_from_outbox_mariadb() {
        scenario(&testkit::mysql_url()).await;
    }

    #[tokio::test]
    async fn restarted_cell_recovers_from_outbox_postgres() {
        scenario(&testkit::postgres_url()).await;
    }

    async fn state_store(url: &str) {
        let outbox = Outbox::connect(url, &table("crdt_ss_out")).await.unwrap();
        let store = SqlStateStore::for_outbox(&outbox, &table("crdt_ss")).unwrap();
        store.migrate().await.unwrap();
        store.migrate().await.unwrap(); // idempotent
        let (sh, fra) = ("sh/1", "fra/1");
        assert_eq!(store.load(sh).await.unwrap(), None);

        // a real snapshot round-trips
        let r = replica("sh");
        let mut g = r.lock().await;
        let c1 = g.counter_add("post", POST, 7).unwrap();
        g.commit(&c1).unwrap();
        let c2 = g.or_add("post", "comments", "hello").unwrap();
        g.commit(&c2).unwrap();
        drop(g);
        let snap = r.snapshot().await.unwrap();
        store.save(sh, &snap).await.unwrap();
        store.save(fra, &[1, 2, 3]).await.unwrap();
        assert_eq!(store.load(sh).await.unwrap().as_deref(), Some(&snap[..]));
        let back = replica("sh");
        back.restore(&store.load(sh).await.unwrap().unwrap()).await.unwrap();
        assert_eq!(back.get(POST).await, r.get(POST).await);
        assert_eq!(back.get("comments").await, r.get("comments").await);

        // the log: appended in order, emptied by the next snapshot, per cell
        assert!(store.load_log(sh).await.unwrap().is_empty());
        store.append(sh, &[vec![1], vec![2, 2]]).await.unwrap();
        store.append(sh, &[]).await.unwrap();
        let many: Vec<Vec<u8>> = (0..450u32).map(|i| i.to_le_bytes().to_vec()).collect();
        store.append(sh, &many).await.unwrap();
        store.append(fra, &[vec![7]]).await.unwrap();
        let log = store.load_log(sh).await.unwrap();
        assert_eq!(log.len(), 452);
        assert_eq!((&log[0], &log[1], &log[451]), (&vec![1], &vec![2, 2], &many[449]));

        // a save replaces the row and empties that cell's log; other cells keep theirs
        store.save(sh, &[9; 300]).await.unwrap();
        assert!(store.load_log(sh).await.unwrap().is_empty());
        assert_eq!(store.load_log(fra).await.unwrap(), vec![vec![7]]);
        assert_eq!(store.load(sh).await.unwrap(), Some(vec![9; 300]));
        assert_eq!(store.load(fra).await.unwrap(), Some(vec![1, 2, 3]));

        // save_on joins the caller's transaction: rolled back, nothing changes
        let mut tx = outbox.pool().begin().await.unwrap();
        store.save_on(&mut tx, fra, &[4]).await.unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(store.load(fra).await.unwrap(), Some(vec![1, 2, 3]));
        assert_eq!(store.load_log(fra).await.unwrap(), vec![vec![7]]);
        let mut tx = outbox.pool().begin().await.unwrap();
        store.save_on(&mut tx, fra, &[5]).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(store.load(fra).await.unwrap(), Some(vec![5]));

        assert!(matches!(SqlStateStore::for_outbox(&outbox, "bad name; drop"), Err(crdt::CrdtError::Config(_))));
        // a table name that would need quoting, and a database the outbox cannot speak
        assert!(matches!(Outbox::connect(url, "1outbox").await, Err(crdt::CrdtError::Config(_))));
        assert!(matches!(Outbox::connect("oracle://db/x", "outbox").await, Err(crdt::CrdtError::Config(_))));
    }

    #[derive(Debug)]
    struct Manual(std::sync::atomic::AtomicU64);
    impl crdt::Clock for Manual {
        fn now_ms(&self) -> u64 {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    async fn rows(outbox: &Outbox) -> i64 {
        let sql = format!("SELECT COUNT(*) AS n FROM {}", outbox.table());
        sqlx::Row::try_get(&sqlx::query(&sql).fetch_one(outbox.pool()).await.unwrap(), "n").unwrap()
    }

    /// Sent rows are pruned by count and by age, never pending ones, and never
    /// rows after the last durable snapshot: recovery still sees every write.
    async fn retention(url: &str) {
        use crdt::outbox::Retention;
        use std::sync::atomic::Ordering::SeqCst;
        let outbox = Outbox::connect(url, &table("crdt_ret")).await.unwrap();
        outbox.migrate().await.unwrap();
        let state = crdt::MemoryStateStore::new();
        let t0 = crdt::SystemClock.now_ms() - 3_600_000;
        let clock = Arc::new(Manual(std::sync::atomic::AtomicU64::new(t0)));
        let a = Arc::new(Replica::with_clock(cell("sh"), 1, Duration::from_secs(5), clock.clone()).unwrap());
        let like_at = |_: ()| {
            let (a, outbox, clock) = (&a, &outbox, clock.clone());
            async move {
                like(a, outbox).await;
                clock.0.fetch_add(1_000, SeqCst);
            }
        };
        let topic = testkit::unique("crdt-ret");
        let kafka = cluster(&topic);
        let keep3 = Retention::try_new(None, Some(3)).unwrap();
        let relay = Relay::new(outbox.clone(), &kafka.bootstrap_servers(), &topic)
            .unwrap()
            .with_retention(keep3, a.clone());
        for _ in 0..8 {
            like_at(()).await;
        }
        assert_eq!(relay.run_once().await.unwrap(), 8);
        for _ in 0..2 {
            like_at(()).await;
        }
        // no durable snapshot yet: every row may still be needed to recover
        assert_eq!(relay.prune().await.unwrap(), 0);
        assert_eq!(outbox.prune(&keep3, a.durable_ts(), crdt::SystemClock.now_ms()).await.unwrap(), 0);
        assert_eq!(rows(&outbox).await, 10);

        a.save_to(&state).await.unwrap();
        let durable = a.durable_ts();
        assert!(durable > Timestamp::ZERO);
        // by count (the relay's pass): the newest 3 sent rows stay, the 2 pending ones too
        assert_eq!(relay.prune().await.unwrap(), 5);
        assert_eq!((rows(&outbox).await, outbox.pending_count().await.unwrap()), (5, 2));
        // by age: of the sent rows stamped t0+5s, +6s, +7s, one is older than 4.5 s at t0+10s
        let young = Retention::try_new(Some(Duration::from_millis(4_500)), None).unwrap();
        assert_eq!(outbox.prune(&young, durable, t0 + 10_000).await.unwrap(), 1);
        assert_eq!(rows(&outbox).await, 4);

        // rows written after the snapshot are kept whatever the bounds
        assert_eq!(relay.run_once().await.unwrap(), 2);
        for _ in 0..2 {
            like_at(()).await;
        }
        assert_eq!(relay.run_once().await.unwrap(), 2);
        let none = Retention::try_new(Some(Duration::ZERO), Some(0)).unwrap();
        assert_eq!(outbox.prune(&none, durable, crdt::SystemClock.now_ms()).await.unwrap(), 4);
        assert_eq!(rows(&outbox).await, 2);
        // a restart from the snapshot plus the kept rows has every like
        let b = Replica::with_clock(cell("sh"), 1, Duration::from_secs(5), clock.clone()).unwrap();
        assert_eq!(b.recover(&state, &outbox).await.unwrap(), 2);
        assert_eq!(count(&b).await, 12);
        assert!(matches!(Retention::try_new(None, None), Err(crdt::CrdtError::Config(_))));
        sqlx::query(&format!("DROP TABLE {}", outbox.table())).execute(outbox.pool()).await.unwrap();
    }

    #[tokio::test]
    async fn outbox_retention_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        retention(&format!("sqlite://{}/ret.db?mode=rwc", dir.path().display())).await;
    }

    #[tokio::test]
    async fn outbox_retention_mariadb() {
        retention(&testkit::mysql_url()).await;
    }

    #[tokio::test]
    async fn outbox_retention_postgres() {
        retention(&testkit::postgres_url()).await;
    }

    #[tokio::test]
    async fn sql_state_store_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        state_store(&format!("sqlite://{}/state.db?mode=rwc", dir.path().display())).await;
    }

    #[tokio::test]
    async fn sql_state_store_postgres() {
        state_store(&testkit::postgres_url()).await;
    }

    #[tokio::test]
    async fn sql_state_store_mariadb() {
        state_store(&testkit::mysql_url()).await;
    }
}

/// The Redis state store keeps a snapshot and a log; a snapshot empties the log.
#[tokio::test]
async fn redis_state_store_keeps_a_snapshot_and_a_log() {
    use crdt::StateStore;
    let prefix = testkit::unique("crdt_rs");
    let store = RedisStateStore::connect(&testkit::redis_url(), &prefix).await.expect("redis");
    let (sh, fra) = ("sh/1", "fra/1");
    assert_eq!(store.load(sh).await.unwrap(), None);
    assert!(store.load_log(sh).await.unwrap().is_empty());
    store.save(sh, &[1, 2, 3]).await.unwrap();
    store.append(sh, &[vec![4], vec![5, 5]]).await.unwrap();
    store.append(sh, &[]).await.unwrap();
    store.append(fra, &[vec![6]]).await.unwrap();
    assert_eq!(store.load(sh).await.unwrap(), Some(vec![1, 2, 3]));
    assert_eq!(store.load_log(sh).await.unwrap(), vec![vec![4], vec![5, 5]]);
    store.save(sh, &[9]).await.unwrap();
    assert_eq!(store.load(sh).await.unwrap(), Some(vec![9]));
    assert!(store.load_log(sh).await.unwrap().is_empty());
    assert_eq!(store.load_log(fra).await.unwrap(), vec![vec![6]]);
    let client = redis::Client::open(testkit::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg(store.key(sh))
        .arg(store.log_key(sh))
        .arg(store.log_key(fra))
        .query_async(&mut conn)
        .await
        .unwrap();
}
