//! The replicator over an in-process `rdkafka` MockCluster with an in-memory
//! state store: nothing it consumes is lost (events from a clock far ahead
//! are parked and applied later, undecodable messages are kept as dead
//! letters), and what it persists per change does not grow with the state.
#![cfg(feature = "kafka")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crdt::kafka::Replicator;
use crdt::kafka::headers as hdr;
use crdt::{Clock, CrdtError, Delta, MemoryStateStore, PnCounter, Replica, SiteId, StateStore, Timestamp, codec};
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};

type Cluster = MockCluster<'static, DefaultProducerContext>;

const T0: u64 = 1_800_000_000_000;

#[derive(Debug)]
struct Manual(AtomicU64);
impl Clock for Manual {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct Kafka {
    _cluster: Cluster,
    bootstrap: String,
    topic: String,
    producer: FutureProducer,
}

fn kafka() -> Kafka {
    let topic = testkit::unique("crdt-rep");
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic(&topic, 1, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let producer = ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
    Kafka { _cluster: cluster, bootstrap, topic, producer }
}

impl Kafka {
    /// Sends one delta message; `ts: None` leaves out the HLC header.
    async fn send(&self, key: &str, seq: u64, ts: Option<Timestamp>, event_type: &str, payload: &[u8]) {
        let seq = seq.to_string();
        let mut h = OwnedHeaders::new()
            .insert(Header { key: hdr::ORIGIN, value: Some("sv") })
            .insert(Header { key: hdr::SEQ, value: Some(seq.as_str()) })
            .insert(Header { key: hdr::TYPE, value: Some(event_type) });
        if let Some(ts) = ts {
            let v = ts.0.to_string();
            h = h.insert(Header { key: hdr::HLC, value: Some(v.as_str()) });
        }
        let rec = FutureRecord::to(&self.topic).key(key).payload(payload).headers(h);
        self.producer.send(rec, Duration::from_secs(30)).await.unwrap();
    }

    async fn replicator<S: StateStore>(&self, replica: Arc<Replica>, group: &str, state: S) -> Replicator<S> {
        Replicator::start(replica, &self.bootstrap, &self.topic, group, state).await.unwrap()
    }
}

fn replica(clock: Arc<Manual>) -> Arc<Replica> {
    Arc::new(Replica::with_clock("fra".parse().unwrap(), 1, Duration::from_secs(5), clock).unwrap())
}

/// Steps until `n` messages were processed.
async fn consume<S: StateStore>(r: &Replicator<S>, n: usize) {
    let mut seen = 0;
    for _ in 0..200 {
        seen += r.step(Duration::from_millis(200)).await.unwrap();
        if seen >= n {
            assert_eq!(seen, n);
            return;
        }
    }
    panic!("only {seen} of {n} messages consumed");
}

async fn count(r: &Replica, id: &str) -> i64 {
    r.get(id).await.and_then(|v| v.as_counter().map(PnCounter::value)).unwrap_or(0)
}

fn plus(site: u64, by: i64) -> Vec<u8> {
    codec::encode(&Delta::Counter(PnCounter::new().add_delta(SiteId(site), by))).unwrap()
}

/// Regression: an event stamped an hour ahead of the local clock used to be
/// rejected and its offset committed, so the write was lost at this cell for
/// good. It is now parked in the persisted state, survives a restart, and is
/// applied once the local clock is within the drift bound. Undecodable
/// messages are skipped but kept as dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_from_a_clock_far_ahead_is_parked_and_applied_later_never_lost() {
    let k = kafka();
    let group = testkit::unique("fra");
    let state = MemoryStateStore::new();
    let clock = Arc::new(Manual(AtomicU64::new(T0)));
    let ahead = Timestamp::new(T0 + 3_600_000, 0);
    let good = plus(7, 5);
    k.send("p/likes", 1, Some(ahead), crdt::TYPE_PN_COUNTER, &good).await;
    k.send("p/likes", 2, Some(Timestamp::new(T0, 0)), crdt::TYPE_PN_COUNTER, &good[..good.len() - 1]).await;
    k.send("p/likes", 3, None, crdt::TYPE_PN_COUNTER, &good).await;
    k.send("p/likes", 4, Some(Timestamp::new(T0, 1)), crdt::TYPE_PN_COUNTER, &plus(8, 2)).await;

    let r1 = replica(clock.clone());
    let rep = k.replicator(r1.clone(), &group, state.clone()).await;
    consume(&rep, 4).await;
    assert_eq!(count(&r1, "p/likes").await, 2);
    let parked = r1.parked().await;
    assert_eq!(parked.len(), 1);
    assert_eq!((parked[0].event.seq, parked[0].event.ts), (1, ahead));
    assert_eq!(r1.metrics().stats().parked, 1);
    // the clock was not dragged an hour ahead
    assert!(r1.hlc().last() < ahead);
    // the corrupt payload and the message without an HLC header are kept verbatim
    let dead = r1.dead_letters().await;
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].payload, good[..good.len() - 1].to_vec());
    assert_eq!(dead[0].reason, "corrupt");
    assert_eq!(dead[1].payload, good);
    assert!(dead[1].headers.iter().any(|(k, v)| k == hdr::SEQ && v.as_deref() == Some(b"3".as_slice())));
    assert_eq!(r1.metrics().stats().rejected, 2);
    // let the offset commits go out, then a crash
    assert_eq!(rep.step(Duration::from_millis(500)).await.unwrap(), 0);
    drop(rep);

    // restart from the saved state: the offsets moved past all four, the
    // parked event is still there
    let r2 = replica(clock.clone());
    let rep = k.replicator(r2.clone(), &group, state.clone()).await;
    assert_eq!(rep.step(Duration::from_secs(3)).await.unwrap(), 0, "offsets were committed");
    assert_eq!(count(&r2, "p/likes").await, 2);
    assert_eq!(r2.parked().await.len(), 1);
    assert_eq!(r2.dead_letters().await.len(), 2);

    // the local clock catches up to within the drift bound: applied, once
    clock.0.store(T0 + 3_600_000 - 4_000, Ordering::SeqCst);
    assert_eq!(rep.step(Duration::from_millis(200)).await.unwrap(), 0);
    assert_eq!(count(&r2, "p/likes").await, 7);
    assert!(r2.parked().await.is_empty());
    assert!(r2.hlc().last() > ahead);
    // a redelivered copy is a duplicate
    k.send("p/likes", 1, Some(ahead), crdt::TYPE_PN_COUNTER, &good).await;
    consume(&rep, 1).await;
    assert_eq!(count(&r2, "p/likes").await, 7);
    drop(rep);

    // and it was persisted
    let r3 = replica(clock.clone());
    let _rep = k.replicator(r3.clone(), &group, state.clone()).await;
    assert_eq!(count(&r3, "p/likes").await, 7);
    assert!(r3.parked().await.is_empty());
}

