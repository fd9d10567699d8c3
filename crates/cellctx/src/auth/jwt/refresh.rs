//! Fetching a JWKS ([`JwksFetch`], [`HttpJwks`]) and refreshing a
//! [`JwksStore`] from it in a background task.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::JwkSet;
use tokio::task::JoinHandle;

use super::keys::{JwksStore, parse_jwks};
use crate::error::ContextError;

/// Largest JWKS document read, in bytes (1 MiB).
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// How long one fetch may take before it counts as failed (10 s).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a key set comes from. Closures returning a future implement it.
pub trait JwksFetch: Send + Sync + 'static {
    /// The current key set.
    fn fetch(&self) -> impl Future<Output = Result<JwkSet, ContextError>> + Send;
}

impl<F, Fut> JwksFetch for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<JwkSet, ContextError>> + Send,
{
    fn fetch(&self) -> impl Future<Output = Result<JwkSet, ContextError>> + Send {
        self()
    }
}

/// A JWKS fetched with `GET` from a URL (hyper-util client): a `200` answer of
/// at most [`MAX_JWKS_BYTES`] within [`FETCH_TIMEOUT`], else an error.
///
/// [`HttpJwks::new`] speaks plain HTTP; for `https` URLs build the client with
/// a TLS connector (e.g. `hyper-rustls`) and use [`HttpJwks::with_client`].
#[derive(Debug, Clone)]
pub struct HttpJwks<C = HttpConnector> {
    client: Client<C, Empty<Bytes>>,
    uri: Uri,
}

impl HttpJwks<HttpConnector> {
    /// Fetches `uri` over plain HTTP.
    pub fn new(uri: Uri) -> Self {
        HttpJwks { client: Client::builder(TokioExecutor::new()).build_http(), uri }
    }
}

impl<C> HttpJwks<C> {
    /// Fetches `uri` with this client.
    pub fn with_client(client: Client<C, Empty<Bytes>>, uri: Uri) -> Self {
        HttpJwks { client, uri }
    }
}

impl<C> JwksFetch for HttpJwks<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    async fn fetch(&self) -> Result<JwkSet, ContextError> {
        let err = |what: String| ContextError::InvalidAuthConfig(format!("JWKS {}: {what}", self.uri));
        let req = Request::get(self.uri.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| err(e.to_string()))?;
        let fetch = async {
            let res = self.client.request(req).await.map_err(|e| err(e.to_string()))?;
            if res.status() != StatusCode::OK {
                return Err(err(format!("status {}", res.status())));
            }
            let body = Limited::new(res.into_body(), MAX_JWKS_BYTES).collect().await.map_err(|e| err(e.to_string()))?;
            parse_jwks(&body.to_bytes())
        };
        tokio::time::timeout(FETCH_TIMEOUT, fetch).await.map_err(|_| err("timed out".into()))?
    }
}

impl JwksStore {
    /// Fetches once and replaces the keys; on error the keys stay as they were.
    pub async fn refresh(&self, source: &impl JwksFetch) -> Result<(), ContextError> {
        let set = source.fetch().await?;
        self.replace(&set);
        Ok(())
    }

    /// Refreshes from `source` now and then every `every`, in a background
    /// task, until the handle is aborted. A failed fetch keeps the last keys
    /// and is logged at `warn`; the request path never waits for a fetch.
    pub fn spawn_refresh(&self, source: impl JwksFetch, every: Duration) -> JoinHandle<()> {
        let store = self.clone();
        let every = every.max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match store.refresh(&source).await {
                    Ok(()) => tracing::debug!(kids = ?store.kids(), "cellctx: JWKS refreshed"),
                    Err(error) => tracing::warn!(%error, "cellctx: JWKS refresh failed, keeping the last keys"),
                }
            }
        })
    }
}
