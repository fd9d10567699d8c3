//! The executor's instruments (opentelemetry API only).

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter};

use crate::step::Phase;

/// Counter: sagas started (`saga` attribute: the definition's name).
pub const SAGAS_STARTED: &str = "saga.started";
/// Counter: sagas committed.
pub const SAGAS_COMMITTED: &str = "saga.committed";
/// Counter: sagas compensated (a step failed, completed steps undone).
pub const SAGAS_COMPENSATED: &str = "saga.compensated";
/// Counter: sagas stuck (a compensation spent its retry budget).
pub const SAGAS_STUCK: &str = "saga.stuck";
/// Counter: sagas resumed from the log by recovery.
pub const SAGAS_RECOVERED: &str = "saga.recovered";
/// Counter: log rows recovery could not read (malformed, unknown definition).
pub const LOG_MALFORMED: &str = "saga.log.malformed";
/// Counter: finished sagas deleted from the log by retention.
pub const LOG_PRUNED: &str = "saga.log.pruned";
/// Histogram (seconds): one attempt of a step's action or compensation
/// (`saga`, `step`, `phase` = `action`|`compensation`, `outcome` = `ok`|`error`|`timeout`).
pub const STEP_DURATION: &str = "saga.step.duration";

#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    started: Counter<u64>,
    committed: Counter<u64>,
    compensated: Counter<u64>,
    stuck: Counter<u64>,
    recovered: Counter<u64>,
    malformed: Counter<u64>,
    pruned: Counter<u64>,
    step_duration: Histogram<f64>,
}

impl Metrics {
    pub(crate) fn new(meter: &Meter) -> Self {
        Metrics {
            started: meter
                .u64_counter(SAGAS_STARTED)
                .with_description("Sagas started")
                .build(),
            committed: meter
                .u64_counter(SAGAS_COMMITTED)
                .with_description("Sagas committed")
                .build(),
            compensated: meter
                .u64_counter(SAGAS_COMPENSATED)
                .with_description("Sagas compensated after a failed step")
                .build(),
            stuck: meter
                .u64_counter(SAGAS_STUCK)
                .with_description("Sagas whose compensation spent its retry budget")
                .build(),
            recovered: meter
                .u64_counter(SAGAS_RECOVERED)
                .with_description("Sagas resumed from the log")
                .build(),
            malformed: meter
                .u64_counter(LOG_MALFORMED)
                .with_description("Saga log rows that could not be read")
                .build(),
            pruned: meter
                .u64_counter(LOG_PRUNED)
                .with_description("Finished sagas deleted from the log by retention")
                .build(),
            step_duration: meter
                .f64_histogram(STEP_DURATION)
                .with_unit("s")
                .with_description("Duration of one attempt of a saga step's action or compensation")
                .build(),
        }
    }

    pub(crate) fn started(&self, saga: &str) {
        self.started
            .add(1, &[KeyValue::new("saga", saga.to_string())]);
    }
    pub(crate) fn committed(&self, saga: &str) {
        self.committed
            .add(1, &[KeyValue::new("saga", saga.to_string())]);
    }
    pub(crate) fn compensated(&self, saga: &str) {
        self.compensated
            .add(1, &[KeyValue::new("saga", saga.to_string())]);
    }
    pub(crate) fn stuck(&self, saga: &str) {
        self.stuck
            .add(1, &[KeyValue::new("saga", saga.to_string())]);
    }
    pub(crate) fn recovered(&self, saga: &str) {
        self.recovered
            .add(1, &[KeyValue::new("saga", saga.to_string())]);
    }
    pub(crate) fn malformed(&self) {
        self.malformed.add(1, &[]);
    }
    pub(crate) fn pruned(&self, n: u64) {
        self.pruned.add(n, &[]);
    }
    pub(crate) fn step(
        &self,
        saga: &str,
        step: &str,
        phase: Phase,
        outcome: &'static str,
        took: Duration,
    ) {
        self.step_duration.record(
            took.as_secs_f64(),
            &[
                KeyValue::new("saga", saga.to_string()),
                KeyValue::new("step", step.to_string()),
                KeyValue::new("phase", phase.as_str()),
                KeyValue::new("outcome", outcome),
            ],
        );
    }
}
