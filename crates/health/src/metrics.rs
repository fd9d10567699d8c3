//! OpenTelemetry instruments, created once per hub.

use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter};

/// Instrument names (listed in the crate docs).
pub(crate) const PROBE_DURATION: &str = "health.probe.duration";
pub(crate) const PROBE_UP: &str = "health.probe.up";
pub(crate) const PROBE_WATER_LEVEL: &str = "health.probe.water_level";
pub(crate) const PROBE_BACKLOG: &str = "health.probe.backlog";
pub(crate) const CELL_SCORE: &str = "health.cell.score";
pub(crate) const CELL_ALERTS: &str = "health.cell.alerts";

#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub(crate) duration: Histogram<f64>,
    pub(crate) up: Gauge<u64>,
    pub(crate) water_level: Gauge<f64>,
    pub(crate) backlog: Gauge<u64>,
    pub(crate) score: Gauge<u64>,
    pub(crate) alerts: Counter<u64>,
}

impl Metrics {
    pub(crate) fn new(meter: &Meter) -> Self {
        Metrics {
            duration: meter
                .f64_histogram(PROBE_DURATION)
                .with_unit("s")
                .with_description("Duration of one probe run")
                .build(),
            up: meter.u64_gauge(PROBE_UP).with_description("1 when the probe's last run succeeded").build(),
            water_level: meter
                .f64_gauge(PROBE_WATER_LEVEL)
                .with_description("Connection pool in use / max")
                .build(),
            backlog: meter.u64_gauge(PROBE_BACKLOG).with_description("Consumer-group lag in messages").build(),
            score: meter.u64_gauge(CELL_SCORE).with_description("Cell health score 0-100").build(),
            alerts: meter
                .u64_counter(CELL_ALERTS)
                .with_description("Times a cell fell below the health threshold")
                .build(),
        }
    }
}
