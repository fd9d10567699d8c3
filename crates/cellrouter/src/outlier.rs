//! Passive outlier detection, as Envoy's `outlier_detection` does it: the
//! caller reports each forwarded request's outcome per endpoint; an endpoint
//! with `consecutive_failures` failures in a row (connect errors, resets, 5xx)
//! is ejected at once, before any prober or decision engine has spoken.
//!
//! - An ejection lasts `base_ejection × n`, where `n` counts the endpoint's
//!   ejections (capped at `max_ejection`); `n` goes down by one for every
//!   `base_ejection` the endpoint then stays in, so a flapping endpoint is kept
//!   out longer and longer, and a recovered one is forgiven.
//! - At most `max_ejection_percent` of the known endpoints are out at once, and
//!   at least one may always be ejected (Envoy's rule): a failing endpoint that
//!   would pass the cap stays in and the refusal is counted.
//! - Ejections end lazily: [`OutlierDetector::is_ejected`] and
//!   [`OutlierDetector::reinstate_expired`] look at the clock (tokio's, so tests
//!   run on paused time).
//!
//! ```
//! use cellrouter::outlier::{OutlierConfig, OutlierDetector};
//! use cellrouter::SmoothWrr;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let wrr = SmoothWrr::new();
//! wrr.insert("10.0.0.1:80", 100.0);
//! wrr.insert("10.0.0.2:80", 100.0);
//! let detector = OutlierDetector::new(OutlierConfig::try_new(3, Duration::from_secs(10)).unwrap());
//! detector.retain(["10.0.0.1:80", "10.0.0.2:80"]);
//! for _ in 0..3 {
//!     if let Some(ejected) = detector.record("10.0.0.1:80", false) {
//!         wrr.set_failed(&ejected.key, true); // never picked while ejected
//!     }
//! }
//! assert!(detector.is_ejected(&"10.0.0.1:80"));
//! assert_eq!(wrr.pick(), Some("10.0.0.2:80"));
//! tokio::time::advance(Duration::from_secs(10)).await;
//! for back in detector.reinstate_expired() {
//!     wrr.set_failed(&back, false);
//! }
//! assert!(!detector.is_ejected(&"10.0.0.1:80"));
//! # }
//! ```
//!
//! # Metrics (meter `cellrouter`)
//! - `cellrouter.outlier.ejections` (counter, `result` = `ejected` | `cap_reached`)

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use tokio::time::Instant;

use crate::error::Error;

/// When an endpoint is ejected and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierConfig {
    consecutive_failures: u32,
    base_ejection: Duration,
    max_ejection: Duration,
    max_ejection_percent: u8,
}

impl OutlierConfig {
    /// Ejects after `consecutive_failures` failures in a row, for
    /// `base_ejection` the first time; at most 300 s and 10 % of the endpoints
    /// (at least one) unless set otherwise.
    ///
    /// # Errors
    /// [`Error::Config`] when `consecutive_failures` is 0 or `base_ejection` is zero.
    pub fn try_new(consecutive_failures: u32, base_ejection: Duration) -> Result<Self, Error> {
        if consecutive_failures == 0 {
            return Err(Error::Config("outlier detection: consecutive_failures must be at least 1".into()));
        }
        if base_ejection.is_zero() {
            return Err(Error::Config("outlier detection: base_ejection must be more than zero".into()));
        }
        Ok(OutlierConfig {
            consecutive_failures,
            base_ejection,
            max_ejection: Duration::from_secs(300).max(base_ejection),
            max_ejection_percent: 10,
        })
    }

    /// The longest an ejection lasts (default 300 s, or `base_ejection` if longer).
    ///
    /// # Errors
    /// [`Error::Config`] when it is shorter than `base_ejection`.
    pub fn with_max_ejection(mut self, max: Duration) -> Result<Self, Error> {
        if max < self.base_ejection {
            return Err(Error::Config("outlier detection: max_ejection is shorter than base_ejection".into()));
        }
        self.max_ejection = max;
        Ok(self)
    }

    /// The share of the endpoints that may be ejected at once, in percent
    /// (default 10; at least one endpoint may always be ejected).
    ///
    /// # Errors
    /// [`Error::Config`] above 100.
    pub fn with_max_ejection_percent(mut self, percent: u8) -> Result<Self, Error> {
        if percent > 100 {
            return Err(Error::Config(format!("outlier detection: max_ejection_percent {percent} is over 100")));
        }
        self.max_ejection_percent = percent;
        Ok(self)
    }

