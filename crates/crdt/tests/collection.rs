//! Tombstone collection at the replica: objects created after a collection
//! start at its floor, and a parked event holds the watermark below it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crdt::{Delta, Event, Replica, SiteId};

async fn count(r: &Replica) -> i64 {
    r.get("p/likes").await.and_then(|v| v.as_counter().map(crdt::PnCounter::value)).unwrap_or(0)
}

/// After a collection, an object created later starts at the collected floor:
/// a late add stamped at or below it (collected elsewhere) does not appear.
#[tokio::test]
async fn a_new_object_starts_at_the_collected_floor() {
    use crdt::{OrSet, Stamp, Timestamp};
    let r = Replica::try_new("fra".parse().unwrap(), 1, Duration::from_secs(5)).unwrap();
    let now = crdt::Clock::now_ms(&crdt::SystemClock);
    r.lock().await.gc(Timestamp::new(now - 10_000, 0));
    let mut s = OrSet::new();
    let old = s.add("ghost".to_string(), Stamp::new(Timestamp::new(now - 20_000, 0), SiteId(9)));
    let new = s.add("alive".to_string(), Stamp::new(Timestamp::new(now - 5_000, 0), SiteId(9)));
    for (seq, d) in [(1, old), (2, new)] {
        let payload = crdt::codec::encode(&Delta::OrSet(d)).unwrap();
        let ev = Event {
            origin: "sv".parse().unwrap(),
            seq,
            ts: Timestamp::new(now - 5_000, seq as u16),
            aggregate_id: "p/comments".into(),
            event_type: crdt::TYPE_OR_SET.into(),
            payload,
        };
        r.apply_event(&ev).await.unwrap();
    }
    assert_eq!(r.get("p/comments").await.and_then(|v| v.members()), Some(vec!["alive".to_string()]));
}

#[derive(Debug)]
struct Manual(std::sync::atomic::AtomicU64);
impl crdt::Clock for Manual {
    fn now_ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A parked event holds this cell's watermark below it, so tombstones are
/// never collected past a write that is not applied yet.
#[tokio::test]
async fn a_parked_event_holds_the_watermark_below_it() {
    use crdt::{PnCounter, Timestamp};
    use std::sync::atomic::Ordering::SeqCst;
    let t0 = 1_800_000_000_000;
    let clock = std::sync::Arc::new(Manual(std::sync::atomic::AtomicU64::new(t0)));
    let cells: [cellctx::CellId; 2] = ["fra", "sv"].map(|c| c.parse().unwrap());
    let r = Replica::with_clock(cells[0].clone(), 1, Duration::from_secs(5), clock.clone())
        .unwrap()
        .with_cells(cells.clone());
    let ahead = Timestamp::new(t0 + 3_600_000, 0);
    let ev = Event {
        origin: cells[1].clone(),
        seq: 1,
        ts: ahead,
        aggregate_id: "p/likes".into(),
        event_type: crdt::TYPE_PN_COUNTER.into(),
        payload: crdt::codec::encode(&Delta::Counter(PnCounter::new().add_delta(SiteId(9), 1))).unwrap(),
    };
    assert_eq!(r.apply_event(&ev).await.unwrap(), crdt::Applied::Parked);
    // an hour later, heartbeats past the parked event arrive before it is retried
    clock.0.store(t0 + 3_600_000, SeqCst);
    let hb = Timestamp::new(t0 + 3_601_000, 0);
    for c in &cells {
        r.on_heartbeat(c, 0, 1, hb, None).await.unwrap();
    }
    assert!(r.local_watermark().is_some_and(|w| w < ahead), "{:?}", r.local_watermark());
    assert_eq!(r.retry_parked().await, 1);
    r.on_heartbeat(&cells[1], 0, 1, hb, None).await.unwrap();
    assert_eq!(r.local_watermark(), Some(hb));
    assert_eq!(count(&r).await, 1);
}
