//! The crate's error types: [`ContextError`] for a header (or signing key) that
//! cannot be used, and [`InvalidValue`] for why a single value was refused.

use http::{HeaderName, StatusCode};

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
    /// The value holds more entries than allowed (baggage).
    #[error("more than {max} entries")]
    TooMany {
        /// The bound, in entries.
        max: usize,
    },
    /// The value holds a character that is not allowed.
    #[error("contains a character that is not allowed")]
    BadCharacter,
    /// The value does not have the expected form.
    #[error("malformed: {0}")]
    Malformed(&'static str),
}

impl InvalidValue {
    /// Whether the value was refused for its size (too long, too many entries).
    pub fn is_oversized(&self) -> bool {
        matches!(self, InvalidValue::TooLong { .. } | InvalidValue::TooMany { .. })
    }
}

impl From<std::convert::Infallible> for InvalidValue {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

/// A context header (or a signing key) that cannot be used.
///
/// The server layer answers [`Malformed`](ContextError::Malformed) with
/// `400 Bad Request` and [`Oversized`](ContextError::Oversized) with
/// `431 Request Header Fields Too Large` ([`ContextError::status`]); signature
/// failures never reject a request, they strip the internal headers at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// A header's value does not have the expected form (or the header is repeated).
    #[error("header {header}: {reason}")]
    Malformed {
        /// The header.
        header: HeaderName,
        /// Why the value was refused.
        reason: InvalidValue,
    },
    /// A header's value is larger than its bound.
    #[error("header {header}: oversized: {reason}")]
    Oversized {
        /// The header.
        header: HeaderName,
        /// The bound that was broken ([`InvalidValue::TooLong`] or [`InvalidValue::TooMany`]).
        reason: InvalidValue,
    },
    /// The signature header cannot be parsed.
    #[error("header {header}: malformed signature")]
    SignatureMalformed {
        /// The signature header.
        header: HeaderName,
    },
    /// The signature does not match the context under any accepted key
    /// (wrong key, or a tampered context).
    #[error("header {header}: signature does not match")]
    SignatureMismatch {
        /// The signature header.
        header: HeaderName,
    },
    /// The signature expired.
    #[error("header {header}: signature expired at {expired_at} (unix seconds)")]
    SignatureExpired {
        /// The signature header.
        header: HeaderName,
        /// When it expired, in seconds since the Unix epoch.
        expired_at: u64,
    },
    /// A signing key is unusable (too short).
    #[error("invalid signing key: {0}")]
    InvalidKey(&'static str),
}

impl ContextError {
    /// Builds a [`Malformed`](ContextError::Malformed) or, for a size bound,
    /// an [`Oversized`](ContextError::Oversized) error for `header`.
    pub fn for_header(header: &HeaderName, reason: InvalidValue) -> Self {
        if reason.is_oversized() {
            ContextError::Oversized { header: header.clone(), reason }
        } else {
            ContextError::Malformed { header: header.clone(), reason }
        }
    }

    /// The HTTP status the server layer answers with: 431 for an oversized
    /// header, 400 otherwise.
    pub fn status(&self) -> StatusCode {
        match self {
            ContextError::Oversized { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The header concerned, if any.
    pub fn header(&self) -> Option<&HeaderName> {
        match self {
            ContextError::Malformed { header, .. }
            | ContextError::Oversized { header, .. }
            | ContextError::SignatureMalformed { header }
            | ContextError::SignatureMismatch { header }
            | ContextError::SignatureExpired { header, .. } => Some(header),
            ContextError::InvalidKey(_) => None,
        }
    }

    /// A short machine-readable kind: `malformed`, `oversized`,
    /// `signature-malformed`, `signature-mismatch`, `signature-expired`, `invalid-key`.
    pub fn kind(&self) -> &'static str {
        match self {
            ContextError::Malformed { .. } => "malformed",
            ContextError::Oversized { .. } => "oversized",
            ContextError::SignatureMalformed { .. } => "signature-malformed",
            ContextError::SignatureMismatch { .. } => "signature-mismatch",
            ContextError::SignatureExpired { .. } => "signature-expired",
            ContextError::InvalidKey(_) => "invalid-key",
        }
    }
}
