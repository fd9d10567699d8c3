//! The crate's OpenTelemetry instruments (API only; the application picks the
//! exporter). Instruments are created once per watcher, never per request.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Meter, ObservableGauge};
use tokio::time::Instant;

/// `discovery.instances`: serving instances per service and cell.
pub const INSTANCES: &str = "discovery.instances";
/// `discovery.registry.staleness`: seconds since the watcher last heard from etcd.
pub const STALENESS: &str = "discovery.registry.staleness";
/// `discovery.registry.malformed`: registration values skipped as malformed.
pub const MALFORMED: &str = "discovery.registry.malformed";
/// `discovery.registry.rejected`: whole listings rejected (empty while instances were known).
pub const REJECTED: &str = "discovery.registry.rejected";
/// `discovery.watch.reconnects`: times the watch was re-established after a failure.
pub const RECONNECTS: &str = "discovery.watch.reconnects";
/// `discovery.registration.lease_regrants`: leases granted again after the old one was lost.
pub const LEASE_REGRANTS: &str = "discovery.registration.lease_regrants";

/// Counters the watcher keeps, readable through [`crate::Watcher::stats`].
#[derive(Debug)]
pub(crate) struct Stats {
    pub(crate) started: Instant,
    /// Milliseconds after `started` of the last answer from etcd; `u64::MAX`: never.
    pub(crate) last_contact_ms: AtomicU64,
    pub(crate) connected: AtomicBool,
    pub(crate) synced: AtomicBool,
    pub(crate) malformed: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) relists: AtomicU64,
}

impl Stats {
    pub(crate) fn new() -> Self {
        Stats {
            started: Instant::now(),
            last_contact_ms: AtomicU64::new(u64::MAX),
            connected: AtomicBool::new(false),
            synced: AtomicBool::new(false),
            malformed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            relists: AtomicU64::new(0),
        }
    }

    pub(crate) fn contact(&self) {
        let ms = self.started.elapsed().as_millis().min(u128::from(u64::MAX - 1)) as u64;
        self.last_contact_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the last answer from etcd (since start when there was none).
    pub(crate) fn staleness(&self) -> std::time::Duration {
        let now = self.started.elapsed();
        match self.last_contact_ms.load(Ordering::Relaxed) {
            u64::MAX => now,
            ms => now.saturating_sub(std::time::Duration::from_millis(ms)),
        }
    }
}

/// The instruments of one watcher.
#[derive(Debug)]
pub(crate) struct WatchMetrics {
    service: KeyValue,
    instances: Gauge<u64>,
    malformed: Counter<u64>,
    rejected: Counter<u64>,
    reconnects: Counter<u64>,
    _staleness: ObservableGauge<f64>,
}

impl WatchMetrics {
    pub(crate) fn new(meter: &Meter, service: &str, stats: &Arc<Stats>) -> Self {
        let service = KeyValue::new("service", service.to_string());
        let weak: Weak<Stats> = Arc::downgrade(stats);
        let attr = [service.clone()];
        let staleness = meter
            .f64_observable_gauge(STALENESS)
            .with_unit("s")
            .with_description("Seconds since the discovery watcher last heard from etcd")
            .with_callback(move |obs| {
                if let Some(stats) = weak.upgrade() {
                    obs.observe(stats.staleness().as_secs_f64(), &attr);
                }
            })
            .build();
        WatchMetrics {
            instances: meter
                .u64_gauge(INSTANCES)
                .with_description("Serving instances per service and cell")
                .build(),
            malformed: meter
                .u64_counter(MALFORMED)
                .with_description("Registration values skipped as malformed")
                .build(),
            rejected: meter
                .u64_counter(REJECTED)
                .with_description("Registry listings rejected as empty")
                .build(),
            reconnects: meter.u64_counter(RECONNECTS).with_description("Watch reconnects").build(),
            _staleness: staleness,
            service,
        }
    }

    pub(crate) fn instances(&self, cell: &str, n: u64) {
        self.instances.record(n, &[self.service.clone(), KeyValue::new("cell", cell.to_string())]);
    }

    pub(crate) fn malformed(&self, n: u64) {
        self.malformed.add(n, std::slice::from_ref(&self.service));
    }

    pub(crate) fn rejected(&self) {
        self.rejected.add(1, std::slice::from_ref(&self.service));
    }

    pub(crate) fn reconnect(&self) {
        self.reconnects.add(1, std::slice::from_ref(&self.service));
    }
}
