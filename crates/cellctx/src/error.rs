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
/// `431 Request Header Fields Too Large` and
/// [`Unauthenticated`](ContextError::Unauthenticated) with `401 Unauthorized`
/// ([`ContextError::status`]); signature failures never reject a request, they
/// strip the internal headers at the edge.
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
    /// The signature is well formed and matches, but its issue time lies further
    /// in the future than the clock-skew allowance.
    #[error("header {header}: signature issued in the future")]
    SignatureNotYetValid {
        /// The signature header.
        header: HeaderName,
    },
    /// The signature's lifetime (`exp - iat`) exceeds the verifier's maximum.
    #[error("header {header}: signature lifetime {lifetime_secs}s exceeds the maximum")]
    SignatureTooLong {
        /// The signature header.
        header: HeaderName,
        /// The lifetime the signer chose, in seconds.
        lifetime_secs: u64,
    },
    /// The signature was already presented for this request id within its lifetime.
    #[error("header {header}: signature replayed")]
    SignatureReplayed {
        /// The signature header.
        header: HeaderName,
    },
    /// The replay cache is full of live entries, so the signature cannot be
    /// remembered and is refused rather than risk accepting a replay.
    #[error("header {header}: replay cache full")]
    ReplayCacheFull {
        /// The signature header.
        header: HeaderName,
    },
    /// A `v1` signature (not bound to the request) while the verifier accepts `v2` only.
    #[error("header {header}: unbound v1 signature refused")]
    SignatureUnbound {
        /// The signature header.
        header: HeaderName,
    },
    /// The request carries no usable credential on a route that needs one
    /// (answered `401` with `WWW-Authenticate: Bearer error="invalid_token"`).
    #[error("unauthenticated: {0}")]
    Unauthenticated(AuthFailure),
    /// A key set (JWKS) or an authentication setting is unusable.
    #[error("invalid authentication config: {0}")]
    InvalidAuthConfig(String),
    /// A signing key is unusable (too short).
    #[error("invalid signing key: {0}")]
    InvalidKey(&'static str),
}

/// Why a request's credential was refused (see [`ContextError::Unauthenticated`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFailure {
    /// No credential on a route that is not anonymous.
    #[error("no credential")]
    Missing,
    /// The credential cannot be parsed (not `Bearer`, not a JWT, repeated, oversized).
    #[error("malformed credential")]
    Malformed,
    /// The token expired (past `exp` plus the leeway).
    #[error("token expired")]
    Expired,
    /// The token is not valid yet (`nbf` minus the leeway is in the future).
    #[error("token not valid yet")]
    NotYetValid,
    /// The token's audience is not an accepted one.
    #[error("wrong audience")]
    WrongAudience,
    /// The token's issuer is not an accepted one.
    #[error("wrong issuer")]
    WrongIssuer,
    /// The token names a key (`kid`) the key set does not hold, or names none.
    #[error("unknown signing key")]
    UnknownKey,
    /// The token's signature or algorithm does not verify under the named key.
    #[error("bad signature")]
    BadSignature,
    /// A claim the identity needs is missing or malformed.
    #[error("bad claim {0}")]
    BadClaim(&'static str),
    /// Refused by a custom [`Authenticator`](crate::auth::Authenticator), for this reason.
    #[error("refused: {0}")]
    Refused(&'static str),
}

impl AuthFailure {
    /// A short machine-readable kind (`missing`, `malformed`, `expired`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Expired => "expired",
            AuthFailure::NotYetValid => "not-yet-valid",
            AuthFailure::WrongAudience => "wrong-audience",
            AuthFailure::WrongIssuer => "wrong-issuer",
            AuthFailure::UnknownKey => "unknown-key",
            AuthFailure::BadSignature => "bad-signature",
            AuthFailure::BadClaim(_) => "bad-claim",
            AuthFailure::Refused(_) => "refused",
        }
    }
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
    /// header, 401 for a refused credential, 400 otherwise.
    pub fn status(&self) -> StatusCode {
        match self {
            ContextError::Oversized { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ContextError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
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
            | ContextError::SignatureExpired { header, .. }
            | ContextError::SignatureNotYetValid { header }
            | ContextError::SignatureTooLong { header, .. }
            | ContextError::SignatureReplayed { header }
            | ContextError::ReplayCacheFull { header }
            | ContextError::SignatureUnbound { header } => Some(header),
            ContextError::InvalidKey(_) | ContextError::Unauthenticated(_) | ContextError::InvalidAuthConfig(_) => None,
        }
    }

    /// A short machine-readable kind: `malformed`, `oversized`,
    /// `signature-malformed`, `signature-mismatch`, `signature-expired`,
    /// `signature-not-yet-valid`, `signature-too-long`, `signature-replayed`,
    /// `replay-cache-full`, `signature-unbound`, `unauthenticated`,
    /// `invalid-auth-config`, `invalid-key`.
    pub fn kind(&self) -> &'static str {
        match self {
            ContextError::Malformed { .. } => "malformed",
            ContextError::Oversized { .. } => "oversized",
            ContextError::SignatureMalformed { .. } => "signature-malformed",
            ContextError::SignatureMismatch { .. } => "signature-mismatch",
            ContextError::SignatureExpired { .. } => "signature-expired",
            ContextError::SignatureNotYetValid { .. } => "signature-not-yet-valid",
            ContextError::SignatureTooLong { .. } => "signature-too-long",
            ContextError::SignatureReplayed { .. } => "signature-replayed",
            ContextError::ReplayCacheFull { .. } => "replay-cache-full",
            ContextError::SignatureUnbound { .. } => "signature-unbound",
            ContextError::Unauthenticated(_) => "unauthenticated",
            ContextError::InvalidAuthConfig(_) => "invalid-auth-config",
            ContextError::InvalidKey(_) => "invalid-key",
        }
    }
}