/// A [`StateStore`] that counts what is written to it.
#[derive(Debug, Clone, Default)]
struct Counting {
    inner: MemoryStateStore,
    appended_bytes: Arc<AtomicU64>,
    appended_records: Arc<AtomicU64>,
    appends: Arc<AtomicU64>,
    saves: Arc<AtomicU64>,
}

impl StateStore for Counting {
    async fn load(&self, key: &str) -> Result<Option<Vec<u8>>, CrdtError> {
        self.inner.load(key).await
    }
    async fn save(&self, key: &str, state: &[u8]) -> Result<(), CrdtError> {
        self.saves.fetch_add(1, Ordering::SeqCst);
        self.inner.save(key, state).await
    }
    async fn append(&self, key: &str, records: &[Vec<u8>]) -> Result<(), CrdtError> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        self.appended_records.fetch_add(records.len() as u64, Ordering::SeqCst);
        self.appended_bytes.fetch_add(records.iter().map(|r| r.len() as u64).sum(), Ordering::SeqCst);
        self.inner.append(key, records).await
    }
    async fn load_log(&self, key: &str) -> Result<Vec<Vec<u8>>, CrdtError> {
        self.inner.load_log(key).await
    }
}

/// A replica holding an OR-set of `n` comments, written locally.
async fn big_replica(n: usize, clock: Arc<Manual>) -> Arc<Replica> {
    let r = replica(clock);
    {
        let mut g = r.lock().await;
        for i in 0..n {
            let c = g.or_add("post", "p/comments", &format!("comment-{i:06}")).unwrap();
            g.commit(&c).unwrap();
        }
    }
    r
}

