//! OpenTelemetry instruments (API only; the application installs the SDK).

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Meter};

/// Meter name.
pub const METER: &str = "cellrouter";
/// Counter: table updates, attribute `result` = `applied` | `rejected`.
pub const TABLE_UPDATES: &str = "cellrouter.table.updates";
/// Gauge: version of the table in force.
pub const TABLE_VERSION: &str = "cellrouter.table.version";
/// Gauge: seconds since the source last confirmed the table (staleness).
pub const TABLE_STALENESS: &str = "cellrouter.table.staleness";
/// Counter: table source errors (etcd unreachable, bad file, ...), attribute `source`.
pub const SOURCE_ERRORS: &str = "cellrouter.source.errors";
/// Counter: watch revisions found compacted (the source re-read the table).
pub const SOURCE_COMPACTIONS: &str = "cellrouter.source.compactions";
/// Counter: routed requests, attribute `outcome` = `local` | `forward` |
/// `redirect` | `refuse` | `loop` | `unavailable` | `forward_error` | `forward_timeout`.
pub const REQUESTS: &str = "cellrouter.requests";
/// Counter: passive outlier detection, attribute `result` = `ejected` | `cap_reached`.
pub const OUTLIER_EJECTIONS: &str = "cellrouter.outlier.ejections";

fn meter() -> Meter {
    opentelemetry::global::meter(METER)
}

#[derive(Debug, Clone)]
pub(crate) struct StoreMetrics {
    pub(crate) updates: Counter<u64>,
    pub(crate) version: Gauge<u64>,
    pub(crate) staleness: Gauge<f64>,
    pub(crate) source_errors: Counter<u64>,
    pub(crate) compactions: Counter<u64>,
    pub(crate) applied: [KeyValue; 1],
    pub(crate) rejected: [KeyValue; 1],
}

impl StoreMetrics {
    pub(crate) fn new() -> Self {
        let m = meter();
        StoreMetrics {
            updates: m.u64_counter(TABLE_UPDATES).with_description("routing table updates").build(),
            version: m.u64_gauge(TABLE_VERSION).with_description("routing table version in force").build(),
            staleness: m
                .f64_gauge(TABLE_STALENESS)
                .with_unit("s")
                .with_description("seconds since the table source last confirmed the table")
                .build(),
            source_errors: m.u64_counter(SOURCE_ERRORS).with_description("routing table source errors").build(),
            compactions: m
                .u64_counter(SOURCE_COMPACTIONS)
                .with_description("watch revisions found compacted; the table was re-read")
                .build(),
            applied: [KeyValue::new("result", "applied")],
            rejected: [KeyValue::new("result", "rejected")],
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct RequestMetrics {
    pub(crate) requests: Counter<u64>,
    pub(crate) attrs: [[KeyValue; 1]; 8],
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    Local = 0,
    Forward = 1,
    Redirect = 2,
    Refuse = 3,
    Loop = 4,
    Unavailable = 5,
    ForwardError = 6,
    ForwardTimeout = 7,
}

impl RequestMetrics {
    pub(crate) fn new() -> Self {
        let names = ["local", "forward", "redirect", "refuse", "loop", "unavailable", "forward_error", "forward_timeout"];
        RequestMetrics {
            requests: meter().u64_counter(REQUESTS).with_description("requests routed by cellrouter").build(),
            attrs: names.map(|n| [KeyValue::new("outcome", n)]),
        }
    }

    pub(crate) fn record(&self, o: Outcome) {
        self.requests.add(1, &self.attrs[o as usize]);
    }
}
