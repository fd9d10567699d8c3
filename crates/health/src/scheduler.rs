//! [`Scheduler`]: runs probes with bounded concurrency.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::error::HealthError;
use crate::hub::{HealthHub, ProbeKey};
use crate::probe::{ProbeOutcome, ProbeSpec};

/// Runs probes in the background and reports their results to a [`HealthHub`].
///
/// Each probe has its own task, so a probe never overlaps itself: run *k* starts
/// at `start + k × interval + random(0..jitter)`; a run that overruns its slot
/// skips the missed slots. At most `max_concurrency` probes run at once (a
/// semaphore); a run waiting for a permit starts late rather than never. A run
/// longer than the probe's timeout is a failure.
#[derive(Debug)]
pub struct Scheduler {
    hub: HealthHub,
    semaphore: Arc<Semaphore>,
    probes: Vec<(ProbeKey, ProbeSpec)>,
}

/// The running probes; dropping it (or [`shutdown`](SchedulerHandle::shutdown))
/// stops them.
#[derive(Debug)]
pub struct SchedulerHandle {
    tasks: JoinSet<()>,
    semaphore: Arc<Semaphore>,
    max_concurrency: usize,
}

impl SchedulerHandle {
    /// Probes running right now.
    pub fn running(&self) -> usize {
        self.max_concurrency.saturating_sub(self.semaphore.available_permits())
    }

    /// Number of probe tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// True when no probe is scheduled.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Stops every probe and waits for the tasks to end.
    pub async fn shutdown(mut self) {
        self.semaphore.close();
        self.tasks.shutdown().await;
    }
}

impl Scheduler {
    /// A scheduler reporting to `hub`, running at most `max_concurrency` probes at once.
    pub fn try_new(hub: &HealthHub, max_concurrency: usize) -> Result<Self, HealthError> {
        if max_concurrency == 0 || max_concurrency > Semaphore::MAX_PERMITS {
            return Err(HealthError::InvalidConfig("max_concurrency must be >= 1".into()));
        }
        Ok(Scheduler { hub: hub.clone(), semaphore: Arc::new(Semaphore::new(max_concurrency)), probes: Vec::new() })
    }

    /// Validates `spec` and registers it with the hub (its cell shows as
    /// pending until the first result).
    pub fn add(&mut self, spec: ProbeSpec) -> Result<&mut Self, HealthError> {
        let key = self.hub.register(&spec)?;
        self.probes.push((key, spec));
        Ok(self)
    }

    /// Consuming form of [`add`](Scheduler::add).
    pub fn with_probe(mut self, spec: ProbeSpec) -> Result<Self, HealthError> {
        self.add(spec)?;
        Ok(self)
    }

    /// The hub results go to.
    pub fn hub(&self) -> &HealthHub {
        &self.hub
    }

    /// Spawns one task per probe on the current tokio runtime.
    pub fn start(self) -> SchedulerHandle {
        let mut tasks = JoinSet::new();
        let max_concurrency = self.semaphore.available_permits();
        let start = Instant::now();
        for (key, spec) in self.probes {
            tasks.spawn(run_probe(self.hub.clone(), self.semaphore.clone(), key, spec, start));
        }
        SchedulerHandle { tasks, semaphore: self.semaphore, max_concurrency }
    }
}

fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::rng().random_range(0..nanos))
}

async fn run_probe(hub: HealthHub, semaphore: Arc<Semaphore>, key: ProbeKey, spec: ProbeSpec, start: Instant) {
    let mut slot = start;
    loop {
        tokio::time::sleep_until(slot + jitter(spec.jitter())).await;
        let Ok(permit) = semaphore.acquire().await else { return };
        let began = Instant::now();
        let outcome = match tokio::time::timeout(spec.timeout, spec.probe.check()).await {
            Ok(o) => o,
            Err(_) => ProbeOutcome::down(HealthError::Timeout(spec.timeout)),
        };
        let latency = began.elapsed();
        drop(permit);
        hub.record(&key, outcome, latency);
        slot += spec.interval;
        let now = Instant::now();
        if slot < now {
            // Overran: skip to the first slot not yet passed.
            let behind = now.duration_since(slot);
            let skipped = behind.as_nanos() / spec.interval.as_nanos().max(1) + 1;
            slot += spec.interval * u32::try_from(skipped).unwrap_or(u32::MAX);
        }
    }
}
