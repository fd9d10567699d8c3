//! Adapters of [`Error`] to axum responses and tonic statuses.

#[cfg(any(feature = "axum", feature = "tonic"))]
use crate::error::Error;
#[cfg(any(feature = "axum", feature = "tonic"))]
use crate::fallback::retry_secs;

/// `503 Service Unavailable` with `Retry-After` for a rejection, `500` for a
/// configuration error.
#[cfg(feature = "axum")]
impl axum::response::IntoResponse for Error {
    fn into_response(self) -> axum::response::Response {
        use http::StatusCode;
        use http::header::{HeaderValue, RETRY_AFTER};
        match self {
            Error::Open { retry_after } => {
                let mut res = (StatusCode::SERVICE_UNAVAILABLE, "circuit breaker open").into_response();
                res.headers_mut().insert(RETRY_AFTER, HeaderValue::from(retry_secs(retry_after)));
                res
            }
            other => (StatusCode::INTERNAL_SERVER_ERROR, other.to_string()).into_response(),
        }
    }
}

/// Turns a boxed error from a stack holding the breaker into a response: a
/// breaker [`Error`] as its `IntoResponse`, a tower timeout as `504`, anything
/// else as `500`. For `axum::error_handling::HandleErrorLayer::new(|e| async { breaker::handle_error(e) })`,
/// or, without that layer's per-request costs, [`AnswerErrorsLayer`](crate::AnswerErrorsLayer).
#[cfg(feature = "axum")]
pub fn handle_error(err: tower::BoxError) -> axum::response::Response {
    use axum::response::IntoResponse;
    use http::StatusCode;
    match err.downcast::<Error>() {
        Ok(e) => e.into_response(),
        Err(err) if err.is::<tower::timeout::error::Elapsed>() => StatusCode::GATEWAY_TIMEOUT.into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

/// `UNAVAILABLE` with a `retry-after` metadata entry (seconds) for a
/// rejection, `INTERNAL` for a configuration error.
#[cfg(feature = "tonic")]
impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        match err {
            Error::Open { retry_after } => {
                let mut status = tonic::Status::unavailable(err.to_string());
                status.metadata_mut().insert("retry-after", tonic::metadata::MetadataValue::from(retry_secs(retry_after)));
                status
            }
            other => tonic::Status::internal(other.to_string()),
        }
    }
}
