//! [`DecisionConfigFile`]: the serde file format of [`DecisionConfig`],
//! validated into it with `try_from`.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{DecisionConfig, FailMode, Failback, RampCurve};
use crate::error::Error;

/// [`DecisionConfig`] as written in a YAML or JSON file. Every field is
/// optional (missing ones take the seed's defaults); unknown fields are an
/// error. Durations are milliseconds.
///
/// ```
/// use std::time::Duration;
/// use failover::{DecisionConfig, DecisionConfigFile};
/// let file: DecisionConfigFile = serde_yaml::from_str(
///     "
/// trip_error_rate: 0.01
/// trip_window_ms: 10000
/// max_drained: 2
/// fail_mode: closed
/// failback:
///   mode: manual
///   curve: [{ after_ms: 0, share: 0.1 }, { after_ms: 30000, share: 1.0 }]
/// ",
/// )?;
/// let config = DecisionConfig::try_from(file)?;
/// assert_eq!(config, DecisionConfig::new()
///     .with_trip(0.01, Duration::from_secs(10))
///     .with_max_drained(2)
///     .with_fail_mode(failover::FailMode::Closed)
///     .with_failback(failover::Failback::Manual(failover::RampCurve::try_new(vec![
///         (Duration::ZERO, 0.1),
///         (Duration::from_secs(30), 1.0),
///     ])?)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecisionConfigFile {
    /// Trip when the error rate is above this (0..1, default 0.005) ...
    pub trip_error_rate: f64,
    /// ... for this long without interruption (default 30 000).
    pub trip_window_ms: u64,
    /// A drained cell recovers at or below this error rate (default 0.001,
    /// below the trip rate) ...
    pub recover_error_rate: f64,
    /// ... held for this long (default 60 000).
    pub recover_window_ms: u64,
    /// Minimum time drained before failback (default 120 000).
    pub min_dwell_ms: u64,
    /// Minimum outcomes in one evaluation for its error rate to count (default 20).
    pub min_samples: u64,
    /// At most this many cells drained or failing back at once (default 1).
    pub max_drained: usize,
    /// Probers that must agree a cell is down (default 2).
    pub prober_quorum: usize,
    /// After how long a prober's view is stale (default 30 000).
    pub probe_stale_after_ms: u64,
    /// `open` (default) or `closed`.
    pub fail_mode: FailMode,
    /// Smoothing of the load estimate, in (0, 1] (default 0.2).
    pub load_alpha: f64,
    /// How drained cells come back.
    pub failback: FailbackFile,
}

/// How a drained cell comes back, as written in a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailbackFile {
    /// `ramp` (automatic, default) or `manual` (held until approved).
    pub mode: FailbackMode,
    /// The curve: offsets strictly increasing from 0, shares in (0, 1],
    /// non-decreasing, ending at 1.0 (default 1 % -> 100 % over four minutes).
    pub curve: Vec<CurvePoint>,
}

/// Automatic or manual failback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailbackMode {
    /// Automatic, along the curve.
    Ramp,
    /// Held until an operator approves, then along the curve.
    Manual,
}

/// One point of a failback curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurvePoint {
    /// Milliseconds since failback started.
    pub after_ms: u64,
    /// The share of its traffic the cell takes from then on.
    pub share: f64,
}

impl Default for DecisionConfigFile {
    fn default() -> Self {
        DecisionConfigFile::from(&DecisionConfig::default())
    }
}

