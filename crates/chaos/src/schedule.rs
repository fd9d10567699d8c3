//! [`Schedule`]: the faults of one run, generated from a seed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::fault::{Fault, FaultKind, LinkFault, SwitchPoint};
use crate::topology::{Process, Topology};
use crate::Error;

/// How a schedule is drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleConfig {
    duration: Duration,
    warmup: Duration,
    settle: Duration,
    mean_gap: Duration,
    max_overlap: usize,
    kinds: BTreeSet<&'static str>,
}

impl ScheduleConfig {
    /// A run of `duration` (at least 10 s): faults start after a 3 s warm-up,
    /// every fault has healed 5 s before the end, a new fault every 4 s on
    /// average, at most 2 at once, every kind enabled.
    pub fn try_new(duration: Duration) -> Result<Self, Error> {
        if duration < Duration::from_secs(10) {
            return Err(Error::Config("a scheduled run lasts at least 10 s"));
        }
        Ok(ScheduleConfig {
            duration,
            warmup: Duration::from_secs(3),
            settle: Duration::from_secs(5),
            mean_gap: Duration::from_secs(4),
            max_overlap: 2,
            kinds: FaultKind::NAMES.into_iter().collect(),
        })
    }

    /// Mean time between fault starts (at least 100 ms).
    pub fn with_mean_gap(mut self, gap: Duration) -> Result<Self, Error> {
        if gap < Duration::from_millis(100) {
            return Err(Error::Config("the mean gap between faults is at least 100 ms"));
        }
        self.mean_gap = gap;
        Ok(self)
    }

    /// At most this many faults at once (at least 1).
    pub fn with_max_overlap(mut self, n: usize) -> Result<Self, Error> {
        if n == 0 {
            return Err(Error::Config("max_overlap is at least 1"));
        }
        self.max_overlap = n;
        Ok(self)
    }

    /// Only these kinds ([`FaultKind::name`]); an unknown name or an empty
    /// set is an error.
    pub fn with_kinds<'a>(mut self, kinds: impl IntoIterator<Item = &'a str>) -> Result<Self, Error> {
        let mut set = BTreeSet::new();
        for k in kinds {
            let known = FaultKind::NAMES.iter().find(|n| **n == k).ok_or(Error::Config("unknown fault kind"))?;
            set.insert(*known);
        }
        if set.is_empty() {
            return Err(Error::Config("at least one fault kind"));
        }
        self.kinds = set;
        Ok(self)
    }

    /// The run's length.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// When the last fault has healed at the latest.
    pub fn heal_by(&self) -> Duration {
        self.duration - self.settle
    }
}

/// The faults of one run, in start order; the same seed, topology and config
/// always give the same schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// The seed it was drawn from.
    pub seed: u64,
    /// The faults, by start time.
    pub faults: Vec<Fault>,
}

/// A start or a heal, for the executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Inject fault `i` of [`Schedule::faults`].
    Start(usize),
    /// Heal fault `i`.
    Heal(usize),
}

impl Schedule {
    /// Draws the schedule of `seed`.
    pub fn generate(seed: u64, topology: &Topology, config: &ScheduleConfig) -> Schedule {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let kinds: Vec<&'static str> = config
            .kinds
            .iter()
            .copied()
            .filter(|k| *k != "redis_down" || topology.redis())
            .collect();
        let mut faults: Vec<Fault> = Vec::new();
        let heal_by = config.heal_by();
        let gap_ms = config.mean_gap.as_millis() as u64;
        let mut t = config.warmup;
        loop {
            t += Duration::from_millis(rng.random_range(gap_ms / 2..=gap_ms * 3 / 2));
            if t + Duration::from_millis(500) >= heal_by || kinds.is_empty() {
                break;
            }
            // a few tries to find a fault that fits beside the ones in force
            for _ in 0..8 {
                let Some(kind) = kinds.choose(&mut rng) else { break };
                let fault = draw(&mut rng, kind, topology, t, heal_by);
                if fits(&fault, &faults, topology, config.max_overlap) {
                    faults.push(fault);
                    break;
                }
            }
        }
        Schedule { seed, faults }
    }

    /// Starts and heals in time order (a heal before a start at the same instant).
    pub fn steps(&self) -> Vec<(Duration, Step)> {
        let mut out: Vec<(Duration, Step)> = Vec::with_capacity(self.faults.len() * 2);
        for (i, f) in self.faults.iter().enumerate() {
            out.push((f.at, Step::Start(i)));
            out.push((f.heals_at(), Step::Heal(i)));
        }
        out.sort_by_key(|(at, step)| (*at, matches!(step, Step::Start(_))));
        out
    }

