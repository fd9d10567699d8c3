//! Outcome classification: what a finished call counts as.

use http::{Response, StatusCode};

use crate::breaker::Permit;
#[cfg(doc)]
use crate::grpc::{GrpcBody, GrpcClassifier};

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

/// How and when a call's outcome is recorded: the service's response type
/// and the step that records into the call's [`Permit`].
///
/// Closures `Fn(Result<&Res, &E>) -> Outcome`, [`HttpClassifier`],
/// [`ErrorsAreFailures`] and [`Classified`] (any [`Classify`]) record at once,
/// when the inner future resolves, and leave the response as it is.
/// [`GrpcClassifier`] records when the response body ends (gRPC sends its
/// status in trailers), so its responses come back with a [`GrpcBody`].
pub trait RecordOutcome<Res, E> {
    /// The response callers get.
    type Response;

    /// Records the outcome of `result` into `permit` (now, or when the
    /// response is done with) and hands the response on.
    fn record(&self, result: Result<Res, E>, permit: Option<Permit>) -> Result<Self::Response, E>;

    /// A response that no permit is attached to (a fallback's answer).
    fn pass(&self, response: Res) -> Self::Response;
}

/// Records at once what a [`Classify`] says, leaving the response as it is.
macro_rules! record_at_once {
    () => {
        type Response = Res;

        #[inline]
        fn record(&self, result: Result<Res, E>, permit: Option<Permit>) -> Result<Res, E> {
            if let Some(p) = permit {
                p.record(Classify::classify(self, result.as_ref()));
            }
            result
        }

        #[inline]
        fn pass(&self, response: Res) -> Res {
            response
        }
    };
}

impl<F, Res, E> RecordOutcome<Res, E> for F
where
    F: Fn(Result<&Res, &E>) -> Outcome,
{
    record_at_once!();
}

impl<Res, E> RecordOutcome<Res, E> for HttpClassifier
where
    HttpClassifier: Classify<Res, E>,
{
    record_at_once!();
}

impl<Res, E> RecordOutcome<Res, E> for ErrorsAreFailures {
    record_at_once!();
}

/// Adapts any [`Classify`] into a [`RecordOutcome`] that records at once:
/// `layer.with_classifier(Classified(my_classifier))` for a classifier type of
/// your own (closures, [`HttpClassifier`] and [`ErrorsAreFailures`] need no
/// adapter).
#[derive(Debug, Clone, Copy, Default)]
pub struct Classified<C>(pub C);

impl<C, Res, E> RecordOutcome<Res, E> for Classified<C>
where
    C: Classify<Res, E>,
{
    type Response = Res;

    #[inline]
    fn record(&self, result: Result<Res, E>, permit: Option<Permit>) -> Result<Res, E> {
        if let Some(p) = permit {
            p.record(self.0.classify(result.as_ref()));
        }
        result
    }

    #[inline]
    fn pass(&self, response: Res) -> Res {
        response
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
}
