//! Probes: the [`Probe`] trait, what a run reports ([`ProbeOutcome`]) and how a
//! probe is scheduled ([`ProbeSpec`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cellctx::CellId;
use serde::Serialize;

use crate::error::HealthError;

mod closure;
mod http;
#[cfg(feature = "kafka")]
mod kafka;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "sql")]
mod sql;
mod tcp;

pub use self::closure::FnProbe;
pub use self::http::HttpProbe;
#[cfg(feature = "kafka")]
pub use self::kafka::KafkaProbe;
#[cfg(feature = "redis")]
pub use self::redis::RedisProbe;
#[cfg(feature = "sql")]
pub use self::sql::SqlProbe;
pub use self::tcp::TcpProbe;

/// The future a [`Probe`] returns.
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = ProbeOutcome> + Send + 'a>>;

/// One kind of dependency check. Runs in the background, never on the request path.
///
/// The scheduler measures the latency, applies the timeout and never runs the
/// same probe twice at once, so `check` can keep state (a connection) behind an
/// uncontended lock.
pub trait Probe: Send + Sync + 'static {
    /// What is probed; picks the defaults of [`ProbeSpec`].
    fn kind(&self) -> ProbeKind;
    /// Runs the check once.
    fn check(&self) -> ProbeFuture<'_>;
}

/// The kind of dependency a probe checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// An HTTP endpoint (status, latency, optional body match).
    Http,
    /// A TCP connect.
    Tcp,
    /// A SQL database (`SELECT 1` plus pool water level).
    Sql,
    /// Redis `PING`.
    Redis,
    /// Kafka metadata round trip and consumer-group lag.
    Kafka,
    /// Anything else ([`FnProbe`]).
    Custom,
}

impl ProbeKind {
    /// The lowercase name used in JSON and metric attributes.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Http => "http",
            ProbeKind::Tcp => "tcp",
            ProbeKind::Sql => "sql",
            ProbeKind::Redis => "redis",
            ProbeKind::Kafka => "kafka",
            ProbeKind::Custom => "custom",
        }
    }

    /// Default `(interval, timeout, weight, latency budget)` of this kind.
    ///
    /// | kind   | interval | timeout | weight | latency budget (P99) |
    /// |--------|----------|---------|--------|----------------------|
    /// | tcp    | 5 s      | 1 s     | 10     | 100 ms               |
    /// | http   | 5 s      | 2 s     | 20     | 500 ms               |
    /// | sql    | 5 s      | 2 s     | 30     | 100 ms               |
    /// | redis  | 5 s      | 1 s     | 20     | 50 ms (seed)         |
    /// | kafka  | 10 s     | 5 s     | 15     | 1 s                  |
    /// | custom | 5 s      | 1 s     | 10     | 100 ms               |
    pub fn defaults(self) -> (Duration, Duration, u32, Duration) {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        match self {
            ProbeKind::Tcp => (s(5), s(1), 10, ms(100)),
            ProbeKind::Http => (s(5), s(2), 20, ms(500)),
            ProbeKind::Sql => (s(5), s(2), 30, ms(100)),
            ProbeKind::Redis => (s(5), s(1), 20, ms(50)),
            ProbeKind::Kafka => (s(10), s(5), 15, s(1)),
            ProbeKind::Custom => (s(5), s(1), 10, ms(100)),
        }
    }
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A connection pool's water level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WaterLevel {
    /// Open connections (idle plus in use).
    pub size: u32,
    /// Idle connections.
    pub idle: u32,
    /// Connections in use.
    pub in_use: u32,
    /// The pool's maximum size.
    pub max: u32,
}

impl WaterLevel {
    /// Share of the maximum in use, 0..=1 (1 when `max` is 0).
    pub fn ratio(&self) -> f64 {
        if self.max == 0 { 1.0 } else { f64::from(self.in_use) / f64::from(self.max) }
    }
}

/// What one run of a probe reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProbeOutcome {
    /// Whether the dependency answered correctly.
    pub ok: bool,
    /// Why it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Connection pool water level (SQL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub water_level: Option<WaterLevel>,
    /// Message backlog (Kafka consumer-group lag).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u64>,
    /// A hit ratio 0..=1 (a local cache, from a closure probe).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hit_ratio: Option<f64>,
}

