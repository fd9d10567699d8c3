//! [`AlertConfig`]: the sink's bounds, timings and static labels.

use std::time::Duration;

use super::payload::Labels;
use crate::error::Error;

/// Default queue capacity (alerts waiting to be sent).
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
/// Default repeat interval: a firing alert is sent at most, and at least,
/// once per interval.
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(60);
/// Default bound on replication lag.
pub const DEFAULT_MAX_REPLICATION_LAG: Duration = Duration::from_secs(5);
/// Default health score threshold (as `health::ScorePolicy`'s default).
pub const DEFAULT_SCORE_THRESHOLD: u8 = 60;

/// How an [`AlertSink`](super::AlertSink) queues, deduplicates and sends.
///
/// ```
/// use std::time::Duration;
/// use failover::alert::AlertConfig;
///
/// let config = AlertConfig::new()
///     .with_queue_capacity(256)?
///     .with_repeat_interval(Duration::from_secs(30))?
///     .with_label("service", "orders")?
///     .with_generator_url("http://control-plane:8080/plan");
/// assert_eq!(config.queue_capacity(), 256);
/// # Ok::<(), failover::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct AlertConfig {
    queue_capacity: usize,
    batch: usize,
    repeat_interval: Duration,
    send_timeout: Duration,
    retry_initial: Duration,
    retry_max: Duration,
    labels: Labels,
    generator_url: Option<String>,
    score_threshold: Option<u8>,
    max_replication_lag: Duration,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            batch: 64,
            repeat_interval: DEFAULT_REPEAT_INTERVAL,
            send_timeout: Duration::from_secs(10),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
            labels: Labels::new(),
            generator_url: None,
            score_threshold: None,
            max_replication_lag: DEFAULT_MAX_REPLICATION_LAG,
        }
    }
}

fn invalid(m: impl Into<String>) -> Error {
    Error::Config(format!("alerts: {}", m.into()))
}

/// A Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`.
fn check_label_name(name: &str) -> Result<(), Error> {
    let mut bytes = name.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') || name.starts_with("__") {
        return Err(invalid(format!("{name:?} is not a valid label name")));
    }
    Ok(())
}

impl AlertConfig {
    /// The defaults: queue of [`DEFAULT_QUEUE_CAPACITY`], batches of 64,
    /// repeat every [`DEFAULT_REPEAT_INTERVAL`], 10 s per request, retries
    /// backing off from 100 ms to 10 s, score threshold from the health
    /// snapshot (60 by default), replication lag bound
    /// [`DEFAULT_MAX_REPLICATION_LAG`], no static label, no generator URL.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most this many alerts wait to be sent (at least 1); when the
    /// receiver is down and the queue is full, the oldest is dropped and
    /// counted.
    pub fn with_queue_capacity(mut self, capacity: usize) -> Result<Self, Error> {
        if capacity == 0 {
            return Err(invalid("queue capacity must be at least 1"));
        }
        self.queue_capacity = capacity;
        self.batch = self.batch.min(capacity);
        Ok(self)
    }

    /// At most this many alerts per request (1..=queue capacity).
    pub fn with_batch(mut self, batch: usize) -> Result<Self, Error> {
        if batch == 0 || batch > self.queue_capacity {
            return Err(invalid(format!("batch {batch} must be in 1..={}", self.queue_capacity)));
        }
        self.batch = batch;
        Ok(self)
    }

    /// A firing alert with the same labels is sent once per interval: fired
    /// again sooner it is deduplicated; still firing after it, it is sent
    /// again (at least 1 s; keep it below Alertmanager's `resolve_timeout`,
    /// 5 min by default).
    pub fn with_repeat_interval(mut self, interval: Duration) -> Result<Self, Error> {
        if interval < Duration::from_secs(1) {
            return Err(invalid("repeat interval must be at least 1 s"));
        }
        self.repeat_interval = interval;
        Ok(self)
    }

