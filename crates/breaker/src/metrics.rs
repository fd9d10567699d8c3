//! OpenTelemetry instruments (API only; the application picks the exporter).

use std::fmt;
use std::sync::Arc;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Meter};

use crate::event::State;

/// Instrument names (see the crate docs).
pub mod names {
    /// Counter of finished calls, by `breaker` and `outcome` (`success`, `failure`, `ignored`).
    pub const CALLS: &str = "breaker.calls";
    /// Counter of slow calls, by `breaker`.
    pub const SLOW_CALLS: &str = "breaker.slow_calls";
    /// Counter of rejected calls, by `breaker`.
    pub const REJECTED: &str = "breaker.rejected";
    /// Counter of state transitions, by `breaker`, `from` and `to`.
    pub const TRANSITIONS: &str = "breaker.transitions";
    /// Gauge of the state, by `breaker` (see [`crate::State::gauge_value`]).
    pub const STATE: &str = "breaker.state";
}

#[derive(Clone)]
pub(crate) struct Instruments {
    calls: Counter<u64>,
    slow: Counter<u64>,
    rejected: Counter<u64>,
    transitions: Counter<u64>,
    state: Gauge<i64>,
}

impl fmt::Debug for Instruments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Instruments")
    }
}

impl Instruments {
    pub(crate) fn new(meter: &Meter) -> Self {
        Instruments {
            calls: meter.u64_counter(names::CALLS).with_description("Calls through the breaker by outcome").build(),
            slow: meter.u64_counter(names::SLOW_CALLS).with_description("Calls slower than the slow-call duration").build(),
            rejected: meter.u64_counter(names::REJECTED).with_description("Calls rejected by the breaker").build(),
            transitions: meter.u64_counter(names::TRANSITIONS).with_description("Breaker state transitions").build(),
            state: meter.i64_gauge(names::STATE).with_description("Breaker state").build(),
        }
    }
}

/// Per-breaker instruments with their attributes built once.
pub(crate) struct BreakerMetrics {
    inst: Instruments,
    name: Arc<str>,
    success: [KeyValue; 2],
    failure: [KeyValue; 2],
    ignored: [KeyValue; 2],
    only: [KeyValue; 1],
}

impl fmt::Debug for BreakerMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerMetrics").field("breaker", &self.name).finish()
    }
}

impl BreakerMetrics {
    pub(crate) fn new(inst: Instruments, name: Arc<str>) -> Self {
        let b = || KeyValue::new("breaker", Arc::clone(&name));
        BreakerMetrics {
            success: [b(), KeyValue::new("outcome", "success")],
            failure: [b(), KeyValue::new("outcome", "failure")],
            ignored: [b(), KeyValue::new("outcome", "ignored")],
            only: [b()],
            inst,
            name,
        }
    }

    #[inline]
    pub(crate) fn call(&self, outcome: crate::Outcome, slow: bool) {
        let attrs = match outcome {
            crate::Outcome::Success => &self.success,
            crate::Outcome::Failure => &self.failure,
            crate::Outcome::Ignored => &self.ignored,
        };
        self.inst.calls.add(1, attrs);
        if slow {
            self.inst.slow.add(1, &self.only);
        }
    }

    pub(crate) fn rejected(&self) {
        self.inst.rejected.add(1, &self.only);
    }

    pub(crate) fn transition(&self, from: State, to: State) {
        self.inst.transitions.add(
            1,
            &[
                KeyValue::new("breaker", Arc::clone(&self.name)),
                KeyValue::new("from", from.as_str()),
                KeyValue::new("to", to.as_str()),
            ],
        );
        self.state(to);
    }

    pub(crate) fn state(&self, s: State) {
        self.inst.state.record(s.gauge_value(), &self.only);
    }
}