    /// Faults per kind, every kind listed (zeros included).
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut out: BTreeMap<&'static str, usize> = FaultKind::NAMES.iter().map(|k| (*k, 0)).collect();
        for f in &self.faults {
            *out.entry(f.kind.name()).or_default() += 1;
        }
        out
    }
}

/// Longest a clock is stepped either way, ms.
pub const MAX_CLOCK_STEP_MS: i64 = 30_000;

fn draw(rng: &mut ChaCha8Rng, kind: &str, topo: &Topology, at: Duration, heal_by: Duration) -> Fault {
    let cell_process = |rng: &mut ChaCha8Rng| {
        let cell = topo.cells()[rng.random_range(0..topo.cells().len())].clone();
        Process::Cell { cell, index: rng.random_range(0..topo.processes_per_cell()) }
    };
    let any_process = |rng: &mut ChaCha8Rng| {
        let all = topo.processes();
        all[rng.random_range(0..all.len())].clone()
    };
    let (kind, lasts_ms) = match kind {
        "kill_process" => (FaultKind::KillProcess { process: cell_process(rng) }, rng.random_range(1_000..=6_000)),
        "kill_cell" => {
            let cell = topo.cells()[rng.random_range(0..topo.cells().len())].clone();
            (FaultKind::KillCell { cell }, rng.random_range(3_000..=10_000))
        }
        "kill_leader" => {
            let point = [SwitchPoint::AfterIntent, SwitchPoint::BeforeRecord, SwitchPoint::AfterCommit][rng.random_range(0..3)];
            // long enough that a switch (a drain, a ramp step) is likely to pass the point
            (FaultKind::KillLeader { point }, rng.random_range(4_000..=12_000))
        }
        "pause" => (FaultKind::Pause { process: any_process(rng) }, rng.random_range(500..=5_000)),
        "partition" => {
            let links = topo.links();
            let link = links[rng.random_range(0..links.len())].clone();
            let fault = match rng.random_range(0..3) {
                0 => LinkFault::Drop,
                1 => LinkFault::Blackhole,
                _ => LinkFault::Delay { ms: rng.random_range(50..=1_500) },
            };
            (FaultKind::Partition { link, fault }, rng.random_range(1_000..=8_000))
        }
        "clock_step" => {
            let offset_ms = loop {
                let o = rng.random_range(-MAX_CLOCK_STEP_MS..=MAX_CLOCK_STEP_MS);
                if o.abs() >= 500 {
                    break o;
                }
            };
            (FaultKind::ClockStep { process: any_process(rng), offset_ms }, rng.random_range(2_000..=10_000))
        }
        "kafka_down" => (FaultKind::KafkaDown, rng.random_range(1_000..=6_000)),
        "redis_down" => (FaultKind::RedisDown, rng.random_range(1_000..=6_000)),
        _ => (FaultKind::StaleRestart { process: cell_process(rng) }, rng.random_range(1_000..=4_000)),
    };
    let room = heal_by.saturating_sub(at);
    Fault { at, lasts: Duration::from_millis(lasts_ms).min(room), kind }
}

/// At most `max_overlap` faults at once, at most one cell out of service at
/// once, and one process under one fault at a time.
fn fits(new: &Fault, existing: &[Fault], topo: &Topology, max_overlap: usize) -> bool {
    let overlapping: Vec<&Fault> =
        existing.iter().filter(|f| f.at < new.heals_at() && new.at < f.heals_at()).collect();
    if overlapping.len() >= max_overlap {
        return false;
    }
    let ppc = topo.processes_per_cell();
    if let Some(cell) = new.kind.cell_down(ppc)
        && overlapping.iter().any(|f| f.kind.cell_down(ppc).is_some() || touches_cell(&f.kind, cell))
    {
        return false;
    }
    let target = process_of(&new.kind);
    !overlapping.iter().any(|f| {
        let other = process_of(&f.kind);
        (target.is_some() && target == other) || std::mem::discriminant(&f.kind) == std::mem::discriminant(&new.kind)
    })
}

fn process_of(kind: &FaultKind) -> Option<&Process> {
    match kind {
        FaultKind::KillProcess { process }
        | FaultKind::Pause { process }
        | FaultKind::ClockStep { process, .. }
        | FaultKind::StaleRestart { process } => Some(process),
        _ => None,
    }
}

fn touches_cell(kind: &FaultKind, cell: &str) -> bool {
    match kind {
        FaultKind::KillCell { cell: c } => c == cell,
        other => matches!(process_of(other), Some(Process::Cell { cell: c, .. }) if c == cell),
    }
}
