//! Two processes (writers) of one cell keep separate counter totals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crdt::{Change, Delta, Event, Replica, SiteId};

fn event(change: &Change, seq: u64) -> Event {
    Event {
        origin: change.origin.clone(),
        seq,
        ts: change.ts,
        aggregate_id: change.aggregate_id.clone(),
        event_type: change.delta.event_type().to_string(),
        payload: change.payload().unwrap(),
    }
}

async fn like(r: &Replica) -> Change {
    let mut g = r.lock().await;
    let c = g.counter_add("post", "p/likes", 1).unwrap();
    g.commit(&c).unwrap();
    c
}

async fn count(r: &Replica) -> i64 {
    r.get("p/likes").await.and_then(|v| v.as_counter().map(crdt::PnCounter::value)).unwrap_or(0)
}

/// Regression: the site was derived from the cell alone, so two processes of
/// cell `sh` each counting one like both wrote `sh`'s total 1, and the join by
/// maximum kept 1 instead of 2.
#[tokio::test]
async fn two_writers_of_one_cell_each_count() {
    let sh = "sh".parse().unwrap();
    let w1 = Replica::try_new("sh".parse().unwrap(), 1, Duration::from_secs(5)).unwrap();
    let w2 = Replica::try_new("sh".parse().unwrap(), 2, Duration::from_secs(5)).unwrap();
    let fra = Replica::try_new("fra".parse().unwrap(), 1, Duration::from_secs(5)).unwrap();
    assert_ne!(w1.hlc().site(), w2.hlc().site());
    assert_eq!(w1.hlc().site(), SiteId::for_writer(&sh, 1));

    let (a, b) = (like(&w1).await, like(&w2).await);
    for (c, site) in [(&a, SiteId::for_writer(&sh, 1)), (&b, SiteId::for_writer(&sh, 2))] {
        let Delta::Counter(d) = &c.delta else { panic!("counter delta") };
        assert_eq!((d.entries[0].site, d.entries[0].p), (site, 1));
    }
    // both rows share the cell's outbox: distinct sequence numbers
    let (ea, eb) = (event(&a, 1), event(&b, 2));
    for r in [&w1, &w2, &fra] {
        r.apply_event(&ea).await.unwrap();
        r.apply_event(&eb).await.unwrap();
        assert_eq!(count(r).await, 2, "in {:?}", r.hlc().site());
    }
    assert_eq!(w1.get("p/likes").await, fra.get("p/likes").await);
    assert_eq!(w2.get("p/likes").await, fra.get("p/likes").await);
}

/// Each writer keeps its state under its own key: restarting writer 1 never
/// restores writer 2's snapshot (whose totals for writer 1 may be older). A
/// snapshot saved under the cell id alone (older builds) is still the base.
#[tokio::test]
async fn state_is_kept_per_writer_and_a_per_cell_snapshot_still_restores() {
    use crdt::{MemoryStateStore, StateStore};
    let store = MemoryStateStore::new();
    let w1 = Replica::try_new("sh".parse().unwrap(), 1, Duration::from_secs(5)).unwrap();
    let w2 = Replica::try_new("sh".parse().unwrap(), 2, Duration::from_secs(5)).unwrap();
    assert_eq!((w1.state_key(), w2.state_key()), ("sh/1", "sh/2"));
    like(&w1).await;
    like(&w1).await;
    like(&w2).await;
    w1.save_to(&store).await.unwrap();
    w2.save_to(&store).await.unwrap();
    assert!(w1.durable_ts() > crdt::Timestamp::ZERO);

    let again = Replica::try_new("sh".parse().unwrap(), 1, Duration::from_secs(5)).unwrap();
    again.restore_from(&store).await.unwrap();
    assert_eq!(again.get("p/likes").await, w1.get("p/likes").await);
    assert_eq!(count(&again).await, 2);

    let legacy = MemoryStateStore::new();
    legacy.save("sh", &w2.snapshot().await.unwrap()).await.unwrap();
    let upgraded = Replica::try_new("sh".parse().unwrap(), 2, Duration::from_secs(5)).unwrap();
    upgraded.restore_from(&legacy).await.unwrap();
    assert!(upgraded.is_restored());
    assert_eq!(count(&upgraded).await, 1);
}
