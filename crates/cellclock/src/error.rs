//! The crate's error type.

/// Why an offset was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The environment variable is set but is not a whole number of milliseconds.
    #[error("{var}={value:?} is not a whole number of milliseconds (for example 30000 or -5000)")]
    InvalidEnv {
        /// The variable read.
        var: &'static str,
        /// What it held.
        value: String,
    },
    /// The offset is larger than [`MAX_OFFSET_MS`](crate::MAX_OFFSET_MS) either way.
    #[error("clock offset {offset_ms} ms is out of range (at most {max_ms} ms either way)")]
    OutOfRange {
        /// The offset asked for.
        offset_ms: i64,
        /// The bound.
        max_ms: i64,
    },
}
