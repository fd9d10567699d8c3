//! [`Error`]: the one error type of this crate.

use std::time::Duration;

/// Errors of the breaker: a rejected call, or invalid configuration.
///
/// A rejection reaches callers boxed as a [`tower::BoxError`]; downcast it with
/// `err.downcast_ref::<breaker::Error>()`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The breaker is open (or half-open with every trial permit taken, or
    /// forced open, or the adaptive throttle dropped the call): the call was not
    /// forwarded. Try again after `retry_after`.
    #[error("circuit breaker open; retry after {retry_after:?}")]
    Open {
        /// How long until the breaker may admit calls again (a hint).
        retry_after: Duration,
    },
    /// A configuration value is out of range.
    #[error("invalid breaker config: {field}: {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// A configuration document did not parse.
    #[error("invalid breaker config document: {0}")]
    Parse(String),
}

impl Error {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidConfig { field, reason: reason.into() }
    }

    /// The retry hint of a rejection (`None` for configuration errors).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Open { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}
