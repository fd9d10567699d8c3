//! The sink's instruments (opentelemetry API only) and in-process counters.

use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter};

/// Counter: alerts delivered to the receiver (`alertname`, `status` = `firing` | `resolved`).
pub const ALERTS_SENT: &str = "failover.alerts.sent";
/// Counter: alerts dropped, oldest first, because the queue was full.
pub const ALERTS_DROPPED: &str = "failover.alerts.dropped";
/// Counter: alerts not sent because the same labels fired within the repeat interval (`alertname`).
pub const ALERTS_DEDUPLICATED: &str = "failover.alerts.deduplicated";
/// Counter: requests to the receiver that failed or timed out (each is retried).
pub const ALERTS_SEND_FAILURES: &str = "failover.alerts.send_failures";

#[derive(Debug)]
pub(crate) struct AlertMetrics {
    sent: Counter<u64>,
    dropped: Counter<u64>,
    deduplicated: Counter<u64>,
    failures: Counter<u64>,
    pub(crate) sent_total: AtomicU64,
    pub(crate) dropped_total: AtomicU64,
    pub(crate) deduplicated_total: AtomicU64,
    pub(crate) failures_total: AtomicU64,
}

impl AlertMetrics {
    pub(crate) fn new(meter: &Meter) -> Self {
        AlertMetrics {
            sent: meter.u64_counter(ALERTS_SENT).with_description("Alerts delivered to the receiver").build(),
            dropped: meter
                .u64_counter(ALERTS_DROPPED)
                .with_description("Alerts dropped (oldest first) because the queue was full")
                .build(),
            deduplicated: meter
                .u64_counter(ALERTS_DEDUPLICATED)
                .with_description("Alerts not sent again within the repeat interval")
                .build(),
            failures: meter
                .u64_counter(ALERTS_SEND_FAILURES)
                .with_description("Failed requests to the alert receiver")
                .build(),
            sent_total: AtomicU64::new(0),
            dropped_total: AtomicU64::new(0),
            deduplicated_total: AtomicU64::new(0),
            failures_total: AtomicU64::new(0),
        }
    }

    pub(crate) fn sent(&self, alertname: &str, status: &'static str) {
        self.sent_total.fetch_add(1, Ordering::Relaxed);
        self.sent.add(1, &[KeyValue::new("alertname", alertname.to_string()), KeyValue::new("status", status)]);
    }

    pub(crate) fn dropped(&self, n: u64) {
        if n > 0 {
            self.dropped_total.fetch_add(n, Ordering::Relaxed);
            self.dropped.add(n, &[]);
        }
    }

    pub(crate) fn deduplicated(&self, alertname: &str) {
        self.deduplicated_total.fetch_add(1, Ordering::Relaxed);
        self.deduplicated.add(1, &[KeyValue::new("alertname", alertname.to_string())]);
    }

    pub(crate) fn failure(&self) {
        self.failures_total.fetch_add(1, Ordering::Relaxed);
        self.failures.add(1, &[]);
    }
}
