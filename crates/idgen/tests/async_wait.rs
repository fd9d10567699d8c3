//! `next_id_async` on a paused tokio clock: a burst past the per-millisecond
//! ceiling, clock steps back within and beyond the bound, and a frozen clock,
//! all on a `current_thread` runtime where blocking would stall every task.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(feature = "async")]

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idgen::{Clock, DEFAULT_EPOCH_MS, Error, Generator, Layout, ManualClock};
use tokio::time::Instant;

const T0: u64 = DEFAULT_EPOCH_MS + 86_400_000;

/// A clock driven by tokio's (paused) timer, plus a settable step: the same
/// `Clock` seam a `SystemClock` sits behind, with faults injected through it.
#[derive(Debug)]
struct TimerClock {
    start: Instant,
    step_ms: AtomicI64,
}

impl TimerClock {
    fn new() -> Arc<Self> {
        Arc::new(TimerClock { start: Instant::now(), step_ms: AtomicI64::new(0) })
    }
    fn step_back(&self, ms: i64) {
        self.step_ms.fetch_sub(ms, Ordering::SeqCst);
    }
}

impl Clock for TimerClock {
    fn now_ms(&self) -> u64 {
        let elapsed = i64::try_from(self.start.elapsed().as_millis()).unwrap();
        (T0 as i64 + elapsed + self.step_ms.load(Ordering::SeqCst)) as u64
    }
}

fn generator(clock: Arc<dyn Clock>) -> Generator {
    Generator::builder(Layout::seed(), 1, 2).with_clock(clock).build().unwrap()
}

/// Spawns a task that wakes on the timer `ticks` times and records how many
/// ids the burst had issued at each wake-up.
fn observer(issued: Arc<AtomicUsize>, ticks: usize) -> tokio::task::JoinHandle<Vec<usize>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..ticks {
            tokio::time::sleep(Duration::from_millis(1)).await;
            seen.push(issued.load(Ordering::SeqCst));
        }
        seen
    })
}

fn assert_strictly_increasing(ids: &[u64]) {
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids not strictly increasing");
}

#[tokio::test(start_paused = true)]
async fn burst_over_the_ceiling_awaits_the_next_millisecond_without_blocking_other_tasks() {
    const TOTAL: usize = 5 * 1024 + 10;
    let g = generator(TimerClock::new());
    let issued = Arc::new(AtomicUsize::new(0));
    let other = observer(Arc::clone(&issued), 3);
    let mut ids = Vec::with_capacity(TOTAL);
    for _ in 0..TOTAL {
        ids.push(g.next_id_async().await.unwrap().get());
        issued.fetch_add(1, Ordering::SeqCst);
    }
    // The other task ran *during* the burst on this single thread.
    let seen = other.await.unwrap();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|&n| n > 0 && n < TOTAL), "other task only ran outside the burst: {seen:?}");
    assert_strictly_increasing(&ids);
    let layout = Layout::seed();
    let mut per_ms = std::collections::BTreeMap::<u64, usize>::new();
    for &id in &ids {
        *per_ms.entry(layout.decode(id).timestamp_ms).or_default() += 1;
    }
    assert_eq!(per_ms.keys().copied().collect::<Vec<_>>(), (T0..=T0 + 5).collect::<Vec<_>>());
    assert!(per_ms.values().all(|&n| n <= 1024));
    assert_eq!(per_ms[&T0], 1024, "the first millisecond is filled before waiting");
}

#[tokio::test(start_paused = true)]
async fn clones_awaiting_concurrently_never_share_an_id() {
    let g = generator(TimerClock::new());
    let all = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (g, all) = (g.clone(), Arc::clone(&all));
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for _ in 0..1_500 {
                    mine.push(g.next_id_async().await.unwrap().get());
                    tokio::task::yield_now().await;
                }
                assert_strictly_increasing(&mine);
                all.lock().unwrap().extend(mine);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut all = std::mem::take(&mut *all.lock().unwrap());
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "duplicate ids across tasks");
    assert_eq!(n, 6_000);
}

#[tokio::test(start_paused = true)]
async fn clock_step_back_within_the_bound_is_awaited_not_slept() {
    let clock = TimerClock::new();
    let g = generator(clock.clone());
    let first = g.next_id_async().await.unwrap().get();
    clock.step_back(300);
    let started = Instant::now();
    let issued = Arc::new(AtomicUsize::new(0));
    let other = observer(Arc::clone(&issued), 2);
    let mut ids = vec![first];
    for _ in 0..2_048 {
        ids.push(g.next_id_async().await.unwrap().get());
        issued.fetch_add(1, Ordering::SeqCst);
    }
    assert_strictly_increasing(&ids);
    let layout = Layout::seed();
    // The held millisecond T0 was used up, then the generator waited for the
    // clock to come back past it (about 300 ms of timer time).
    assert_eq!(layout.decode(ids[1023]).timestamp_ms, T0);
    assert!(layout.decode(ids[1024]).timestamp_ms > T0);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let seen = other.await.unwrap();
    assert!(seen.iter().all(|&n| n > 0 && n < 2_048), "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn clock_step_back_beyond_the_bound_fails_at_once() {
    let clock = TimerClock::new();
    let g = generator(clock.clone());
    let first = g.next_id_async().await.unwrap();
    clock.step_back(1_500);
    let started = Instant::now();
    assert!(matches!(
        g.next_id_async().await,
        Err(Error::ClockMovedBackwards { behind_ms: 1_500, max_ms: 1_000 })
    ));
    assert_eq!(started.elapsed(), Duration::ZERO, "it waited before failing");
    clock.step_back(-1_501);
    assert!(g.next_id_async().await.unwrap() > first);
}

#[tokio::test(start_paused = true)]
async fn a_frozen_clock_is_a_typed_error_not_a_hang() {
    let clock = ManualClock::new(T0);
    let g = generator(Arc::new(clock.clone()));
    for _ in 0..1024 {
        g.next_id_async().await.unwrap();
    }
    let started = Instant::now();
    let err = g.next_id_async().await.unwrap_err();
    assert!(matches!(err, Error::ClockStalled { waited_ms } if waited_ms > 3_000), "{err}");
    assert!(started.elapsed() > Duration::from_secs(3));
    clock.advance(1);
    assert_eq!(Layout::seed().decode(g.next_id_async().await.unwrap()).timestamp_ms, T0 + 1);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 32, ..Default::default() })]

    /// Under any mix of bursts, timer waits and clock steps back (within and
    /// beyond the bound), every id `next_id_async` returns is above the one
    /// before it; a refusal is only ever `ClockMovedBackwards`.
    #[test]
    fn async_ids_strictly_increase_under_any_clock(
        steps in proptest::collection::vec((0i64..1_500, 1usize..2_500, 0u64..5), 1..12),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async move {
            let clock = TimerClock::new();
            let g = generator(clock.clone());
            let mut last = 0u64;
            for (back_ms, burst, pause_ms) in steps {
                clock.step_back(back_ms);
                for _ in 0..burst {
                    match g.next_id_async().await {
                        Ok(id) => {
                            assert!(id.get() > last, "{} after {last}", id.get());
                            last = id.get();
                        }
                        Err(Error::ClockMovedBackwards { behind_ms, max_ms }) => {
                            assert!(behind_ms > max_ms);
                            // Recover: the clock catches up past the bound.
                            clock.step_back(-(behind_ms as i64));
                        }
                        Err(e) => panic!("unexpected refusal: {e}"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(pause_ms)).await;
            }
        });
    }
}
