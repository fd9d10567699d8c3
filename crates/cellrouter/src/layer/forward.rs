//! The cross-cell forward as a tower service: [`Forwarder`], the default
//! (hyper-util's pooled client, HTTP/1 and HTTP/2; HTTPS through rustls with
//! the `tls` feature), and how to wrap one (TLS with client certificates, the
//! hop signature, retries, a rate limit) before giving it to the layer with
//! [`CellRouterLayer::with_forwarder`](super::CellRouterLayer::with_forwarder).

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

use super::body::BoxError;

/// The body of a forwarded request, and of the response a [`Forwarder`] gives back.
pub type ForwardBody = UnsyncBoxBody<Bytes, BoxError>;

/// The service that carries a request to another cell's endpoint: the
/// request's URI is the endpoint's absolute URL, its headers carry the context
/// (and the hop counter) the layer wrote. Whatever wraps it sees exactly the
/// request that crosses the link.
pub type Forwarder = BoxCloneSyncService<Request<ForwardBody>, Response<ForwardBody>, BoxError>;

/// The time a forwarded request may take to its response headers unless the
/// layer is told otherwise (Envoy's default route timeout).
pub const DEFAULT_FORWARD_TIMEOUT: Duration = Duration::from_secs(15);

/// Makes a [`Forwarder`] of any service of the same shape (`with_forwarder`'s
/// conversion; public so a wrapped stack can be boxed once and shared).
pub fn forwarder<S, B>(svc: S) -> Forwarder
where
    S: Service<Request<ForwardBody>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    BoxCloneSyncService::new(svc.map_err(Into::into).map_response(|r: Response<B>| r.map(|b| b.map_err(Into::into).boxed_unsync())))
}

/// A forwarder over a hyper-util client with any connector.
pub fn client_forwarder<C>(client: Client<C, ForwardBody>) -> Forwarder
where
    C: Connect + Clone + Send + Sync + 'static,
{
    forwarder(client)
}

/// The default forwarder: a pooled hyper-util client (HTTP/1 and HTTP/2), with
/// TCP_NODELAY; `https` endpoints through rustls with the platform's roots
/// when the `tls` feature is on (without it an `https` endpoint is a forward
/// error that says so).
pub fn default_forwarder() -> Forwarder {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    #[cfg(feature = "tls")]
    {
        http.enforce_http(false);
        match tls_connector(http.clone()) {
            Ok(https) => return client_forwarder(Client::builder(TokioExecutor::new()).build(https)),
            Err(e) => tracing::warn!(error = %e, "no TLS roots: forwarding over plain HTTP only"),
        }
    }
    client_forwarder(Client::builder(TokioExecutor::new()).build(http))
}

/// rustls over `http`, trusting the platform's roots.
#[cfg(feature = "tls")]
fn tls_connector(http: HttpConnector) -> std::io::Result<hyper_rustls::HttpsConnector<HttpConnector>> {
    Ok(hyper_rustls::HttpsConnectorBuilder::new().with_native_roots()?.https_or_http().enable_all_versions().wrap_connector(http))
}