/// Regression: the replicator saved the whole snapshot after every applied
/// message, O(state) per change. Now each batch appends only its changes:
/// the same 20 changes write the same bytes into a state of 10k or 100k
/// elements, and no snapshot is written after the one the replicator starts
/// from (its state was in none) until `snapshot_every` records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_written_per_change_do_not_grow_with_the_state() {
    let mut per_change = Vec::new();
    for n in [10_000, 100_000] {
        let k = kafka();
        for seq in 1..=20u64 {
            k.send("p/likes", seq, Some(Timestamp::new(T0, seq as u16)), crdt::TYPE_PN_COUNTER, &plus(7, seq as i64)).await;
        }
        let clock = Arc::new(Manual(AtomicU64::new(T0)));
        let r = big_replica(n, clock).await;
        let snapshot_bytes = r.snapshot().await.unwrap().len();
        assert!(snapshot_bytes > n * 10, "{snapshot_bytes}");
        let store = Counting::default();
        let rep = k.replicator(r.clone(), &testkit::unique("fra"), store.clone()).await.with_batch(4);
        assert_eq!(store.saves.load(Ordering::SeqCst), 1, "the state written before the start is snapshotted");
        consume(&rep, 20).await;
        assert_eq!(count(&r, "p/likes").await, 20);
        assert_eq!(store.saves.load(Ordering::SeqCst), 1, "no snapshot before snapshot_every records");
        // batches: at most 4 messages per append, each with the offsets it read
        let appends = store.appends.load(Ordering::SeqCst);
        assert!(appends >= 5);
        assert_eq!(store.appended_records.load(Ordering::SeqCst), 20 + appends, "one record per change, one for the offsets per batch");
        let bytes = store.appended_bytes.load(Ordering::SeqCst);
        per_change.push(bytes / 20);
        assert!(bytes / 20 < 200, "{} bytes per change for a {snapshot_bytes}-byte state", bytes / 20);
    }
    // equal but for the one offsets record per batch, whose count and varint sizes follow the batching
    assert!(per_change[1] <= per_change[0] + 8 && per_change[0] <= per_change[1] + 8, "bytes per change grew with the state: {per_change:?}");
}

/// Restarting from the persisted snapshot plus log gives the same replica:
/// objects, parked events, dead letters and the collected floor; a
/// compacting snapshot is written every `snapshot_every` records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_snapshot_and_log_gives_the_same_replica() {
    let k = kafka();
    let clock = Arc::new(Manual(AtomicU64::new(T0)));
    let mut seq = 0;
    let mut next = || {
        seq += 1;
        seq
    };
    // deltas made by another cell's replica
    let sv = Replica::with_clock("sv".parse().unwrap(), 1, Duration::from_secs(5), clock.clone()).unwrap();
    let mut changes = Vec::new();
    {
        let mut g = sv.lock().await;
        for i in 0..12 {
            let c = g.or_add("post", "p/comments", &format!("c{i}")).unwrap();
            g.commit(&c).unwrap();
            changes.push(c);
            if i % 3 == 0 {
                let c = g.or_remove("post", "p/comments", &format!("c{i}")).unwrap();
                g.commit(&c).unwrap();
                changes.push(c);
            }
            let c = g.counter_add("post", "p/likes", 1).unwrap();
            g.commit(&c).unwrap();
            changes.push(c);
        }
    }
    for c in &changes {
        k.send(&c.aggregate_id, next(), Some(c.ts), c.delta.event_type(), &c.payload().unwrap()).await;
    }
    k.send("p/likes", next(), Some(Timestamp::new(T0 + 3_600_000, 0)), crdt::TYPE_PN_COUNTER, &plus(9, 1)).await;
    k.send("p/likes", next(), Some(Timestamp::new(T0, 0)), crdt::TYPE_PN_COUNTER, &[1, 2]).await;
    let total = changes.len() + 2;

    let store = Counting::default();
    let r1 = replica(clock.clone());
    let rep = k.replicator(r1.clone(), &testkit::unique("fra"), store.clone()).await.with_batch(3).with_snapshot_every(7);
    consume(&rep, total).await;
    {
        let mut g = r1.lock().await;
        g.gc(Timestamp::new(T0, 2));
    }
    // the explicit collection is persisted by the next step
    assert_eq!(rep.step(Duration::from_millis(100)).await.unwrap(), 0);
    assert!(store.saves.load(Ordering::SeqCst) >= 2, "compacting snapshots");

    let r2 = replica(clock.clone());
    let replayed = r2.restore_from(&store).await.unwrap();
    assert_eq!(replayed, store.load_log(r1.state_key()).await.unwrap().len());
    let (a, b) = (r1.lock().await, r2.lock().await);
    assert_eq!(a.store().objects(), b.store().objects());
    assert_eq!(a.store().parked().collect::<Vec<_>>(), b.store().parked().collect::<Vec<_>>());
    assert_eq!(a.store().dead_letters(), b.store().dead_letters());
    assert_eq!(a.store().floor(), b.store().floor());
    assert_eq!(b.store().parked().count(), 1);
    assert_eq!(b.store().dead_letters().len(), 1);
    assert_eq!(b.store().floor(), Timestamp::new(T0, 2));
    drop((a, b));
    assert_eq!(r2.get("p/comments").await.and_then(|v| v.members()), sv.get("p/comments").await.and_then(|v| v.members()));
    assert_eq!(count(&r2, "p/likes").await, 12);
}

