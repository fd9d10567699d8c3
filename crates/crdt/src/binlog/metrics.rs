//! [`BinlogMetrics`]: what a binlog relay published, skipped and stopped on.

use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;

/// Counts of one relay so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BinlogStats {
    /// Changes acknowledged by Kafka (a replayed change counts again).
    pub published: u64,
    /// Row events of mapped tables skipped because their writer marked them as replicated
    /// ([`MARK_REPLICATED_SQL`](super::MARK_REPLICATED_SQL)).
    pub skipped_replicated: u64,
}

/// A relay's instruments on the global meter `crdt` (attribute `relay`):
/// `crdt.binlog.published` (counter), `crdt.binlog.skipped` (counter: row
/// events of mapped tables marked as replicated), `crdt.binlog.errors` (counter, attribute
/// `reason`: `format`, `privilege`, `purged`, `ddl`, `row`, `config`,
/// `transient`); plus local counts ([`BinlogStats`]).
#[derive(Debug)]
pub struct BinlogMetrics {
    published: AtomicU64,
    skipped: AtomicU64,
    otel_published: Counter<u64>,
    otel_skipped: Counter<u64>,
    otel_errors: Counter<u64>,
    relay: KeyValue,
}

impl BinlogMetrics {
    pub(crate) fn new(relay: &str) -> Self {
        let meter = opentelemetry::global::meter("crdt");
        BinlogMetrics {
            published: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            otel_published: meter
                .u64_counter("crdt.binlog.published")
                .with_description("Binlog changes acknowledged by Kafka")
                .build(),
            otel_skipped: meter
                .u64_counter("crdt.binlog.skipped")
                .with_description(
                    "Binlog row events skipped as written by a replicated-state applier",
                )
                .build(),
            otel_errors: meter
                .u64_counter("crdt.binlog.errors")
                .with_description("Binlog relay rounds that failed, by reason")
                .build(),
            relay: KeyValue::new("relay", relay.to_string()),
        }
    }

    pub(crate) fn published(&self, n: u64) {
        self.published.fetch_add(n, Ordering::Relaxed);
        self.otel_published
            .add(n, std::slice::from_ref(&self.relay));
    }

    pub(crate) fn skipped(&self, n: u64) {
        if n > 0 {
            self.skipped.fetch_add(n, Ordering::Relaxed);
            self.otel_skipped.add(n, std::slice::from_ref(&self.relay));
        }
    }

    pub(crate) fn error(&self, reason: &'static str) {
        self.otel_errors
            .add(1, &[self.relay.clone(), KeyValue::new("reason", reason)]);
    }

    /// The counts so far.
    pub fn stats(&self) -> BinlogStats {
        BinlogStats {
            published: self.published.load(Ordering::Relaxed),
            skipped_replicated: self.skipped.load(Ordering::Relaxed),
        }
    }
}
