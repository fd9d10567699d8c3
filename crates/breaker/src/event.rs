//! [`State`] and the [`Transition`] events breakers publish.

use std::fmt;
use std::sync::Arc;

/// The state of a breaker as callers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls pass and are counted.
    Closed,
    /// Calls are rejected until the wait ends.
    Open,
    /// A limited number of trial calls pass.
    HalfOpen,
    /// Rejecting everything by hand ([`crate::Mode::ForcedOpen`]).
    ForcedOpen,
    /// Passing everything, recording nothing ([`crate::Mode::Disabled`]).
    Disabled,
    /// Recording only ([`crate::Mode::MetricsOnly`]).
    MetricsOnly,
    /// Adaptive policy dropping a share of calls.
    Throttling,
}

impl State {
    /// Name used in metrics and logs (`closed`, `open`, `half_open`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Disabled => "disabled",
            State::MetricsOnly => "metrics_only",
            State::Throttling => "throttling",
        }
    }

    /// Value of the `breaker.state` gauge: 0 closed, 1 open, 2 half-open,
    /// 3 forced open, 4 disabled, 5 metrics only, 6 throttling.
    pub fn gauge_value(self) -> i64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
            State::ForcedOpen => 3,
            State::Disabled => 4,
            State::MetricsOnly => 5,
            State::Throttling => 6,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state change of one breaker, published on the registry's broadcast
/// channel ([`crate::Registry::subscribe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The breaker's name.
    pub breaker: Arc<str>,
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
    /// When, on the breaker's clock (nanoseconds).
    pub at_nanos: u64,
}