    /// How many endpoints of `known` may be out at once.
    fn cap(&self, known: usize) -> usize {
        (known * usize::from(self.max_ejection_percent) / 100).max(1)
    }
}

/// [`OutlierConfig`] as it is written in a file (YAML or JSON; every field
/// optional, defaults as [`OutlierConfig::try_new`]'s):
///
/// ```yaml
/// consecutive_failures: 5
/// base_ejection_ms: 30000
/// max_ejection_ms: 300000
/// max_ejection_percent: 10
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutlierSpec {
    /// Failures in a row that eject an endpoint.
    pub consecutive_failures: u32,
    /// The first ejection's length, in milliseconds.
    pub base_ejection_ms: u64,
    /// The longest ejection, in milliseconds.
    pub max_ejection_ms: u64,
    /// The share of endpoints that may be out at once, in percent.
    pub max_ejection_percent: u8,
}

impl Default for OutlierSpec {
    fn default() -> Self {
        OutlierSpec { consecutive_failures: 5, base_ejection_ms: 30_000, max_ejection_ms: 300_000, max_ejection_percent: 10 }
    }
}

impl TryFrom<OutlierSpec> for OutlierConfig {
    type Error = Error;

    fn try_from(s: OutlierSpec) -> Result<Self, Error> {
        OutlierConfig::try_new(s.consecutive_failures, Duration::from_millis(s.base_ejection_ms))?
            .with_max_ejection(Duration::from_millis(s.max_ejection_ms))?
            .with_max_ejection_percent(s.max_ejection_percent)
    }
}

/// An endpoint that [`OutlierDetector::record`] just ejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ejection<K> {
    /// The endpoint.
    pub key: K,
    /// When it comes back.
    pub until: Instant,
    /// Its ejection count (the multiplier of this ejection's length).
    pub times: u32,
}

#[derive(Debug, Default)]
struct Host {
    consecutive: u32,
    /// Set while ejected.
    until: Option<Instant>,
    /// Ejection count, decayed while the endpoint stays in.
    times: u32,
    /// When the last ejection ended (for the decay).
    back_since: Option<Instant>,
}

/// Per-endpoint failure streaks and ejections (see the [module docs](self)).
pub struct OutlierDetector<K> {
    config: OutlierConfig,
    hosts: Mutex<HashMap<K, Host>>,
    ejections: Counter<u64>,
    /// `result` attributes, made once.
    ejected_attr: [KeyValue; 1],
    cap_attr: [KeyValue; 1],
}

impl<K> std::fmt::Debug for OutlierDetector<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutlierDetector").field("config", &self.config).finish_non_exhaustive()
    }
}

impl<K: Clone + Eq + Hash> OutlierDetector<K> {
    /// A detector with no known endpoint.
    pub fn new(config: OutlierConfig) -> Self {
        let ejections = opentelemetry::global::meter(crate::metrics::METER)
            .u64_counter(crate::metrics::OUTLIER_EJECTIONS)
            .with_description("Endpoints ejected by passive outlier detection, and ejections refused by the cap")
            .build();
        OutlierDetector {
            config,
            hosts: Mutex::new(HashMap::new()),
            ejections,
            ejected_attr: [KeyValue::new("result", "ejected")],
            cap_attr: [KeyValue::new("result", "cap_reached")],
        }
    }