impl ProbeOutcome {
    /// A successful run.
    pub fn up() -> Self {
        ProbeOutcome { ok: true, ..Default::default() }
    }

    /// A failed run.
    pub fn down(error: impl fmt::Display) -> Self {
        ProbeOutcome { ok: false, error: Some(error.to_string()), ..Default::default() }
    }

    /// Attaches a pool water level.
    pub fn with_water_level(mut self, level: WaterLevel) -> Self {
        self.water_level = Some(level);
        self
    }

    /// Attaches a message backlog.
    pub fn with_backlog(mut self, backlog: u64) -> Self {
        self.backlog = Some(backlog);
        self
    }

    /// Attaches a hit ratio (clamped to 0..=1).
    pub fn with_hit_ratio(mut self, ratio: f64) -> Self {
        self.hit_ratio = Some(if ratio.is_nan() { 0.0 } else { ratio.clamp(0.0, 1.0) });
        self
    }
}

/// A probe with its cell, name and schedule.
///
/// Defaults come from [`ProbeKind::defaults`]; jitter defaults to a tenth of the
/// interval. Values are checked when the spec is added to a
/// [`Scheduler`](crate::Scheduler).
#[derive(Clone)]
pub struct ProbeSpec {
    pub(crate) cell: CellId,
    pub(crate) name: Arc<str>,
    pub(crate) probe: Arc<dyn Probe>,
    pub(crate) interval: Duration,
    pub(crate) jitter: Option<Duration>,
    pub(crate) timeout: Duration,
    pub(crate) weight: u32,
    pub(crate) latency_budget: Duration,
}

impl ProbeSpec {
    /// A probe of `cell` named `name` (unique within the cell) with its kind's defaults.
    pub fn new(cell: CellId, name: impl Into<String>, probe: impl Probe) -> Self {
        Self::from_arc(cell, name, Arc::new(probe))
    }

    /// Same as [`ProbeSpec::new`] for a shared probe.
    pub fn from_arc(cell: CellId, name: impl Into<String>, probe: Arc<dyn Probe>) -> Self {
        let (interval, timeout, weight, latency_budget) = probe.kind().defaults();
        ProbeSpec {
            cell,
            name: Arc::from(name.into()),
            probe,
            interval,
            jitter: None,
            timeout,
            weight,
            latency_budget,
        }
    }

    /// Time between the starts of two runs (must be > 0).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Up to this much random delay is added to each start (must be < interval;
    /// default a tenth of the interval).
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = Some(jitter);
        self
    }

    /// A run longer than this is a failure (must be > 0).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Weight of this probe in the cell's score (must be > 0).
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// P99 latency above this halves the probe's score.
    pub fn with_latency_budget(mut self, budget: Duration) -> Self {
        self.latency_budget = budget;
        self
    }

    /// The cell this probe reports on.
    pub fn cell(&self) -> &CellId {
        &self.cell
    }

    /// The probe's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The jitter in effect.
    pub fn jitter(&self) -> Duration {
        self.jitter.unwrap_or(self.interval / 10)
    }

    pub(crate) fn validate(&self) -> Result<(), HealthError> {
        let bad = |m: &str| Err(HealthError::InvalidConfig(format!("probe {}/{}: {m}", self.cell, self.name)));
        if self.name.is_empty() {
            return bad("empty name");
        }
        if self.interval.is_zero() {
            return bad("interval must be > 0");
        }
        if self.jitter() >= self.interval {
            return bad("jitter must be shorter than the interval");
        }
        if self.timeout.is_zero() {
            return bad("timeout must be > 0");
        }
        if self.weight == 0 {
            return bad("weight must be > 0");
        }
        Ok(())
    }
}

impl fmt::Debug for ProbeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeSpec")
            .field("cell", &self.cell)
            .field("name", &self.name)
            .field("kind", &self.probe.kind())
            .field("interval", &self.interval)
            .field("jitter", &self.jitter())
            .field("timeout", &self.timeout)
            .field("weight", &self.weight)
            .field("latency_budget", &self.latency_budget)
            .finish()
    }
}