/// A replicator starts from a snapshot of what the replica held (here local
/// writes made before it started); local writes made afterwards are appended
/// to the log like remote changes, and each append moves the durable point
/// outbox retention prunes up to, with no further snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_writes_are_logged_and_move_the_durable_point() {
    let k = kafka();
    let clock = Arc::new(Manual(AtomicU64::new(T0)));
    let r = big_replica(3, clock.clone()).await;
    let store = Counting::default();
    assert_eq!(r.durable_ts(), Timestamp::ZERO);
    let rep = k.replicator(r.clone(), &testkit::unique("fra"), store.clone()).await;
    assert_eq!(store.saves.load(Ordering::SeqCst), 1);
    assert_eq!(r.durable_ts(), r.hlc().last());
    let before = r.durable_ts();
    {
        let mut g = r.lock().await;
        let c = g.or_add("post", "p/comments", "late").unwrap();
        g.commit(&c).unwrap();
    }
    assert_eq!(rep.step(Duration::from_millis(50)).await.unwrap(), 0);
    assert_eq!(store.saves.load(Ordering::SeqCst), 1, "no snapshot for one change");
    assert_eq!(store.appended_records.load(Ordering::SeqCst), 1);
    assert!(r.durable_ts() > before);
    assert_eq!(r.durable_ts(), r.hlc().last());
    // nothing changed since: nothing written
    assert_eq!(rep.step(Duration::from_millis(50)).await.unwrap(), 0);
    assert_eq!(store.appends.load(Ordering::SeqCst), 1);
    let back = replica(Arc::new(Manual(AtomicU64::new(T0))));
    back.restore_from(&store).await.unwrap();
    assert_eq!(back.get("p/comments").await, r.get("p/comments").await);
    assert!(back.get("p/comments").await.and_then(|v| v.members()).unwrap().contains(&"late".to_string()));
}

/// A replica a replicator journals for equals one restored from what it saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journaling_replica_equals_its_restored_copy() {
    let k = kafka();
    let clock = Arc::new(Manual(AtomicU64::new(T0)));
    let r = big_replica(5, clock.clone()).await;
    let store = Counting::default();
    let _rep = k.replicator(r.clone(), &testkit::unique("fra"), store.clone()).await;
    r.save_to(&store).await.unwrap();
    let back = replica(clock);
    back.restore_from(&store).await.unwrap();
    assert_eq!(*r.lock().await.store(), *back.lock().await.store());
}

/// A state store that persists an append and then never returns while
/// `dies` is set: the process dies right after persisting a batch, before
/// its offsets are committed.
#[derive(Debug, Clone, Default)]
struct DiesAfterAppend {
    inner: MemoryStateStore,
    dies: Arc<std::sync::atomic::AtomicBool>,
}

impl StateStore for DiesAfterAppend {
    async fn load(&self, key: &str) -> Result<Option<Vec<u8>>, CrdtError> {
        self.inner.load(key).await
    }
    async fn save(&self, key: &str, state: &[u8]) -> Result<(), CrdtError> {
        self.inner.save(key, state).await
    }
    async fn append(&self, key: &str, records: &[Vec<u8>]) -> Result<(), CrdtError> {
        self.inner.append(key, records).await?;
        if self.dies.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
    async fn load_log(&self, key: &str) -> Result<Vec<Vec<u8>>, CrdtError> {
        self.inner.load_log(key).await
    }
}

/// Batching loses nothing and doubles nothing: a replicator that dies after
/// persisting a batch of applied changes (with the offsets it read) but
/// before committing the offsets to the group restarts from what it
/// persisted, reads on from the persisted offsets (the batch is not read
/// again) and applies the rest, each change exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_persisting_a_batch_and_committing_it_loses_and_doubles_nothing() {
    let k = kafka();
    for seq in 1..=30u64 {
        k.send(&format!("p{seq}/likes"), seq, Some(Timestamp::new(T0, seq as u16)), crdt::TYPE_PN_COUNTER, &plus(7, 1)).await;
    }
    let clock = Arc::new(Manual(AtomicU64::new(T0)));
    let group = testkit::unique("fra");
    let store = DiesAfterAppend::default();