    /// How long one request may take (at least 1 ms) before it counts as
    /// failed and is retried.
    pub fn with_send_timeout(mut self, timeout: Duration) -> Result<Self, Error> {
        if timeout.is_zero() {
            return Err(invalid("send timeout must be positive"));
        }
        self.send_timeout = timeout;
        Ok(self)
    }

    /// Retry back-off after a failed request: from `initial`, doubling, up to
    /// `max` (`0 < initial <= max`).
    pub fn with_retry_backoff(mut self, initial: Duration, max: Duration) -> Result<Self, Error> {
        if initial.is_zero() || initial > max {
            return Err(invalid("retry back-off needs 0 < initial <= max"));
        }
        self.retry_initial = initial;
        self.retry_max = max;
        Ok(self)
    }

    /// A label every alert carries (e.g. `service`, `region`). The kinds'
    /// own labels (`alertname`, `cell`, `severity`, `origin`) win over it.
    pub fn with_label(mut self, name: impl Into<String>, value: impl Into<String>) -> Result<Self, Error> {
        let name = name.into();
        check_label_name(&name)?;
        self.labels.insert(name, value.into());
        Ok(self)
    }

    /// The `generatorURL` of every alert (a link to the control plane).
    pub fn with_generator_url(mut self, url: impl Into<String>) -> Self {
        self.generator_url = Some(url.into());
        self
    }

    /// The health score under which a cell alerts (0..=100); by default the
    /// threshold the health snapshot carries (the hub's
    /// `ScorePolicy::unhealthy_below`, 60 by default).
    pub fn with_score_threshold(mut self, threshold: u8) -> Result<Self, Error> {
        if threshold > 100 {
            return Err(invalid("score threshold must be 0..=100"));
        }
        self.score_threshold = Some(threshold);
        Ok(self)
    }

    /// Replication lag above this alerts (default [`DEFAULT_MAX_REPLICATION_LAG`]).
    pub fn with_max_replication_lag(mut self, bound: Duration) -> Self {
        self.max_replication_lag = bound;
        self
    }

    /// The queue capacity.
    pub fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }
    /// Alerts per request at most.
    pub fn batch(&self) -> usize {
        self.batch
    }
    /// The repeat interval.
    pub fn repeat_interval(&self) -> Duration {
        self.repeat_interval
    }
    /// The per-request timeout.
    pub fn send_timeout(&self) -> Duration {
        self.send_timeout
    }
    /// The retry back-off bounds `(initial, max)`.
    pub fn retry_backoff(&self) -> (Duration, Duration) {
        (self.retry_initial, self.retry_max)
    }
    /// The static labels.
    pub fn labels(&self) -> &Labels {
        &self.labels
    }
    /// The generator URL.
    pub fn generator_url(&self) -> Option<&str> {
        self.generator_url.as_deref()
    }
    /// The configured score threshold, if any (else the snapshot's).
    pub fn score_threshold(&self) -> Option<u8> {
        self.score_threshold
    }
    /// The replication lag bound.
    pub fn max_replication_lag(&self) -> Duration {
        self.max_replication_lag
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn invalid_values_are_errors() {
        let c = AlertConfig::new();
        assert!(c.clone().with_queue_capacity(0).is_err());
        assert!(c.clone().with_queue_capacity(4).unwrap().with_batch(5).is_err());
        assert_eq!(c.clone().with_queue_capacity(4).unwrap().batch(), 4);
        assert!(c.clone().with_batch(0).is_err());
        assert!(c.clone().with_repeat_interval(Duration::from_millis(10)).is_err());
        assert!(c.clone().with_send_timeout(Duration::ZERO).is_err());
        assert!(c.clone().with_retry_backoff(Duration::from_secs(2), Duration::from_secs(1)).is_err());
        assert!(c.clone().with_retry_backoff(Duration::ZERO, Duration::from_secs(1)).is_err());
        for bad in ["", "1abc", "a-b", "__reserved", "é"] {
            assert!(c.clone().with_label(bad, "x").is_err(), "{bad:?}");
        }
        assert!(c.clone().with_label("service_1", "orders").is_ok());
        assert!(c.with_score_threshold(101).is_err());
    }
}
