//! The renewal loop and its generators against an in-memory backend, on
//! tokio's paused clock: a lost record and failing renewals stop every
//! generator of the lease with a typed error, also one awaiting the next
//! millisecond in `next_id_async`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use super::*;
use crate::DEFAULT_EPOCH_MS;

const T0: u64 = DEFAULT_EPOCH_MS + 86_400_000;
const TTL: Duration = Duration::from_millis(900);

/// Unix ms read from tokio's (paused) timer: the lease's and the generators'
/// clock, through the production `Clock` seam.
#[derive(Debug)]
struct TimerClock(tokio::time::Instant);

impl Clock for TimerClock {
    fn now_ms(&self) -> u64 {
        T0 + u64::try_from(self.0.elapsed().as_millis()).unwrap()
    }
}

const OK: u8 = 0;
const FAIL: u8 = 1;
const NOT_OURS: u8 = 2;

/// What the next renewals answer, and how many were made.
#[derive(Debug, Default)]
struct Fake {
    mode: AtomicU8,
    renewals: AtomicU64,
    released: AtomicU64,
}

struct FakeBackend(Arc<Fake>);

impl Backend for FakeBackend {
    async fn acquire(&mut self, _worker: u32) -> Result<Option<Acquired>, Error> {
        Ok(Some(Acquired { prior_ms: 0, valid_from_ms: T0 }))
    }
    async fn renew(&mut self, _worker: u32, _ceiling_ms: u64) -> Result<bool, Error> {
        self.0.renewals.fetch_add(1, Ordering::SeqCst);
        match self.0.mode.load(Ordering::SeqCst) {
            OK => Ok(true),
            FAIL => Err(Error::CorruptRecord("backend down".into())),
            _ => Ok(false),
        }
    }
    async fn release(&mut self, _worker: u32, _record_ms: u64) -> Result<(), Error> {
        self.0.released.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn give_up(&mut self) {}
}

async fn lease(fake: &Arc<Fake>) -> WorkerLease {
    let opts = LeaseOptions::try_new("fake", Layout::seed(), 1)
        .unwrap()
        .with_ttl(TTL)
        .with_clock(Arc::new(TimerClock(tokio::time::Instant::now())));
    WorkerLease::acquire_with(FakeBackend(Arc::clone(fake)), opts).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn renewals_keep_issuing_past_the_ttl() {
    let fake = Arc::new(Fake::default());
    let l = lease(&fake).await;
    let g = l.generator().unwrap();
    tokio::time::sleep(TTL * 3).await;
    assert!(fake.renewals.load(Ordering::SeqCst) >= 8);
    assert!(g.next_id_async().await.is_ok() && g.next_id().is_ok() && g.try_next_id().is_ok());
    l.release().await.unwrap();
    assert_eq!(fake.released.load(Ordering::SeqCst), 1);
    assert!(matches!(g.next_id_async().await, Err(Error::LeaseExpired)));
}

#[tokio::test(start_paused = true)]
async fn a_lost_record_stops_every_generator_at_the_next_renewal() {
    let fake = Arc::new(Fake::default());
    let l = lease(&fake).await;
    let (g, h) = (l.generator().unwrap(), l.generator().unwrap());
    let before = g.next_id_async().await.unwrap();
    fake.mode.store(NOT_OURS, Ordering::SeqCst);
    // One renewal period later the loss is known, long before the deadline.
    tokio::time::sleep(TTL / 3 + Duration::from_millis(1)).await;
    assert!(l.is_lost() && !l.is_valid());
    for result in [g.next_id_async().await, g.next_id(), g.try_next_id(), h.next_id_async().await] {
        assert!(matches!(result, Err(Error::LeaseLost)), "{result:?}");
    }
    // Renewals stopped for good; a backend answering again revives nothing.
    let renewals = fake.renewals.load(Ordering::SeqCst);
    fake.mode.store(OK, Ordering::SeqCst);
    tokio::time::sleep(TTL * 2).await;
    assert_eq!(fake.renewals.load(Ordering::SeqCst), renewals);
    assert!(matches!(g.next_id_async().await, Err(Error::LeaseLost)));
    // Dropping a lost lease does not release someone else's record.
    drop(l);
    tokio::task::yield_now().await;
    assert_eq!(fake.released.load(Ordering::SeqCst), 0);
    let _ = before;
}

#[tokio::test(start_paused = true)]
async fn failing_renewals_expire_the_generators_after_one_ttl() {
    let fake = Arc::new(Fake::default());
    let l = lease(&fake).await;
    let g = l.generator().unwrap();
    let deadline = l.valid_until_ms();
    fake.mode.store(FAIL, Ordering::SeqCst);
    // Before the deadline the generator still issues (the record is ours
    // until the backend's TTL runs out).
    tokio::time::sleep(TTL - Duration::from_millis(10)).await;
    assert!(g.next_id_async().await.is_ok());
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(g.clock().now_ms() >= deadline);
    for result in [g.next_id_async().await, g.next_id(), g.try_next_id()] {
        assert!(matches!(result, Err(Error::LeaseExpired)), "{result:?}");
    }
    assert!(!l.is_valid() && !l.is_lost());
    l.abandon();
}

#[tokio::test(start_paused = true)]
async fn a_generator_waiting_for_the_next_millisecond_sees_the_loss() {
    let fake = Arc::new(Fake::default());
    let l = lease(&fake).await;
    let g = l.generator().unwrap();
    // Let the lease run to just before its first renewal, then use up the
    // current millisecond: the next id has to wait, across the renewal.
    tokio::time::sleep(TTL / 3 - Duration::from_millis(1)).await;
    fake.mode.store(NOT_OURS, Ordering::SeqCst);
    let mut issued = 0u32;
    let err = loop {
        match g.next_id_async().await {
            Ok(_) => issued += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::LeaseLost), "{err}");
    // At most the two milliseconds before the renewal were issued, never one
    // after the loss was known.
    assert!(issued <= 2 * 1024, "{issued} ids issued");
    assert!(g.last_timestamp_ms() < T0 + u64::try_from((TTL / 3).as_millis()).unwrap() + 1);
}
