//! [`ResponseBody`]: the inner service's body, or a small problem document.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::error::ContextError;
use crate::headers::display_name;

pin_project! {
    /// Response body of [`CellContextService`](super::CellContextService): the
    /// inner body unchanged, or the JSON problem document of a rejection.
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Problem { bytes: Option<Bytes> },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        ResponseBody { kind: Kind::Inner { body } }
    }

    /// The inner service's body; `None` for a rejection's problem document.
    pub fn get_ref(&self) -> Option<&B> {
        match &self.kind {
            Kind::Inner { body } => Some(body),
            Kind::Problem { .. } => None,
        }
    }

    /// Consumes `self`, returning the inner service's body; `None` for a rejection.
    pub fn into_inner(self) -> Option<B> {
        match self.kind {
            Kind::Inner { body } => Some(body),
            Kind::Problem { .. } => None,
        }
    }

    pub(crate) fn problem(bytes: Bytes) -> Self {
        let bytes = if bytes.is_empty() { None } else { Some(bytes) };
        ResponseBody { kind: Kind::Problem { bytes } }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Inner { .. } => f.write_str("ResponseBody::Inner"),
            Kind::Problem { bytes } => f.debug_tuple("ResponseBody::Problem").field(bytes).finish(),
        }
    }
}

impl<B: Body<Data = Bytes>> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Problem { bytes } => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Problem { bytes } => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Problem { bytes } => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// Whether the request is gRPC (answered with a `grpc-status` rather than a problem body).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The rejection of a request: HTTP 400/431 with an RFC 9457 problem document
/// naming the header, or for gRPC a trailers-only `INVALID_ARGUMENT`.
pub(crate) fn problem_response<B>(error: &ContextError, grpc: bool) -> Response<ResponseBody<B>> {
    let unauthenticated = matches!(error, ContextError::Unauthenticated(_));
    if grpc {
        let mut res = Response::new(ResponseBody::problem(Bytes::new()));
        let h = res.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", HeaderValue::from_static(if unauthenticated { "16" } else { "3" }));
        if let Ok(msg) = HeaderValue::try_from(error.to_string().replace('%', "%25")) {
            h.insert("grpc-message", msg);
        }
        return res;
    }
    let status = error.status();
    let (kind, title) = match status {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ("oversized-header", "Context header too large"),
        StatusCode::UNAUTHORIZED => ("unauthenticated", "Unauthenticated"),
        _ => ("malformed-header", "Malformed context header"),
    };
    let body = serde_json::json!({
        "type": format!("urn:cellctx:problem:{kind}"),
        "title": title,
        "status": status.as_u16(),
        "header": error.header().map(display_name),
        "detail": error.to_string(),
    });
    let bytes = serde_json::to_vec(&body).map(Bytes::from).unwrap_or_default();
    let mut res = Response::new(ResponseBody::problem(bytes));
    *res.status_mut() = status;
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    if unauthenticated {
        res.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static(r#"Bearer error="invalid_token""#));
    }
    res
}