    let r1 = replica(clock.clone());
    let rep = k.replicator(r1.clone(), &group, store.clone()).await.with_batch(10);
    store.dies.store(true, Ordering::SeqCst);
    // the first batch is applied and persisted, then the process dies
    let crashed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            rep.step(Duration::from_millis(200)).await.unwrap();
        }
    })
    .await;
    assert!(crashed.is_err(), "the step hangs in the append");
    let n = r1.metrics().stats().applied;
    assert!((1..=10).contains(&n), "one batch applied before the crash: {n}");
    drop(rep);
    store.dies.store(false, Ordering::SeqCst);

    // restart: the persisted batch is restored, the reads go on after it
    let r2 = replica(clock.clone());
    let rep = k.replicator(r2.clone(), &group, store.clone()).await.with_batch(10);
    for seq in 1..=30 {
        let restored = u64::from(seq <= n);
        assert_eq!(count(&r2, &format!("p{seq}/likes")).await as u64, restored, "restored from the persisted batch");
    }
    consume(&rep, 30 - n as usize).await;
    let stats = r2.metrics().stats();
    assert_eq!((stats.applied, stats.duplicates), (30 - n, 0), "the persisted batch is not read again, the rest applied once");
    for seq in 1..=30 {
        assert_eq!(count(&r2, &format!("p{seq}/likes")).await, 1, "change {seq}");
    }
    // this time the offsets were committed: a third start gets nothing again
    assert_eq!(rep.step(Duration::from_millis(500)).await.unwrap(), 0);
    drop(rep);
    let r3 = replica(clock);
    let rep = k.replicator(r3.clone(), &group, store.clone()).await;
    assert_eq!(rep.step(Duration::from_secs(3)).await.unwrap(), 0, "offsets were committed");
    assert_eq!(count(&r3, "p30/likes").await, 1);
}

