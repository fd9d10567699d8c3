//! Replication metrics: deltas applied, rejected, duplicates skipped, and lag per origin.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram as OtelHistogram};
use parking_lot::Mutex;

/// Counts of what a replica did with incoming events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplicaStats {
    /// Events applied.
    pub applied: u64,
    /// Events rejected (corrupt, unknown version, kind mismatch, clock drift).
    pub rejected: u64,
    /// Events skipped as duplicates (same origin and sequence seen before).
    pub duplicates: u64,
    /// Events parked because their HLC time was too far ahead (applied later).
    pub parked: u64,
}

/// Replication lag percentiles for one origin cell, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LagSummary {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    pub p50_ms: u64,
    /// 99th percentile.
    pub p99_ms: u64,
    /// Maximum.
    pub max_ms: u64,
}

/// The replica's instruments: OpenTelemetry instruments (`crdt.deltas.applied`,
/// `crdt.deltas.rejected`, `crdt.deltas.duplicates`, `crdt.deltas.parked`,
/// `crdt.replication.lag`)
/// plus local counters and lag histograms the application can read.
#[derive(Debug)]
pub struct ReplicaMetrics {
    applied: AtomicU64,
    rejected: AtomicU64,
    duplicates: AtomicU64,
    parked: AtomicU64,
    lag: Mutex<BTreeMap<String, Histogram<u64>>>,
    otel_applied: Counter<u64>,
    otel_rejected: Counter<u64>,
    otel_duplicates: Counter<u64>,
    otel_parked: Counter<u64>,
    otel_lag: OtelHistogram<f64>,
    cell: KeyValue,
}

impl ReplicaMetrics {
    pub(crate) fn new(cell: &str) -> Self {
        let meter = opentelemetry::global::meter("crdt");
        ReplicaMetrics {
            applied: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            parked: AtomicU64::new(0),
            lag: Mutex::new(BTreeMap::new()),
            otel_applied: meter.u64_counter("crdt.deltas.applied").with_description("Remote deltas applied").build(),
            otel_rejected: meter
                .u64_counter("crdt.deltas.rejected")
                .with_description("Deltas rejected: corrupt, unknown version, kind mismatch, clock drift")
                .build(),
            otel_duplicates: meter
                .u64_counter("crdt.deltas.duplicates")
                .with_description("Deltas skipped as duplicates (origin, sequence)")
                .build(),
            otel_parked: meter
                .u64_counter("crdt.deltas.parked")
                .with_description("Deltas parked because their HLC time was beyond the drift bound")
                .build(),
            otel_lag: meter
                .f64_histogram("crdt.replication.lag")
                .with_unit("ms")
                .with_description("Delay from a delta's HLC timestamp to its application here")
                .build(),
            cell: KeyValue::new("cell", cell.to_string()),
        }
    }

    pub(crate) fn applied(&self, origin: &str, lag_ms: u64) {
        self.applied.fetch_add(1, Ordering::Relaxed);
        let attrs = [self.cell.clone(), KeyValue::new("origin", origin.to_string())];
        self.otel_applied.add(1, &attrs);
        self.otel_lag.record(lag_ms as f64, &attrs);
        let mut lag = self.lag.lock();
        if !lag.contains_key(origin)
            && let Ok(h) = Histogram::new_with_max(3_600_000, 2)
        {
            lag.insert(origin.to_string(), h);
        }
        if let Some(h) = lag.get_mut(origin) {
            h.saturating_record(lag_ms);
        }
    }

    pub(crate) fn rejected(&self, reason: &'static str) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.otel_rejected.add(1, &[self.cell.clone(), KeyValue::new("reason", reason)]);
    }

    pub(crate) fn duplicate(&self) {
        self.duplicates.fetch_add(1, Ordering::Relaxed);
        self.otel_duplicates.add(1, std::slice::from_ref(&self.cell));
    }

    pub(crate) fn parked(&self) {
        self.parked.fetch_add(1, Ordering::Relaxed);
        self.otel_parked.add(1, std::slice::from_ref(&self.cell));
    }

    /// Counts so far.
    pub fn stats(&self) -> ReplicaStats {
        ReplicaStats {
            applied: self.applied.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            parked: self.parked.load(Ordering::Relaxed),
        }
    }

    /// Lag percentiles of events from `origin`, `None` before the first one.
    pub fn lag(&self, origin: &str) -> Option<LagSummary> {
        let lag = self.lag.lock();
        let h = lag.get(origin)?;
        Some(LagSummary {
            count: h.len(),
            p50_ms: h.value_at_quantile(0.5),
            p99_ms: h.value_at_quantile(0.99),
            max_ms: h.max(),
        })
    }

    /// Forgets the lag samples (e.g. after a warm-up).
    pub fn reset_lag(&self) {
        self.lag.lock().clear();
    }

    /// Origins with lag samples.
    pub fn origins(&self) -> Vec<String> {
        self.lag.lock().keys().cloned().collect()
    }
}
