//! Outcome classification: what a finished call counts as.

use http::{Response, StatusCode};

/// What a finished call counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Counts as a success.
    Success,
    /// Counts as a failure.
    Failure,
    /// Counts as neither (a 4xx, a call the caller gave up on): it does not
    /// move any threshold and does not close a half-open breaker.
    Ignored,
}

/// Classifies a call's result. Closures `Fn(Result<&Res, &E>) -> Outcome`
/// implement it; whether the call was slow is decided separately from its
/// latency.
pub trait Classify<Res, E> {
    /// The outcome of `result`.
    fn classify(&self, result: Result<&Res, &E>) -> Outcome;
}

impl<F, Res, E> Classify<Res, E> for F
where
    F: Fn(Result<&Res, &E>) -> Outcome,
{
    fn classify(&self, result: Result<&Res, &E>) -> Outcome {
        self(result)
    }
}

/// The default classifier for HTTP: errors (transport, timeouts) and 5xx are
/// failures, 4xx are ignored, everything else succeeds. For non-HTTP
/// responses use [`ErrorsAreFailures`] or a closure.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpClassifier;

impl<B, E> Classify<Response<B>, E> for HttpClassifier {
    fn classify(&self, result: Result<&Response<B>, &E>) -> Outcome {
        match result {
            Err(_) => Outcome::Failure,
            Ok(res) => classify_status(res.status()),
        }
    }
}

/// The default rule for one status code.
pub fn classify_status(status: StatusCode) -> Outcome {
    if status.is_server_error() {
        Outcome::Failure
    } else if status.is_client_error() {
        Outcome::Ignored
    } else {
        Outcome::Success
    }
}

/// Any `Ok` succeeds, any `Err` fails: for services that are not HTTP.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorsAreFailures;

impl<Res, E> Classify<Res, E> for ErrorsAreFailures {
    fn classify(&self, result: Result<&Res, &E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

/// gRPC over HTTP: reads `grpc-status` from the response headers (a
/// trailers-only response, as servers send for errors without a body).
/// Codes `UNKNOWN` (2), `DEADLINE_EXCEEDED` (4), `RESOURCE_EXHAUSTED` (8),
/// `INTERNAL` (13), `UNAVAILABLE` (14) and `DATA_LOSS` (15) are failures by
/// default, other non-zero codes are ignored, transport errors and HTTP 5xx
/// fail.
#[derive(Debug, Clone, Copy)]
pub struct GrpcClassifier {
    failure_codes: u32,
}

impl Default for GrpcClassifier {
    fn default() -> Self {
        GrpcClassifier::with_failure_codes(&[2, 4, 8, 13, 14, 15])
    }
}

impl GrpcClassifier {
    /// Classifies the given gRPC codes (0..=31) as failures, other non-zero
    /// codes as ignored.
    pub fn with_failure_codes(codes: &[u8]) -> Self {
        let failure_codes = codes.iter().filter(|c| **c < 32).fold(0u32, |m, c| m | (1 << c));
        GrpcClassifier { failure_codes }
    }

    /// The outcome of one gRPC status code.
    pub fn classify_code(&self, code: u32) -> Outcome {
        match code {
            0 => Outcome::Success,
            c if c < 32 && self.failure_codes & (1 << c) != 0 => Outcome::Failure,
            _ => Outcome::Ignored,
        }
    }
}

impl<B, E> Classify<Response<B>, E> for GrpcClassifier {
    fn classify(&self, result: Result<&Response<B>, &E>) -> Outcome {
        let res = match result {
            Err(_) => return Outcome::Failure,
            Ok(res) => res,
        };
        if res.status().is_server_error() {
            return Outcome::Failure;
        }
        match res.headers().get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|s| s.parse().ok()) {
            Some(code) => self.classify_code(code),
            None => Outcome::Success,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn res(status: u16) -> Response<()> {
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        r
    }

    #[test]
    fn http_defaults() {
        let c = HttpClassifier;
        let ok: Result<&Response<()>, &()> = Ok(&res(200));
        assert_eq!(c.classify(ok), Outcome::Success);
        assert_eq!(Classify::<Response<()>, ()>::classify(&c, Ok(&res(404))), Outcome::Ignored);
        assert_eq!(Classify::<Response<()>, ()>::classify(&c, Ok(&res(503))), Outcome::Failure);
        assert_eq!(Classify::<Response<()>, ()>::classify(&c, Err(&())), Outcome::Failure);
    }

    #[test]
    fn grpc_codes() {
        let c = GrpcClassifier::default();
        let mut r = res(200);
        r.headers_mut().insert("grpc-status", "14".parse().unwrap());
        assert_eq!(Classify::<Response<()>, ()>::classify(&c, Ok(&r)), Outcome::Failure);
        r.headers_mut().insert("grpc-status", "5".parse().unwrap());
        assert_eq!(Classify::<Response<()>, ()>::classify(&c, Ok(&r)), Outcome::Ignored);
        r.headers_mut().insert("grpc-status", "0".parse().unwrap());
        assert_eq!(Classify::<Response<()>, ()>::classify(&c, Ok(&r)), Outcome::Success);
    }
}
