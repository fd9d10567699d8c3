//! [`ResponseFuture`] for [`CellContextService`](super::CellContextService).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderName, HeaderValue, Response};
use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;

use super::admit::Refusal;
use super::body::ResponseBody;
use crate::context::CellContext;

pin_project! {
    /// Response future of [`CellContextService`](super::CellContextService): the
    /// inner future run inside the context's scope, or the rejection of a request
    /// whose context headers were malformed or oversized.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner {
            #[pin]
            fut: TaskLocalFuture<Arc<CellContext>, F>,
            otel: Option<opentelemetry::Context>,
            echo: Option<(HeaderName, HeaderValue)>,
        },
        Rejected {
            refusal: Option<Box<Refusal>>,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(
        fut: TaskLocalFuture<Arc<CellContext>, F>,
        otel: Option<opentelemetry::Context>,
        echo: (HeaderName, HeaderValue),
    ) -> Self {
        ResponseFuture { kind: Kind::Inner { fut, otel, echo: Some(echo) } }
    }

    pub(crate) fn rejected(refusal: Box<Refusal>) -> Self {
        ResponseFuture { kind: Kind::Rejected { refusal: Some(refusal) } }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Inner { .. } => f.write_str("ResponseFuture::Inner"),
            Kind::Rejected { refusal } => f.debug_tuple("ResponseFuture::Rejected").field(refusal).finish(),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { fut, otel, echo } => {
                let res = {
                    let _guard = otel.clone().map(opentelemetry::Context::attach);
                    std::task::ready!(fut.poll(cx))
                };
                let mut res = res?;
                if let Some((name, value)) = echo.take() {
                    res.headers_mut().entry(name).or_insert(value);
                }
                Poll::Ready(Ok(res.map(ResponseBody::inner)))
            }
            KindProj::Rejected { refusal } => match refusal.take() {
                Some(refusal) => Poll::Ready(Ok((*refusal).into_response())),
                None => Poll::Pending,
            },
        }
    }
}