    /// The configuration.
    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Host>> {
        self.hosts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes `keys` the known endpoints: new ones start clean, departed ones
    /// are forgotten (the cap counts the known endpoints).
    pub fn retain<I: IntoIterator<Item = K>>(&self, keys: I) {
        let keys: Vec<K> = keys.into_iter().collect();
        let mut hosts = self.lock();
        hosts.retain(|k, _| keys.contains(k));
        for k in keys {
            hosts.entry(k).or_default();
        }
    }

    /// Records one outcome of `key` (`ok` false for a connect error, reset,
    /// timeout or 5xx); returns the ejection it caused, if any. An unknown key
    /// becomes known. Outcomes of an ejected endpoint (requests already in
    /// flight) change nothing.
    pub fn record(&self, key: K, ok: bool) -> Option<Ejection<K>> {
        let now = Instant::now();
        let mut hosts = self.lock();
        let known = hosts.len() + usize::from(!hosts.contains_key(&key));
        let ejected = hosts.values().filter(|h| h.until.is_some_and(|u| u > now)).count();
        let cap = self.config.cap(known);
        let host = hosts.entry(key.clone()).or_default();
        end_if_due(host, now);
        if host.until.is_some() {
            return None;
        }
        if ok {
            host.consecutive = 0;
            self.decay(host, now);
            return None;
        }
        host.consecutive = host.consecutive.saturating_add(1);
        if host.consecutive < self.config.consecutive_failures {
            return None;
        }
        if ejected >= cap {
            self.ejections.add(1, &self.cap_attr);
            return None;
        }
        self.decay(host, now);
        host.times = host.times.saturating_add(1);
        let length = self.config.base_ejection.saturating_mul(host.times).min(self.config.max_ejection);
        let until = now + length;
        host.until = Some(until);
        host.consecutive = 0;
        self.ejections.add(1, &self.ejected_attr);
        Some(Ejection { key, until, times: host.times })
    }

    /// Forgives one ejection for every `base_ejection` the endpoint stayed in.
    fn decay(&self, host: &mut Host, now: Instant) {
        if let Some(since) = host.back_since {
            let base = self.config.base_ejection.as_nanos().max(1);
            let periods = now.saturating_duration_since(since).as_nanos() / base;
            if periods > 0 {
                host.times = host.times.saturating_sub(u32::try_from(periods).unwrap_or(u32::MAX));
                host.back_since = Some(now);
            }
        }
    }

    /// Whether `key` is ejected now.
    pub fn is_ejected(&self, key: &K) -> bool {
        let now = Instant::now();
        let mut hosts = self.lock();
        hosts.get_mut(key).is_some_and(|h| {
            end_if_due(h, now);
            h.until.is_some()
        })
    }

    /// Ends every ejection that is due and returns those endpoints (to be
    /// marked live again wherever the caller marked them failed).
    pub fn reinstate_expired(&self) -> Vec<K> {
        let now = Instant::now();
        let mut back = Vec::new();
        for (k, h) in self.lock().iter_mut() {
            if h.until.is_some() && end_if_due(h, now) {
                back.push(k.clone());
            }
        }
        back
    }

    /// The earliest time an ejection ends, if any endpoint is ejected.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.lock().values().filter_map(|h| h.until).min()
    }

    /// The endpoints ejected now.
    pub fn ejected(&self) -> Vec<K> {
        let now = Instant::now();
        self.lock().iter().filter(|(_, h)| h.until.is_some_and(|u| u > now)).map(|(k, _)| k.clone()).collect()
    }
}

