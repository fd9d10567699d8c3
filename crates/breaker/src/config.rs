//! Serde configuration: [`BreakerConfig`] for one breaker, [`BreakersConfig`]
//! for a registry (a default plus per-name overrides), and the seed's
//! `circuitbreaker:` YAML block.
//!
//! Durations are written in milliseconds (`*_ms` keys). Every value is checked
//! by `validate`; an out-of-range value is an [`Error::InvalidConfig`], never a
//! panic.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Highest count-based window size (counts are packed in 21-bit fields).
pub const MAX_COUNT_WINDOW: u32 = (1 << 20) - 1;
/// Highest number of time buckets in a window.
pub const MAX_BUCKETS: u32 = 1024;
/// Highest permitted calls in half-open, and highest success threshold.
pub const MAX_HALF_OPEN: u32 = u16::MAX as u32;

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

mod opt_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// The operating mode of a breaker (set in config or by hand at run time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The policy decides.
    #[default]
    Normal,
    /// Every call is rejected.
    ForcedOpen,
    /// Every call passes; nothing is recorded.
    Disabled,
    /// Calls are recorded and counted in metrics but never rejected and the
    /// breaker never changes state.
    MetricsOnly,
}

/// The shape of a sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum WindowConfig {
    /// The last `size` calls.
    Count {
        /// Number of calls kept (1 to [`MAX_COUNT_WINDOW`]).
        size: u32,
    },
    /// The calls of the last `duration`, in `buckets` time buckets (more
    /// buckets: a finer edge, so a burst across a bucket edge stays counted).
    Time {
        /// Window length.
        #[serde(rename = "duration_ms", with = "millis")]
        duration: Duration,
        /// Number of buckets (1 to [`MAX_BUCKETS`]).
        buckets: u32,
    },
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig::Time { duration: Duration::from_secs(10), buckets: 10 }
    }
}

/// How long an open breaker waits before half-open, by attempt (the number of
/// opens since it last closed, from 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum WaitConfig {
    /// Always the same wait.
    Fixed {
        /// The wait.
        #[serde(rename = "wait_ms", with = "millis")]
        wait: Duration,
    },
    /// `initial * multiplier^attempt`, capped at `max`, then spread by
    /// `± jitter` (a fraction, 0 to 1).
    Exponential {
        /// Wait of the first open.
        #[serde(rename = "initial_ms", with = "millis")]
        initial: Duration,
        /// Growth per attempt (at least 1).
        multiplier: f64,
        /// Cap.
        #[serde(rename = "max_ms", with = "millis")]
        max: Duration,
        /// Random spread as a fraction of the wait (0 to 1).
        #[serde(default)]
        jitter: f64,
    },
}

impl Default for WaitConfig {
    fn default() -> Self {
        WaitConfig::Fixed { wait: Duration::from_secs(5) }
    }
}

/// The sliding-window policy (resilience4j semantics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlidingWindowConfig {
    /// The window.
    pub window: WindowConfig,
    /// Open when failures are at least this percentage of the window's calls
    /// (0 < x <= 100); `None` disables the check.
    pub failure_rate_threshold: Option<f64>,
    /// Open when slow calls are at least this percentage (0 < x <= 100).
    pub slow_call_rate_threshold: Option<f64>,
    /// A call taking at least this long is slow.
    #[serde(rename = "slow_call_duration_ms", with = "millis")]
    pub slow_call_duration: Duration,
    /// Count a slow call as a failure too (the seed's `timeoutMs`).
    pub slow_call_is_failure: bool,
    /// Open after this many failures in a row.
    pub consecutive_failures: Option<u32>,
    /// Open when the window holds this many failures, whatever the rate.
    pub failure_count_threshold: Option<u32>,
    /// Rates are only checked once the window holds this many calls.
    pub minimum_calls: u32,
    /// Wait in open before half-open.
    pub wait: WaitConfig,
    /// Trial calls admitted at once in half-open.
    pub permitted_calls_in_half_open: u32,
    /// Successful trial calls needed to close.
    pub success_threshold: u32,
    /// Longest stay in half-open before going back to open.
    #[serde(rename = "max_wait_in_half_open_ms", with = "opt_millis")]
    pub max_wait_in_half_open: Option<Duration>,
    /// Move open -> half-open by a timer (in the tokio runtime, when there is
    /// one) rather than at the first call after the wait.
    pub automatic_transition: bool,
}

impl Default for SlidingWindowConfig {
    fn default() -> Self {
        SlidingWindowConfig {
            window: WindowConfig::default(),
            failure_rate_threshold: Some(50.0),
            slow_call_rate_threshold: None,
            slow_call_duration: Duration::from_secs(60),
            slow_call_is_failure: false,
            consecutive_failures: None,
            failure_count_threshold: None,
            minimum_calls: 20,
            wait: WaitConfig::default(),
            permitted_calls_in_half_open: 3,
            success_threshold: 3,
            max_wait_in_half_open: None,
            automatic_transition: true,
        }
    }
}

