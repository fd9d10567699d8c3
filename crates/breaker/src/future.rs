//! [`ResponseFuture`]: records the call's outcome when it finishes.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower::BoxError;

use crate::breaker::Permit;
use crate::classify::RecordOutcome;

pin_project! {
    /// Response future of [`crate::CircuitBreaker`]: the inner call (its outcome
    /// recorded on completion, or handed to the response body for a
    /// [`GrpcClassifier`](crate::GrpcClassifier); dropping it records nothing
    /// and gives a half-open permit back) or the fallback's answer.
    pub struct ResponseFuture<F, C, FB> {
        #[pin]
        inner: Inner<F, C, FB>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<F, C, FB> {
        Called { #[pin] fut: F, permit: Option<Permit>, classifier: C },
        Fallback { #[pin] fut: FB, classifier: C },
    }
}

impl<F, C, FB> ResponseFuture<F, C, FB> {
    pub(crate) fn called(fut: F, permit: Option<Permit>, classifier: C) -> Self {
        ResponseFuture { inner: Inner::Called { fut, permit, classifier } }
    }

    pub(crate) fn fallback(fut: FB, classifier: C) -> Self {
        ResponseFuture { inner: Inner::Fallback { fut, classifier } }
    }
}

impl<F, C, FB> fmt::Debug for ResponseFuture<F, C, FB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.inner {
            Inner::Called { .. } => "called",
            Inner::Fallback { .. } => "fallback",
        };
        f.debug_struct("ResponseFuture").field("kind", &kind).finish()
    }
}

impl<F, C, FB, T, E> Future for ResponseFuture<F, C, FB>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: RecordOutcome<T, E>,
    FB: Future<Output = Result<T, BoxError>>,
{
    type Output = Result<C::Response, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().inner.project() {
            InnerProj::Called { fut, permit, classifier } => {
                let res = std::task::ready!(fut.poll(cx));
                Poll::Ready(classifier.record(res, permit.take()).map_err(Into::into))
            }
            InnerProj::Fallback { fut, classifier } => {
                let res = std::task::ready!(fut.poll(cx));
                Poll::Ready(res.map(|r| classifier.pass(r)))
            }
        }
    }
}
