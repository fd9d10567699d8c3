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
use crdt::{Clock, Delta, MemoryStateStore, PnCounter, Replica, SiteId, Timestamp, codec};
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

    async fn replicator(&self, replica: Arc<Replica>, group: &str, state: MemoryStateStore) -> Replicator<MemoryStateStore> {
        Replicator::start(replica, &self.bootstrap, &self.topic, group, state).await.unwrap()
    }
}

fn replica(clock: Arc<Manual>) -> Arc<Replica> {
    Arc::new(Replica::with_clock("fra".parse().unwrap(), 1, Duration::from_secs(5), clock).unwrap())
}

/// Steps until `n` messages were processed.
async fn consume(r: &Replicator<MemoryStateStore>, n: usize) {
    let mut seen = 0;
    for _ in 0..200 {
        if r.step(Duration::from_millis(200)).await.unwrap() {
            seen += 1;
            if seen == n {
                return;
            }
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
    assert!(!rep.step(Duration::from_millis(500)).await.unwrap());
    drop(rep);

    // restart from the saved state: the offsets moved past all four, the
    // parked event is still there
    let r2 = replica(clock.clone());
    let rep = k.replicator(r2.clone(), &group, state.clone()).await;
    assert!(!rep.step(Duration::from_secs(3)).await.unwrap(), "offsets were committed");
    assert_eq!(count(&r2, "p/likes").await, 2);
    assert_eq!(r2.parked().await.len(), 1);
    assert_eq!(r2.dead_letters().await.len(), 2);

    // the local clock catches up to within the drift bound: applied, once
    clock.0.store(T0 + 3_600_000 - 4_000, Ordering::SeqCst);
    assert!(!rep.step(Duration::from_millis(200)).await.unwrap());
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