/// Adaptive client-side throttling (Google SRE book, go-zero's default):
/// reject with probability `max(0, (requests - protection - k * accepts) / (requests + 1))`
/// over a rolling window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// The multiplier `K` (SRE suggests 2; lower is more aggressive). Must be > 0.
    pub k: f64,
    /// The rolling window.
    #[serde(rename = "window_ms", with = "millis")]
    pub window: Duration,
    /// Buckets in the window.
    pub buckets: u32,
    /// Requests subtracted before computing the ratio (go-zero's protection);
    /// 0 gives the SRE formula exactly.
    pub protection: u32,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig { k: 2.0, window: Duration::from_secs(10), buckets: 40, protection: 0 }
    }
}

/// Which policy a breaker runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Policy {
    /// Sliding window with thresholds (resilience4j, Sentinel, Polly, Hystrix).
    SlidingWindow(SlidingWindowConfig),
    /// Adaptive throttling (SRE).
    Adaptive(AdaptiveConfig),
}

impl Default for Policy {
    fn default() -> Self {
        Policy::SlidingWindow(SlidingWindowConfig::default())
    }
}

/// The configuration of one breaker.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Operating mode.
    pub mode: Mode,
    /// The policy.
    pub policy: Policy,
}

fn pct(field: &'static str, v: Option<f64>) -> Result<(), Error> {
    match v {
        Some(x) if !(x > 0.0 && x <= 100.0) => Err(Error::invalid(field, format!("{x} is not in (0, 100]"))),
        _ => Ok(()),
    }
}

impl WaitConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), Error> {
        match *self {
            WaitConfig::Fixed { .. } => Ok(()),
            WaitConfig::Exponential { initial, multiplier, max, jitter } => {
                if initial.is_zero() {
                    return Err(Error::invalid("wait.initial_ms", "must be > 0"));
                }
                if !(multiplier >= 1.0 && multiplier.is_finite()) {
                    return Err(Error::invalid("wait.multiplier", format!("{multiplier} is not >= 1")));
                }
                if max < initial {
                    return Err(Error::invalid("wait.max_ms", "must be >= initial_ms"));
                }
                if !(0.0..=1.0).contains(&jitter) {
                    return Err(Error::invalid("wait.jitter", format!("{jitter} is not in [0, 1]")));
                }
                Ok(())
            }
        }
    }
}

impl WindowConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), Error> {
        match *self {
            WindowConfig::Count { size } if size == 0 || size > MAX_COUNT_WINDOW => {
                Err(Error::invalid("window.size", format!("{size} is not in 1..={MAX_COUNT_WINDOW}")))
            }
            WindowConfig::Time { buckets, .. } if buckets == 0 || buckets > MAX_BUCKETS => {
                Err(Error::invalid("window.buckets", format!("{buckets} is not in 1..={MAX_BUCKETS}")))
            }
            WindowConfig::Time { duration, buckets } if duration.as_nanos() < u128::from(buckets) * 1_000_000 => {
                Err(Error::invalid("window.duration_ms", "buckets must be at least 1 ms wide"))
            }
            _ => Ok(()),
        }
    }
}

impl SlidingWindowConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), Error> {
        self.window.validate()?;
        self.wait.validate()?;
        pct("failure_rate_threshold", self.failure_rate_threshold)?;
        pct("slow_call_rate_threshold", self.slow_call_rate_threshold)?;
        if self.minimum_calls == 0 {
            return Err(Error::invalid("minimum_calls", "must be >= 1"));
        }
        if self.consecutive_failures == Some(0) {
            return Err(Error::invalid("consecutive_failures", "must be >= 1"));
        }
        if self.failure_count_threshold == Some(0) {
            return Err(Error::invalid("failure_count_threshold", "must be >= 1"));
        }
        if !(1..=MAX_HALF_OPEN).contains(&self.permitted_calls_in_half_open) {
            return Err(Error::invalid("permitted_calls_in_half_open", format!("must be in 1..={MAX_HALF_OPEN}")));
        }
        if !(1..=MAX_HALF_OPEN).contains(&self.success_threshold) {
            return Err(Error::invalid("success_threshold", format!("must be in 1..={MAX_HALF_OPEN}")));
        }
        if self.slow_call_duration.is_zero() {
            return Err(Error::invalid("slow_call_duration_ms", "must be > 0"));
        }
        if self.max_wait_in_half_open.is_some_and(|d| d.is_zero()) {
            return Err(Error::invalid("max_wait_in_half_open_ms", "must be > 0"));
        }
        Ok(())
    }
}

impl AdaptiveConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), Error> {
        if !(self.k > 0.0 && self.k.is_finite()) {
            return Err(Error::invalid("k", format!("{} is not > 0", self.k)));
        }
        WindowConfig::Time { duration: self.window, buckets: self.buckets }.validate()
    }
}

impl BreakerConfig {
    /// A sliding-window breaker.
    pub fn sliding(cfg: SlidingWindowConfig) -> Self {
        BreakerConfig { mode: Mode::Normal, policy: Policy::SlidingWindow(cfg) }
    }

