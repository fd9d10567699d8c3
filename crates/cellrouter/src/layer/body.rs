//! [`RouterBody`]: the response body of the routing layer.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;

/// A boxed error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project! {
    /// The routing layer's response body: the inner service's body (served
    /// locally), a forwarded response's body, or a short body of the layer's own
    /// (redirect, 421, 503, 508).
    #[derive(Debug)]
    pub struct RouterBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = Proj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Forwarded { #[pin] body: super::forward::ForwardBody },
        Own { #[pin] body: Full<Bytes> },
    }
}

impl<B> RouterBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        RouterBody { kind: Kind::Inner { body } }
    }
    pub(crate) fn forwarded(body: super::forward::ForwardBody) -> Self {
        RouterBody { kind: Kind::Forwarded { body } }
    }
    pub(crate) fn own_full(body: Full<Bytes>) -> Self {
        RouterBody { kind: Kind::Own { body } }
    }
}

impl<B> Body for RouterBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            Proj::Inner { body } => body.poll_frame(cx).map_err(Into::into),
            Proj::Forwarded { body } => body.poll_frame(cx).map_err(Into::into),
            Proj::Own { body } => body.poll_frame(cx).map_err(|e| match e {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Forwarded { body } => body.is_end_stream(),
            Kind::Own { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Forwarded { body } => body.size_hint(),
            Kind::Own { body } => body.size_hint(),
        }
    }
}