/// Ends `host`'s ejection when it is due; true when it ended now.
fn end_if_due(host: &mut Host, now: Instant) -> bool {
    match host.until {
        Some(u) if u <= now => {
            host.until = None;
            host.consecutive = 0;
            host.back_since = Some(u);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn detector(failures: u32, base_s: u64) -> OutlierDetector<&'static str> {
        OutlierDetector::new(OutlierConfig::try_new(failures, Duration::from_secs(base_s)).unwrap().with_max_ejection_percent(50).unwrap())
    }

    fn fail(d: &OutlierDetector<&'static str>, k: &'static str, n: u32) -> Option<Ejection<&'static str>> {
        (0..n).filter_map(|_| d.record(k, false)).last()
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_eject_and_a_success_resets_the_streak() {
        let d = detector(5, 30);
        d.retain(["a", "b"]);
        assert_eq!(fail(&d, "a", 4), None);
        assert_eq!(d.record("a", true), None);
        assert_eq!(fail(&d, "a", 4), None, "the streak restarted after the success");
        assert!(!d.is_ejected(&"a"));
        let e = d.record("a", false).expect("the fifth failure in a row ejects");
        assert_eq!((e.key, e.times), ("a", 1));
        assert_eq!(e.until, Instant::now() + Duration::from_secs(30));
        assert!(d.is_ejected(&"a"));
        assert_eq!(d.ejected(), vec!["a"]);
        assert_eq!(d.record("a", false), None, "an ejected endpoint's late outcomes change nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn ejections_expire_and_grow_with_repeats_up_to_the_max() {
        let d = OutlierDetector::new(
            OutlierConfig::try_new(1, Duration::from_secs(10)).unwrap().with_max_ejection(Duration::from_secs(25)).unwrap(),
        );
        d.retain(["a"]);
        let first = d.record("a", false).unwrap();
        assert_eq!(d.next_expiry(), Some(first.until));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(d.reinstate_expired().is_empty());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(d.reinstate_expired(), vec!["a"]);
        assert!(!d.is_ejected(&"a"));
        // ejected again at once: twice as long
        let second = d.record("a", false).unwrap();
        assert_eq!((second.times, second.until - Instant::now()), (2, Duration::from_secs(20)));
        tokio::time::advance(Duration::from_secs(20)).await;
        assert!(!d.is_ejected(&"a"));
        // a third time: 30 s, capped at 25 s
        let third = d.record("a", false).unwrap();
        assert_eq!((third.times, third.until - Instant::now()), (3, Duration::from_secs(25)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_endpoint_that_stays_in_is_forgiven() {
        let d = OutlierDetector::new(OutlierConfig::try_new(1, Duration::from_secs(10)).unwrap());
        d.retain(["a"]);
        d.record("a", false).unwrap();
        tokio::time::advance(Duration::from_secs(10)).await;
        d.record("a", false).unwrap(); // times = 2
        tokio::time::advance(Duration::from_secs(20)).await;
        // in for two base periods with successes: both ejections forgiven
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(d.record("a", true), None);
        let e = d.record("a", false).unwrap();
        assert_eq!(e.times, 1, "the multiplier decayed back to zero before this ejection");
    }

    #[tokio::test(start_paused = true)]
    async fn the_cap_keeps_endpoints_in_and_always_allows_one() {
        // 10 % of 2 endpoints rounds to 0: one may still be ejected
        let d = OutlierDetector::new(OutlierConfig::try_new(2, Duration::from_secs(10)).unwrap());
        d.retain(["a", "b"]);
        assert!(fail(&d, "a", 2).is_some());
        assert_eq!(fail(&d, "b", 10), None, "the second endpoint stays in: the cap is reached");
        assert_eq!(d.ejected(), vec!["a"]);
        // when a comes back, b's next failure streak may eject it
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(fail(&d, "b", 2).is_some());
        assert_eq!(d.ejected(), vec!["b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn departed_endpoints_are_forgotten() {
        let d = detector(1, 10);
        d.retain(["a", "b", "c"]);
        d.record("a", false).unwrap();
        d.retain(["b", "c"]);
        assert!(!d.is_ejected(&"a"));
        assert_eq!(d.next_expiry(), None);
    }

    #[test]
    fn the_file_form_validates_and_defaults() {
        let spec: OutlierSpec = serde_yaml::from_str("consecutive_failures: 3\nbase_ejection_ms: 2000").unwrap();
        let c = OutlierConfig::try_from(spec).unwrap();
        assert_eq!(c, OutlierConfig::try_new(3, Duration::from_secs(2)).unwrap());
        assert_eq!(OutlierConfig::try_from(OutlierSpec::default()).unwrap(), OutlierConfig::try_new(5, Duration::from_secs(30)).unwrap());
        let bad: OutlierSpec = serde_yaml::from_str("base_ejection_ms: 9000\nmax_ejection_ms: 1000").unwrap();
        assert!(OutlierConfig::try_from(bad).is_err());
        assert!(serde_yaml::from_str::<OutlierSpec>("consecutive: 3").is_err(), "unknown fields are refused");
    }

    #[test]
    fn invalid_configs_are_errors() {
        assert!(OutlierConfig::try_new(0, Duration::from_secs(1)).is_err());
        assert!(OutlierConfig::try_new(1, Duration::ZERO).is_err());
        let c = OutlierConfig::try_new(1, Duration::from_secs(10)).unwrap();
        assert!(c.clone().with_max_ejection(Duration::from_secs(9)).is_err());
        assert!(c.clone().with_max_ejection_percent(101).is_err());
        assert!(c.with_max_ejection_percent(100).is_ok());
    }

    proptest! {
        /// Whatever the outcomes and their timing, never more endpoints are out
        /// than the cap allows.
        #[test]
        fn never_more_ejected_than_the_cap(
            n in 1usize..12,
            percent in 0u8..=100,
            steps in proptest::collection::vec((0usize..12, any::<bool>(), 0u64..3_000), 1..400),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            rt.block_on(async {
                let keys: Vec<usize> = (0..n).collect();
                let d = OutlierDetector::new(
                    OutlierConfig::try_new(2, Duration::from_secs(1)).unwrap().with_max_ejection_percent(percent).unwrap(),
                );
                d.retain(keys.clone());
                let cap = (n * usize::from(percent) / 100).max(1);
                for (k, ok, wait_ms) in steps {
                    d.record(k % n, ok);
                    prop_assert!(d.ejected().len() <= cap, "{} ejected, cap {cap}", d.ejected().len());
                    tokio::time::advance(Duration::from_millis(wait_ms)).await;
                }
                Ok(())
            })?;
        }
    }
}