impl Default for FailbackFile {
    fn default() -> Self {
        FailbackFile::from(&Failback::Ramp(RampCurve::default()))
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<&Failback> for FailbackFile {
    fn from(f: &Failback) -> Self {
        let mode = match f {
            Failback::Ramp(_) => FailbackMode::Ramp,
            Failback::Manual(_) => FailbackMode::Manual,
        };
        let curve = f.curve().points().iter().map(|&(at, share)| CurvePoint { after_ms: ms(at), share }).collect();
        FailbackFile { mode, curve }
    }
}

impl From<&DecisionConfig> for DecisionConfigFile {
    fn from(c: &DecisionConfig) -> Self {
        DecisionConfigFile {
            trip_error_rate: c.trip_error_rate,
            trip_window_ms: ms(c.trip_window),
            recover_error_rate: c.recover_error_rate,
            recover_window_ms: ms(c.recover_window),
            min_dwell_ms: ms(c.min_dwell),
            min_samples: c.min_samples,
            max_drained: c.max_drained,
            prober_quorum: c.prober_quorum,
            probe_stale_after_ms: ms(c.probe_stale_after),
            fail_mode: c.fail_mode,
            load_alpha: c.load_alpha,
            failback: FailbackFile::from(&c.failback),
        }
    }
}

impl TryFrom<FailbackFile> for Failback {
    type Error = Error;

    fn try_from(f: FailbackFile) -> Result<Self, Error> {
        let curve = RampCurve::try_new(f.curve.iter().map(|p| (Duration::from_millis(p.after_ms), p.share)).collect())?;
        Ok(match f.mode {
            FailbackMode::Ramp => Failback::Ramp(curve),
            FailbackMode::Manual => Failback::Manual(curve),
        })
    }
}

impl TryFrom<DecisionConfigFile> for DecisionConfig {
    type Error = Error;

    /// Validates the values ([`DecisionConfig::validate`], the curve, the load
    /// smoothing); the error names the offending setting.
    fn try_from(f: DecisionConfigFile) -> Result<Self, Error> {
        if !(f.load_alpha > 0.0 && f.load_alpha <= 1.0) {
            return Err(Error::Config(format!("load_alpha must be in (0, 1], got {}", f.load_alpha)));
        }
        let ms = Duration::from_millis;
        let mut config = DecisionConfig::new()
            .with_trip(f.trip_error_rate, ms(f.trip_window_ms))
            .with_recover(f.recover_error_rate, ms(f.recover_window_ms))
            .with_min_dwell(ms(f.min_dwell_ms))
            .with_min_samples(f.min_samples)
            .with_max_drained(f.max_drained)
            .with_probers(f.prober_quorum, ms(f.probe_stale_after_ms))
            .with_fail_mode(f.fail_mode)
            .with_failback(Failback::try_from(f.failback)?);
        config.load_alpha = f.load_alpha;
        config.validate()?;
        Ok(config)
    }
}

impl DecisionConfigFile {
    /// Parses YAML (JSON is YAML too).
    pub fn from_yaml(text: &str) -> Result<Self, Error> {
        serde_yaml::from_str(text).map_err(|e| Error::Config(format!("decision config: {e}")))
    }
}

impl DecisionConfig {
    /// Parses and validates a YAML (or JSON) [`DecisionConfigFile`].
    pub fn from_yaml(text: &str) -> Result<Self, Error> {
        DecisionConfigFile::from_yaml(text)?.try_into()
    }

    /// Reads, parses and validates a YAML (or JSON) [`DecisionConfigFile`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Self::from_yaml(&text).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_valid_yaml_file_becomes_the_config() {
        let yaml = "
trip_error_rate: 0.02
trip_window_ms: 5000
recover_error_rate: 0.002
recover_window_ms: 15000
min_dwell_ms: 20000
min_samples: 50
max_drained: 3
prober_quorum: 1
probe_stale_after_ms: 9000
fail_mode: closed
load_alpha: 0.5
failback:
  mode: ramp
  curve:
    - { after_ms: 0, share: 0.01 }
    - { after_ms: 10000, share: 0.5 }
    - { after_ms: 20000, share: 1.0 }
";
        let c = DecisionConfig::from_yaml(yaml).unwrap();
        let s = Duration::from_secs;
        let curve = RampCurve::try_new(vec![(Duration::ZERO, 0.01), (s(10), 0.5), (s(20), 1.0)]).unwrap();
        let mut want = DecisionConfig::new()
            .with_trip(0.02, s(5))
            .with_recover(0.002, s(15))
            .with_min_dwell(s(20))
            .with_min_samples(50)
            .with_max_drained(3)
            .with_probers(1, s(9))
            .with_fail_mode(FailMode::Closed)
            .with_failback(Failback::Ramp(curve));
        want.load_alpha = 0.5;
        assert_eq!(c, want);
        // An empty file is the seed's defaults; a config round-trips.
        assert_eq!(DecisionConfig::from_yaml("{}").unwrap(), DecisionConfig::default());
        let back = serde_yaml::to_string(&DecisionConfigFile::from(&want)).unwrap();
        assert_eq!(DecisionConfig::from_yaml(&back).unwrap(), want);
    }

    #[test]
    fn invalid_values_are_rejected_with_a_clear_error() {
        let err = |yaml: &str| DecisionConfig::from_yaml(yaml).unwrap_err().to_string();
        assert_eq!(err("trip_error_rate: 1.5"), "invalid configuration: trip error rate must be in (0, 1)");
        assert_eq!(
            err("trip_error_rate: 0.01\nrecover_error_rate: 0.02"),
            "invalid configuration: recover error rate must be in [0, trip rate)"
        );
        assert_eq!(err("trip_window_ms: 0"), "invalid configuration: windows must be positive");
        assert_eq!(err("max_drained: 0"), "invalid configuration: max drained must be at least 1");
        assert_eq!(err("prober_quorum: 0"), "invalid configuration: prober quorum must be at least 1");
        assert_eq!(err("min_samples: 0"), "invalid configuration: min samples must be at least 1");
        assert_eq!(err("load_alpha: 0"), "invalid configuration: load_alpha must be in (0, 1], got 0");
        assert_eq!(
            err("failback: { curve: [{ after_ms: 0, share: 0.5 }] }"),
            "invalid configuration: ramp curve: the last share must be 1.0"
        );
        assert_eq!(
            err("failback: { curve: [{ after_ms: 10, share: 1.0 }] }"),
            "invalid configuration: ramp curve: the first point must be at offset 0"
        );
        // Shape errors name the field.
        let e = err("trip_window: 30s");
        assert!(e.starts_with("invalid configuration: decision config: unknown field `trip_window`"), "{e}");
        let e = err("fail_mode: sideways");
        assert!(e.contains("fail_mode") && e.contains("unknown variant `sideways`"), "{e}");
        let e = err("max_drained: -1");
        assert!(e.contains("max_drained"), "{e}");
    }

    #[test]
    fn load_reads_a_file_and_names_it_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.yaml");
        std::fs::write(&good, "max_drained: 2\n").unwrap();
        assert_eq!(DecisionConfig::load(&good).unwrap(), DecisionConfig::new().with_max_drained(2));
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "max_drained: 0\n").unwrap();
        let e = DecisionConfig::load(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.yaml") && e.contains("max drained must be at least 1"), "{e}");
        assert!(matches!(DecisionConfig::load(dir.path().join("missing.yaml")), Err(Error::Io { .. })));
    }
}