    /// An adaptive-throttling breaker.
    pub fn adaptive(cfg: AdaptiveConfig) -> Self {
        BreakerConfig { mode: Mode::Normal, policy: Policy::Adaptive(cfg) }
    }

    /// Validates and returns the config.
    pub fn try_new(mode: Mode, policy: Policy) -> Result<Self, Error> {
        let cfg = BreakerConfig { mode, policy };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Sets the mode.
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), Error> {
        match &self.policy {
            Policy::SlidingWindow(c) => c.validate(),
            Policy::Adaptive(c) => c.validate(),
        }
    }
}

/// Configuration of a registry of breakers: a default and per-name overrides.
///
/// ```yaml
/// default:
///   policy: { type: sliding_window, failure_rate_threshold: 50, minimum_calls: 20 }
/// breakers:
///   user-svc:
///     policy: { type: adaptive, k: 2.0 }
/// ```
///
/// [`BreakersConfig::from_yaml`] also accepts the seed's block:
///
/// ```yaml
/// circuitbreaker:
///   user-svc: { enabled: true, errorPercent: 50, minRequests: 20, timeoutMs: 1000, sleepWindowMs: 5000 }
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakersConfig {
    /// Config of breakers without an entry in `breakers`.
    pub default: BreakerConfig,
    /// Per-breaker config, by breaker name.
    pub breakers: HashMap<String, BreakerConfig>,
}

/// One entry of the seed's `circuitbreaker:` block (go-zero / Hystrix style).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedBreaker {
    /// `false` gives [`Mode::Disabled`].
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Failure-rate threshold, percent.
    pub error_percent: f64,
    /// Minimum calls in the window before the rate is checked.
    pub min_requests: u32,
    /// Calls slower than this count as failures.
    pub timeout_ms: u64,
    /// Wait in open before half-open.
    pub sleep_window_ms: u64,
}

fn yes() -> bool {
    true
}

/// The seed's top-level document: `circuitbreaker: { <name>: SeedBreaker }`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SeedConfig {
    /// Breakers by downstream name.
    pub circuitbreaker: HashMap<String, SeedBreaker>,
}

impl SeedBreaker {
    /// The equivalent [`BreakerConfig`]: a 10 s time window of 10 buckets,
    /// `errorPercent` as failure-rate threshold, `minRequests` as minimum
    /// calls, `timeoutMs` as slow-call duration with slow calls counted as
    /// failures, `sleepWindowMs` as a fixed wait, one trial call to close.
    pub fn to_config(&self) -> Result<BreakerConfig, Error> {
        let cfg = BreakerConfig {
            mode: if self.enabled { Mode::Normal } else { Mode::Disabled },
            policy: Policy::SlidingWindow(SlidingWindowConfig {
                failure_rate_threshold: Some(self.error_percent),
                minimum_calls: self.min_requests,
                slow_call_duration: Duration::from_millis(self.timeout_ms),
                slow_call_is_failure: true,
                wait: WaitConfig::Fixed { wait: Duration::from_millis(self.sleep_window_ms) },
                permitted_calls_in_half_open: 1,
                success_threshold: 1,
                ..SlidingWindowConfig::default()
            }),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

impl BreakersConfig {
    /// One config for every breaker.
    pub fn uniform(cfg: BreakerConfig) -> Self {
        BreakersConfig { default: cfg, breakers: HashMap::new() }
    }

    /// Adds (or replaces) the config of breaker `name`.
    pub fn with_breaker(mut self, name: impl Into<String>, cfg: BreakerConfig) -> Self {
        self.breakers.insert(name.into(), cfg);
        self
    }

    /// The config of breaker `name`.
    pub fn for_name(&self, name: &str) -> &BreakerConfig {
        self.breakers.get(name).unwrap_or(&self.default)
    }

    /// Checks every entry.
    pub fn validate(&self) -> Result<(), Error> {
        self.default.validate()?;
        self.breakers.values().try_for_each(BreakerConfig::validate)
    }

    /// Parses YAML: either this struct's own form, or the seed's
    /// `circuitbreaker:` block (entries become overrides on the default
    /// config). Validated.
    pub fn from_yaml(s: &str) -> Result<Self, Error> {
        let v: serde_yaml::Value = serde_yaml::from_str(s).map_err(|e| Error::Parse(e.to_string()))?;
        let cfg = if v.get("circuitbreaker").is_some() {
            let seed: SeedConfig = serde_yaml::from_value(v).map_err(|e| Error::Parse(e.to_string()))?;
            let mut cfg = BreakersConfig::default();
            for (name, b) in seed.circuitbreaker {
                cfg.breakers.insert(name, b.to_config()?);
            }
            cfg
        } else {
            serde_yaml::from_value(v).map_err(|e| Error::Parse(e.to_string()))?
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses JSON in this struct's form. Validated.
    pub fn from_json(s: &str) -> Result<Self, Error> {
        let cfg: BreakersConfig = serde_json::from_str(s).map_err(|e| Error::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }
}
