//! [`RuntimeMetricsReporter`]: tokio runtime metrics as OpenTelemetry metrics
//! (the `runtime-metrics` feature).

use std::time::Duration;

use opentelemetry::metrics::{Counter, Gauge, Meter};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_metrics::{RuntimeIntervals, RuntimeMetrics, RuntimeMonitor};

/// Samples a tokio runtime with `tokio-metrics` every interval and records:
/// `tokio.runtime.workers`, `tokio.runtime.live_tasks`,
/// `tokio.runtime.global_queue_depth`, `tokio.runtime.busy_ratio` (gauges) and
/// `tokio.runtime.park_count` (counter). Only metrics tokio exposes without
/// `tokio_unstable` are recorded.
#[derive(Debug)]
pub struct RuntimeMetricsReporter {
    intervals: RuntimeIntervals,
    interval: Duration,
    workers: Gauge<u64>,
    live_tasks: Gauge<u64>,
    queue_depth: Gauge<u64>,
    busy_ratio: Gauge<f64>,
    parks: Counter<u64>,
}

fn u(v: usize) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

impl RuntimeMetricsReporter {
    /// A reporter of the runtime behind `handle`, recording on `meter`, every 10 s.
    pub fn new(handle: &Handle, meter: &Meter) -> Self {
        RuntimeMetricsReporter {
            intervals: RuntimeMonitor::new(handle).intervals(),
            interval: Duration::from_secs(10),
            workers: meter.u64_gauge("tokio.runtime.workers").with_description("Worker threads").build(),
            live_tasks: meter.u64_gauge("tokio.runtime.live_tasks").with_description("Tasks alive").build(),
            queue_depth: meter
                .u64_gauge("tokio.runtime.global_queue_depth")
                .with_description("Tasks waiting in the global queue")
                .build(),
            busy_ratio: meter
                .f64_gauge("tokio.runtime.busy_ratio")
                .with_description("Busy time / elapsed over the last interval")
                .build(),
            parks: meter.u64_counter("tokio.runtime.park_count").with_description("Worker parks").build(),
        }
    }

    /// Sampling interval (default 10 s; at least 1 ms).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Takes one sample now (the delta since the previous one) and records it.
    pub fn sample(&mut self) -> Option<RuntimeMetrics> {
        let m = self.intervals.next()?;
        self.workers.record(u(m.workers_count), &[]);
        self.live_tasks.record(u(m.live_tasks_count), &[]);
        self.queue_depth.record(u(m.global_queue_depth), &[]);
        let busy = m.busy_ratio();
        self.busy_ratio.record(if busy.is_finite() { busy } else { 0.0 }, &[]);
        self.parks.add(m.total_park_count, &[]);
        Some(m)
    }

    /// Samples every interval in a background task.
    pub fn spawn(mut self) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(self.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if self.sample().is_none() {
                    return;
                }
            }
        })
    }
}
