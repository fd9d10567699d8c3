//! Identity at the edge: who the request is from, read from a verified
//! credential, never from client-chosen headers.
//!
//! An [`Authenticator`] turns a request head into an [`Identity`] (or says
//! there is no credential, or refuses it). [`EdgeAuth`] adds the routes that
//! may go without one ([`AnonymousRoutes`]); mounted on an edge
//! [`CellContextLayer`](crate::CellContextLayer) with
//! [`with_authentication`](crate::CellContextLayer::with_authentication), it
//! decides the request's user, routing key, tenant and region. With the `jwt`
//! feature, [`jwt::JwtAuthenticator`] verifies bearer JWTs against a JWKS.
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::Arc;
//! use cellctx::auth::{AnonymousRoute, AnonymousRoutes, EdgeAuth, Identity, RequestHead};
//! use cellctx::{AuthFailure, CellContext, CellContextLayer};
//! use http::{Method, Request, Response, StatusCode};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // Any scheme: here API keys (with the `jwt` feature, a `JwtAuthenticator`).
//! let api_keys = |head: &RequestHead<'_>| -> Result<Option<Identity>, AuthFailure> {
//!     match head.headers.get("x-api-key").map(|v| v.as_bytes()) {
//!         None => Ok(None),
//!         Some(b"k-alice") => Ok(Some(Identity::try_new("alice").unwrap().with_tenant("acme").unwrap())),
//!         Some(_) => Err(AuthFailure::Refused("unknown api key")),
//!     }
//! };
//! let public = AnonymousRoutes::new().with(AnonymousRoute::prefix(Some(Method::GET), "/public/").unwrap());
//! let svc = ServiceBuilder::new()
//!     .layer(CellContextLayer::edge().with_authentication(EdgeAuth::new(api_keys).with_anonymous(public)))
//!     .service(service_fn(|req: Request<()>| async move {
//!         let ctx = req.extensions().get::<Arc<CellContext>>().unwrap();
//!         let who = ctx.routing_key.as_deref().unwrap_or("anonymous").to_owned();
//!         Ok::<_, Infallible>(Response::new(http_body_util::Full::new(bytes::Bytes::from(who))))
//!     }));
//!
//! // The key decides the user; the client's X-User-ID does not.
//! let req = Request::get("/orders").header("x-api-key", "k-alice").header("x-user-id", "bob").body(()).unwrap();
//! let res = svc.clone().oneshot(req).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! # use http_body_util::BodyExt;
//! assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "alice");
//!
//! // No credential: 401, except on the anonymous routes.
//! let res = svc.clone().oneshot(Request::get("/orders").body(()).unwrap()).await.unwrap();
//! assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(res.headers()["www-authenticate"], r#"Bearer error="invalid_token""#);
//! let res = svc.oneshot(Request::get("/public/posts").body(()).unwrap()).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! # }
//! ```

mod anonymous;
mod bearer;
mod edge;
mod identity;
#[cfg(feature = "jwt")]
pub mod jwt;
mod metrics;

pub use anonymous::{AnonymousRoute, AnonymousRoutes};
pub use bearer::{MAX_CREDENTIAL_LEN, bearer_token};
pub use edge::EdgeAuth;
pub use identity::Identity;
pub use metrics::AUTH_REJECTED;
pub(crate) use metrics::AuthMetrics;

use http::{HeaderMap, Method, Uri};

use crate::error::AuthFailure;

/// The parts of a request an [`Authenticator`] may look at.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI.
    pub uri: &'a Uri,
    /// The headers, as the client sent them (before the edge strips any).
    pub headers: &'a HeaderMap,
}

impl<'a> RequestHead<'a> {
    /// A head from its parts.
    pub fn new(method: &'a Method, uri: &'a Uri, headers: &'a HeaderMap) -> Self {
        RequestHead { method, uri, headers }
    }
}

/// Verifies a request's credential and says who it is from.
///
/// `Ok(None)`: the request carries no credential (the edge answers 401 unless
/// the route is anonymous). `Err(_)`: it carries one that does not verify
/// (401 on every route). Runs on the request path, synchronously: a scheme
/// that needs I/O (introspection, key fetches) does it in a background task
/// and reads the latest result here, as [`jwt::JwtAuthenticator`] does with
/// its key set. Plain closures implement it.
///
/// ```
/// use cellctx::auth::{Authenticator, Identity, RequestHead};
/// use cellctx::AuthFailure;
///
/// let api_keys = |head: &RequestHead<'_>| -> Result<Option<Identity>, AuthFailure> {
///     match head.headers.get("x-api-key").map(|v| v.as_bytes()) {
///         None => Ok(None),
///         Some(b"k-alice") => Ok(Some(Identity::try_new("alice").unwrap())),
///         Some(_) => Err(AuthFailure::Refused("unknown api key")),
///     }
/// };
/// let (method, uri, headers) = (http::Method::GET, http::Uri::from_static("/"), http::HeaderMap::new());
/// assert_eq!(api_keys.authenticate(&RequestHead::new(&method, &uri, &headers)), Ok(None));
/// ```
pub trait Authenticator: Send + Sync + 'static {
    /// The identity the request's credential proves, `None` without a credential.
    fn authenticate(&self, head: &RequestHead<'_>) -> Result<Option<Identity>, AuthFailure>;
}

impl<F> Authenticator for F
where
    F: Fn(&RequestHead<'_>) -> Result<Option<Identity>, AuthFailure> + Send + Sync + 'static,
{
    fn authenticate(&self, head: &RequestHead<'_>) -> Result<Option<Identity>, AuthFailure> {
        self(head)
    }
}
