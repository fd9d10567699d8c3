//! [`GrpcClassifier`] and [`GrpcBody`]: gRPC outcomes read from the status
//! in the trailers (or the headers of a trailers-only response), recorded when
//! the response body ends.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{HeaderMap, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::breaker::Permit;
use crate::classify::{Outcome, RecordOutcome};

/// gRPC's `UNKNOWN` code.
const UNKNOWN: u32 = 2;

/// Classifies gRPC calls by their status code, read where gRPC sends it: in
/// the trailers that end the response body, or in the headers of a
/// trailers-only response (what servers send for an error without a
/// message). Modelled on tower-http's `GrpcErrorsAsFailures`.
///
/// Codes `UNKNOWN` (2), `DEADLINE_EXCEEDED` (4), `RESOURCE_EXHAUSTED` (8),
/// `INTERNAL` (13), `UNAVAILABLE` (14) and `DATA_LOSS` (15) are failures by
/// default, other non-zero codes are ignored, `OK` succeeds.
///
/// When the outcome is decided:
///
/// * a transport error fails at once;
/// * a response whose headers carry `grpc-status` (trailers-only), or whose
///   HTTP status is not 200 (mapped to a gRPC code as gRPC's
///   `http-grpc-status-mapping` says: 5xx and 429 are `UNAVAILABLE` or
///   `UNKNOWN`, ...), is decided from its headers;
/// * otherwise the response's body is a [`GrpcBody`], which decides when it
///   yields the trailers: their `grpc-status` (a missing or unreadable one
///   counts as `UNKNOWN`); a body error, or a body that ends without
///   trailers, fails;
/// * a body dropped before its end is a cancellation, like a dropped
///   response future: it counts as nothing and gives a half-open trial
///   permit back.
///
/// Whether the call was slow is measured up to the moment the outcome is
/// decided (for a streamed body, its end).
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

    /// The outcome of trailers: their `grpc-status` (missing or unreadable
    /// counts as `UNKNOWN`).
    pub fn classify_trailers(&self, trailers: &HeaderMap) -> Outcome {
        self.classify_code(grpc_status(trailers).unwrap_or(UNKNOWN))
    }

    /// The outcome the response head decides, if it decides one (see the
    /// type's docs): `None` means "read the trailers".
    pub fn classify_head<B>(&self, res: &Response<B>) -> Option<Outcome> {
        if let Some(code) = grpc_status(res.headers()) {
            return Some(self.classify_code(code));
        }
        if res.headers().contains_key("grpc-status") {
            return Some(self.classify_code(UNKNOWN));
        }
        match res.status() {
            StatusCode::OK => None,
            status => Some(self.classify_code(code_of_http_status(status))),
        }
    }
}

/// The `grpc-status` of `headers`, if present and a number.
fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|s| s.trim().parse().ok())
}

/// The gRPC code of a non-200 HTTP status without `grpc-status` (gRPC's
/// `doc/http-grpc-status-mapping.md`).
fn code_of_http_status(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 13,                  // INTERNAL
        401 => 16,                  // UNAUTHENTICATED
        403 => 7,                   // PERMISSION_DENIED
        404 => 12,                  // UNIMPLEMENTED
        429 | 502..=504 => 14,      // UNAVAILABLE
        _ => UNKNOWN,
    }
}

impl<B, E> RecordOutcome<Response<B>, E> for GrpcClassifier {
    type Response = Response<GrpcBody<B>>;

    fn record(&self, result: Result<Response<B>, E>, permit: Option<Permit>) -> Result<Self::Response, E> {
        let res = match result {
            Ok(res) => res,
            Err(e) => {
                if let Some(p) = permit {
                    p.record(Outcome::Failure);
                }
                return Err(e);
            }
        };
        let pending = match (permit, self.classify_head(&res)) {
            (Some(p), Some(outcome)) => {
                p.record(outcome);
                None
            }
            (Some(permit), None) => Some(Pending { permit, classifier: *self }),
            (None, _) => None,
        };
        Ok(res.map(|inner| GrpcBody { inner, pending }))
    }

    fn pass(&self, response: Response<B>) -> Self::Response {
        response.map(|inner| GrpcBody { inner, pending: None })
    }
}

/// The permit of a call whose outcome the trailers decide.
#[derive(Debug)]
struct Pending {
    permit: Permit,
    classifier: GrpcClassifier,
}

pin_project! {
    /// A gRPC response body that records its call's outcome when it yields
    /// the trailers, fails or ends (see [`GrpcClassifier`]); frames pass
    /// through unchanged. Dropped before then, it records nothing.
    #[derive(Debug)]
    pub struct GrpcBody<B> {
        #[pin]
        inner: B,
        pending: Option<Pending>,
    }
}

impl<B> GrpcBody<B> {
    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// Unwraps the body; its call's outcome, if still undecided, is then
    /// never recorded (as if dropped).
    pub fn into_inner(self) -> B {
        self.inner
    }

    /// Whether the call's outcome is still to be decided by this body.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }
}

fn settle(pending: &mut Option<Pending>, outcome: impl FnOnce(&GrpcClassifier) -> Outcome) {
    if let Some(p) = pending.take() {
        let o = outcome(&p.classifier);
        p.permit.record(o);
    }
}

impl<B: Body> Body for GrpcBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        if this.pending.is_some() {
            match &frame {
                Some(Ok(f)) => {
                    if let Some(trailers) = f.trailers_ref() {
                        settle(this.pending, |c| c.classify_trailers(trailers));
                    } else if this.inner.is_end_stream() {
                        settle(this.pending, |_| Outcome::Failure);
                    }
                }
                Some(Err(_)) | None => settle(this.pending, |_| Outcome::Failure),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
