//! [`HealthError`]: the crate's one error type.

use std::time::Duration;

/// Everything that can go wrong in this crate: invalid configuration, a bad
/// request to a handler, or a failed probe.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HealthError {
    /// A constructor or setter was given an invalid value.
    #[error("invalid health config: {0}")]
    InvalidConfig(String),
    /// A URL could not be parsed or has an unsupported scheme.
    #[error("invalid url {url:?}: {reason}")]
    InvalidUrl {
        /// The rejected URL.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A `cell` query parameter that is not a valid cell id.
    #[error("malformed cell id {0:?}")]
    MalformedCell(String),
    /// A valid cell id that no probe reports on.
    #[error("unknown cell {0:?}")]
    UnknownCell(String),
    /// A probe did not finish within its timeout.
    #[error("probe timed out after {0:?}")]
    Timeout(Duration),
    /// A probe's dependency answered badly or not at all.
    #[error("probe failed: {0}")]
    ProbeFailed(String),
    /// The CPU profiler could not run.
    #[error("cpu profile failed: {0}")]
    Profile(String),
}
