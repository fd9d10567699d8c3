//! Laws of the generator and the layouts, and uniqueness under contention.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use idgen::{Clock, DEFAULT_EPOCH_MS, Error, Generator, Id, IdParts, Layout, ManualClock};
use proptest::prelude::*;

const T0: u64 = DEFAULT_EPOCH_MS + 86_400_000;
const BOUND_MS: u64 = 1_000;

#[derive(Debug, Clone)]
enum Tick {
    Stall,
    Forward(u64),
    Back(u64),
    Leap(u64),
}

fn tick() -> impl Strategy<Value = Tick> {
    prop_oneof![
        3 => Just(Tick::Stall),
        4 => (1u64..5).prop_map(Tick::Forward),
        2 => (1u64..=BOUND_MS).prop_map(Tick::Back),
        1 => (1_000u64..1_000_000).prop_map(Tick::Leap),
    ]
}

fn layouts() -> impl Strategy<Value = Layout> {
    prop_oneof![Just(Layout::seed()), Just(Layout::twitter()), Just(Layout::js_safe())]
}

/// Any valid layout: random widths for the small fields, the timestamp takes
/// the rest of 64, 63 or 53 bits.
fn any_layout() -> impl Strategy<Value = Layout> {
    (prop::sample::select(vec![64u8, 63, 53]), 0u8..=8, 0u8..=8, 0u8..=12, 1u8..=12, 0u64..=DEFAULT_EPOCH_MS)
        .prop_filter_map("timestamp width out of range", |(total, d, l, w, s, epoch)| {
            let t = total.checked_sub(d + l + w + s)?;
            Layout::try_new(t, d, l, w, s).ok().map(|layout| layout.with_epoch_ms(epoch))
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// For arbitrary clock sequences (stalls, steps back within the bound,
    /// leaps forward), ids from one generator are strictly increasing (hence
    /// unique), carry their datacenter and worker, and never run ahead of the
    /// highest clock reading seen so far.
    #[test]
    fn ids_strictly_increase_under_any_clock(
        layout in layouts(),
        ticks in prop::collection::vec((tick(), 1usize..300), 1..40),
    ) {
        let clock = ManualClock::new(T0);
        let dc = layout.max_datacenter();
        let worker = layout.max_worker() / 2;
        let g = Generator::builder(layout, dc, worker)
            .with_clock(Arc::new(clock.clone()))
            .with_max_behind(Duration::from_millis(BOUND_MS))
            .build()
            .unwrap();
        let mut last: Option<u64> = None;
        let mut highest_clock = T0;
        for (tick, n) in ticks {
            match tick {
                Tick::Stall => {}
                Tick::Forward(ms) | Tick::Leap(ms) => clock.advance(ms),
                Tick::Back(ms) => clock.step_back(ms),
            }
            highest_clock = highest_clock.max(clock.now_ms());
            for _ in 0..n {
                match g.try_next_id() {
                    Ok(id) => {
                        let id = id.get();
                        prop_assert!(last.is_none_or(|l| id > l), "{id} after {last:?}");
                        let p = layout.decode(id);
                        prop_assert_eq!((p.datacenter, p.worker), (dc, worker));
                        prop_assert!(p.timestamp_ms <= highest_clock);
                        prop_assert!(p.timestamp_ms >= clock.now_ms());
                        last = Some(id);
                    }
                    Err(Error::WouldBlock) => {
                        // The counter of the held millisecond is used up.
                        let held = layout.decode(last.unwrap()).timestamp_ms;
                        prop_assert!(held >= clock.now_ms());
                        break;
                    }
                    Err(Error::ClockMovedBackwards { behind_ms, max_ms }) => {
                        prop_assert!(behind_ms > max_ms);
                        let held = layout.decode(last.unwrap()).timestamp_ms;
                        prop_assert_eq!(held - clock.now_ms(), behind_ms);
                        break;
                    }
                    Err(e) => prop_assert!(false, "unexpected error {e}"),
                }
            }
        }
    }

    /// decode(encode(parts)) == parts for every valid layout and every parts
    /// that fit it; and encode(decode(id)) == id for every id of its width.
    #[test]
    fn decode_encode_round_trip(layout in any_layout(), raw in any::<u64>(), id in any::<u64>()) {
        let max_rel = layout.max_timestamp_ms() - layout.epoch_ms();
        let field = |bits: u8, v: u64| (v & ((1u64 << bits) - 1)) as u32;
        let parts = IdParts {
            timestamp_ms: layout.epoch_ms() + raw % (max_rel + 1),
            datacenter: field(layout.datacenter_bits(), raw >> 3),
            logical: field(layout.logical_bits(), raw >> 17),
            worker: field(layout.worker_bits(), raw >> 29),
            sequence: field(layout.sequence_bits(), raw >> 43),
        };
        let encoded = layout.encode(&parts).unwrap();
        prop_assert!(layout.total_bits() == 64 || encoded >> layout.total_bits() == 0);
        prop_assert_eq!(layout.decode(encoded), parts);
        let id = if layout.total_bits() == 64 { id } else { id & ((1u64 << layout.total_bits()) - 1) };
        prop_assert_eq!(layout.encode(&layout.try_decode(id).unwrap()).unwrap(), id);
        prop_assert_eq!(Id::new(id).to_string().parse::<Id>().unwrap(), Id::new(id));
    }
}

/// A clock that runs fast: it advances one millisecond every 1,024 reads, so the
/// seed layout's 1,024 ids/ms ceiling does not turn 8 million ids into 8 s.
#[derive(Debug)]
struct FastClock(AtomicU64);

impl Clock for FastClock {
    fn now_ms(&self) -> u64 {
        T0 + self.0.fetch_add(1, Ordering::Relaxed) / 1024
    }
}

/// 8 threads x 1,000,000 ids from one seed-layout generator: every thread sees
/// its own ids strictly increasing, and merging the 8 sorted runs finds no
/// duplicate (a k-way merge instead of a hash set: fast in debug builds).
#[test]
fn eight_threads_million_ids_each_all_unique() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 1_000_000;
    let g = Generator::builder(Layout::seed(), 1, 1)
        .with_clock(Arc::new(FastClock(AtomicU64::new(0))))
        // The fast clock runs ~1,000x real time: a thread descheduled between
        // its clock read and its CAS would look seconds behind. The bound is
        // not what this test is about.
        .with_max_behind(Duration::from_secs(3_600))
        .build()
        .unwrap();
    let runs: Vec<Vec<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let g = g.clone();
                s.spawn(move || {
                    let mut out = Vec::with_capacity(PER_THREAD);
                    for _ in 0..PER_THREAD {
                        out.push(g.next_id().unwrap().get());
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for run in &runs {
        assert_eq!(run.len(), PER_THREAD);
        assert!(run.windows(2).all(|w| w[0] < w[1]), "a thread saw ids go backwards");
    }
    // k-way merge of the sorted runs; strictly increasing output == no
    // duplicate. On the way, count ids per millisecond: the ceiling held.
    let layout = Layout::seed();
    let mut heads = [0usize; THREADS];
    let mut previous: Option<u64> = None;
    let mut merged = 0usize;
    let (mut ms, mut in_ms, mut max_per_ms) = (0u64, 0usize, 0usize);
    loop {
        let mut best: Option<(usize, u64)> = None;
        for (t, run) in runs.iter().enumerate() {
            if let Some(&v) = run.get(heads[t])
                && best.is_none_or(|(_, b)| v < b)
            {
                best = Some((t, v));
            }
        }
        let Some((t, v)) = best else { break };
        assert!(previous.is_none_or(|p| v > p), "duplicate id {v}");
        previous = Some(v);
        heads[t] += 1;
        merged += 1;
        let this_ms = layout.decode(v).timestamp_ms;
        if this_ms == ms {
            in_ms += 1;
        } else {
            (ms, in_ms) = (this_ms, 1);
        }
        max_per_ms = max_per_ms.max(in_ms);
    }
    assert_eq!(merged, THREADS * PER_THREAD);
    assert!(max_per_ms <= 1024, "{max_per_ms} ids in one millisecond");
    assert_eq!(max_per_ms, 1024, "the fast clock should saturate some millisecond");
}
