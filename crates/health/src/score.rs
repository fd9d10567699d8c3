//! [`ScorePolicy`]: how probe results become a 0-100 cell score.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::HealthError;
use crate::probe::ProbeOutcome;

/// Thresholds of the health score, with the seed's values as defaults.
///
/// A probe's score is 0 when its last run failed, otherwise
/// `100 × success ratio of the window`, halved once for each of: P99 latency
/// above the probe's latency budget, pool water level at or above
/// `water_level_high`, backlog above `backlog_high`, hit ratio below
/// `hit_ratio_low`. A cell's score is the weighted mean of its probes' scores;
/// below `unhealthy_below` the cell is unhealthy and an alert is emitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScorePolicy {
    /// Cells scoring below this are unhealthy (default 60).
    pub unhealthy_below: u8,
    /// Water level ratio (in use / max) at which SQL probes are halved (default 0.9).
    pub water_level_high: f64,
    /// Backlog above which Kafka probes are halved (default 10 000 messages).
    pub backlog_high: u64,
    /// Hit ratio below which a probe is halved (default 0.95).
    pub hit_ratio_low: f64,
    /// Results kept per probe (default 32).
    pub window: usize,
}

impl Default for ScorePolicy {
    fn default() -> Self {
        ScorePolicy { unhealthy_below: 60, water_level_high: 0.9, backlog_high: 10_000, hit_ratio_low: 0.95, window: 32 }
    }
}

impl ScorePolicy {
    /// Sets the unhealthy threshold (0..=100).
    pub fn with_unhealthy_below(mut self, threshold: u8) -> Self {
        self.unhealthy_below = threshold;
        self
    }

    /// Sets the water level ratio threshold (0..=1).
    pub fn with_water_level_high(mut self, ratio: f64) -> Self {
        self.water_level_high = ratio;
        self
    }

    /// Sets the backlog threshold.
    pub fn with_backlog_high(mut self, backlog: u64) -> Self {
        self.backlog_high = backlog;
        self
    }

    /// Sets the hit ratio threshold (0..=1).
    pub fn with_hit_ratio_low(mut self, ratio: f64) -> Self {
        self.hit_ratio_low = ratio;
        self
    }

    /// Sets the window size (>= 1).
    pub fn with_window(mut self, window: usize) -> Self {
        self.window = window;
        self
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), HealthError> {
        let bad = |m: &str| Err(HealthError::InvalidConfig(format!("score policy: {m}")));
        if self.unhealthy_below > 100 {
            return bad("unhealthy_below must be <= 100");
        }
        if !(0.0..=1.0).contains(&self.water_level_high) {
            return bad("water_level_high must be within 0..=1");
        }
        if !(0.0..=1.0).contains(&self.hit_ratio_low) {
            return bad("hit_ratio_low must be within 0..=1");
        }
        if self.window == 0 {
            return bad("window must be >= 1");
        }
        Ok(())
    }

    /// The score of one probe given its last outcome, window success ratio, P99
    /// and latency budget.
    pub fn probe_score(&self, last: &ProbeOutcome, success_ratio: f64, p99: Option<Duration>, budget: Duration) -> u8 {
        if !last.ok {
            return 0;
        }
        let mut s = 100.0 * success_ratio.clamp(0.0, 1.0);
        if p99.is_some_and(|p| p > budget) {
            s /= 2.0;
        }
        if last.water_level.is_some_and(|w| w.ratio() >= self.water_level_high) {
            s /= 2.0;
        }
        if last.backlog.is_some_and(|b| b > self.backlog_high) {
            s /= 2.0;
        }
        if last.hit_ratio.is_some_and(|h| h < self.hit_ratio_low) {
            s /= 2.0;
        }
        s.round().clamp(0.0, 100.0) as u8
    }

    /// Weighted mean of `(score, weight)` pairs; 0 when there is none.
    pub fn cell_score(&self, probes: impl IntoIterator<Item = (u8, u32)>) -> u8 {
        let (mut num, mut den) = (0u64, 0u64);
        for (s, w) in probes {
            num += u64::from(s) * u64::from(w);
            den += u64::from(w);
        }
        (num + den / 2).checked_div(den).map_or(0, |s| s.min(100) as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::WaterLevel;
    use proptest::prelude::*;

    #[test]
    fn seed_thresholds() {
        let p = ScorePolicy::default();
        let ms = Duration::from_millis;
        assert_eq!(p.probe_score(&ProbeOutcome::up(), 1.0, Some(ms(10)), ms(50)), 100);
        // Redis P99 over 50 ms halves the probe.
        assert_eq!(p.probe_score(&ProbeOutcome::up(), 1.0, Some(ms(60)), ms(50)), 50);
        assert_eq!(p.probe_score(&ProbeOutcome::down("x"), 1.0, None, ms(50)), 0);
        let hot = ProbeOutcome::up().with_water_level(WaterLevel { size: 10, idle: 0, in_use: 10, max: 10 });
        assert_eq!(p.probe_score(&hot, 1.0, None, ms(50)), 50);
        let cold_cache = ProbeOutcome::up().with_hit_ratio(0.90);
        assert_eq!(p.probe_score(&cold_cache, 1.0, None, ms(50)), 50);
        let backlog = ProbeOutcome::up().with_backlog(20_000);
        assert_eq!(p.probe_score(&backlog, 0.5, None, ms(50)), 25);
        assert_eq!(p.cell_score([(100, 30), (0, 10)]), 75);
        assert_eq!(p.cell_score([]), 0);
        assert!(ScorePolicy::default().with_window(0).validate().is_err());
        assert!(ScorePolicy::default().with_unhealthy_below(101).validate().is_err());
    }

    proptest! {
        #[test]
        fn cell_score_is_between_min_and_max(v in proptest::collection::vec((0u8..=100, 1u32..1000), 1..20)) {
            let s = ScorePolicy::default().cell_score(v.iter().copied());
            let min = v.iter().map(|x| x.0).min().unwrap_or(0);
            let max = v.iter().map(|x| x.0).max().unwrap_or(0);
            prop_assert!(s >= min && s <= max);
        }

        #[test]
        fn probe_score_monotone_in_success(a in 0.0f64..=1.0, b in 0.0f64..=1.0) {
            let p = ScorePolicy::default();
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let ms = Duration::from_millis;
            prop_assert!(p.probe_score(&ProbeOutcome::up(), lo, None, ms(1)) <= p.probe_score(&ProbeOutcome::up(), hi, None, ms(1)));
        }
    }
}
