//! The crate's error types.

/// Why a single value (cell id, tenant, header value...) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidValue {
    /// The value is empty.
    #[error("empty value")]
    Empty,
    /// The value is longer than allowed.
    #[error("longer than {max} bytes")]
    TooLong {
        /// The bound, in bytes.
        max: usize,
    },
    /// The value holds a character that is not allowed.
    #[error("contains a character that is not allowed")]
    BadCharacter,
    /// The value does not have the expected form.
    #[error("malformed: {0}")]
    Malformed(&'static str),
}