/// The broker away for 9 s (longer than a consumer group's session; the
/// replicator is in none: it assigns itself the partitions) while events keep
/// coming: every event, sent before, during (queued by the producer) and
/// after the outage, is applied, and soon (the demo's fault campaign,
/// `demo chaos --seed 202 --duration 20 --rps 60 --kinds stale_restart,kafka_down`,
/// is the case where requests left on the dead connection hung for
/// librdkafka's default socket timeout, 60 s: now 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_around_a_broker_outage_past_the_session_is_applied() {
    let topic = testkit::unique("crdt-away");
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic(&topic, 3, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    // the test's producer gives up dead connections as fast as the replicator, so its deliveries do not hide the wait
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", &bootstrap).set("socket.timeout.ms", "10000").create().unwrap();
    let k = Kafka { _cluster: cluster, bootstrap, topic, producer };
    let clock = Arc::new(Manual(AtomicU64::new(T0)));
    let r = replica(clock.clone());
    let rep = k.replicator(r.clone(), &testkit::unique("away"), MemoryStateStore::new()).await;
    let handle = rep.spawn();

    // events all along, through the outage (queued by the producer while the
    // broker is away): 60 likes over 3 keys; the broker is away for 9 s,
    // longer than the replicator's 6 s session
    let mut deliveries = Vec::new();
    for i in 0..60u64 {
        if i == 12 {
            k._cluster.broker_down(1).unwrap();
        }
        if i == 48 {
            k._cluster.broker_up(1).unwrap();
        }
        let (seq, hlc) = ((i + 1).to_string(), Timestamp::new(T0, i as u16).0.to_string());
        let h = OwnedHeaders::new()
            .insert(Header { key: hdr::ORIGIN, value: Some("sv") })
            .insert(Header { key: hdr::SEQ, value: Some(seq.as_str()) })
            .insert(Header { key: hdr::TYPE, value: Some(crdt::TYPE_PN_COUNTER) })
            .insert(Header { key: hdr::HLC, value: Some(hlc.as_str()) });
        // a PN delta carries the site's running total: the (i/3+1)-th like of its key
        let (key, payload) = (format!("p{}/likes", i % 3), plus(7, (i / 3 + 1) as i64));
        let rec = FutureRecord::to(&k.topic).key(&key).payload(&payload).headers(h);
        deliveries.push(k.producer.send_result(rec).map_err(|(e, _)| e).unwrap());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for d in deliveries {
        d.await.unwrap().unwrap();
    }

    let total = || async { count(&r, "p0/likes").await + count(&r, "p1/likes").await + count(&r, "p2/likes").await };
    // well within the 60 s a request on the dead connection used to hang
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while total().await != 60 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (got, stats) = (total().await, r.metrics().stats());
    handle.shutdown().await;
    assert_eq!(got, 60, "events sent around the outage were not all applied ({stats:?})");
}

/// A deep copy of `key`'s snapshot and log (a backup of the state store).
async fn backup(from: &MemoryStateStore, key: &str) -> MemoryStateStore {
    let to = MemoryStateStore::new();
    if let Some(s) = from.load(key).await.unwrap() {
        to.save(key, &s).await.unwrap();
    }
    to.append(key, &from.load_log(key).await.unwrap()).await.unwrap();
    to
}

/// Regression (found by the fault campaign's `stale_restart`): a replica
/// restored from an older snapshot than the one it had used to resume at
/// the consumer group's committed offsets, past every event applied after
/// that snapshot, and missed them for good. The offsets read now live in the
/// state with what they produced: the stale replica reads them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restored_from_an_older_snapshot_reads_again_what_came_after_it() {
    let k = kafka();
    let clock = Arc::new(Manual(AtomicU64::new(T0)));
    let group = testkit::unique("fra");
    let state = MemoryStateStore::new();
    let send = |from: u64, to: u64| {
        let k = &k;
        async move {
            for seq in from..=to {
                k.send(&format!("p{seq}/likes"), seq, Some(Timestamp::new(T0, seq as u16)), crdt::TYPE_PN_COUNTER, &plus(7, 1)).await;
            }
        }
    };
    send(1, 5).await;
    let r1 = replica(clock.clone());
    let rep = k.replicator(r1.clone(), &group, state.clone()).await;
    consume(&rep, 5).await;
    let old = backup(&state, r1.state_key()).await;
    send(6, 10).await;
    consume(&rep, 5).await;
    // the group's offsets are committed past all ten
    assert_eq!(rep.step(Duration::from_millis(500)).await.unwrap(), 0);
    drop(rep);

    // restored from the backup taken after five
    let r2 = replica(clock);
    let rep = k.replicator(r2.clone(), &group, old.clone()).await;
    assert_eq!(count(&r2, "p5/likes").await, 1);
    assert_eq!(count(&r2, "p6/likes").await, 0, "the backup predates the sixth");
    consume(&rep, 5).await;
    for seq in 1..=10 {
        assert_eq!(count(&r2, &format!("p{seq}/likes")).await, 1, "change {seq}");
    }
    assert_eq!(r2.metrics().stats().duplicates, 0, "nothing before the backup read twice");
}

/// Regression (found by the fault campaign: a cell process restarted while
/// the broker was down exited, since looking up the topic's partitions
/// failed): a replicator starts with the brokers away, and reads once they
/// are back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicator_started_with_the_broker_down_reads_once_it_is_back() {
    let k = kafka();
    let clock = Arc::new(Manual(AtomicU64::new(T0)));
    k._cluster.broker_down(1).unwrap();
    let r = replica(clock);
    let rep = Replicator::start(r.clone(), &k.bootstrap, &k.topic, &testkit::unique("fra"), MemoryStateStore::new())
        .await
        .expect("a replicator starts without a broker");
    let handle = rep.spawn();
    tokio::time::sleep(Duration::from_secs(1)).await;
    k._cluster.broker_up(1).unwrap();
    k.send("p/likes", 1, Some(Timestamp::new(T0, 1)), crdt::TYPE_PN_COUNTER, &plus(7, 1)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while count(&r, "p/likes").await != 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = count(&r, "p/likes").await;
    handle.shutdown().await;
    assert_eq!(got, 1, "the event sent once the broker was back was applied");
}
