//! [`AlertmanagerClient`]: a `tower::Service<Vec<Alert>>` posting to an
//! Alertmanager v2 API (`POST /api/v2/alerts`) with hyper-util's client.

use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::CONTENT_TYPE;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower_service::Service;

use super::payload::Alert;
use crate::error::Error;

/// Longest piece of a rejecting answer's body kept in the error.
const MAX_ERROR_BODY: usize = 512;

/// Posts alert batches as JSON to `<base>/api/v2/alerts` over plain HTTP
/// (HTTP/1.1, pooled connections). A 2xx answer is success; any other status
/// is [`Error::AlertRejected`], a transport failure [`Error::AlertDelivery`]
/// (the sink retries both). For HTTPS, put a TLS proxy in front or give the
/// sink your own `tower::Service<Vec<Alert>>`. Always ready; cheap to clone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), failover::Error> {
/// use failover::alert::{AlertConfig, AlertSink, AlertmanagerClient};
///
/// let client = AlertmanagerClient::try_new("http://alertmanager:9093")?;
/// assert_eq!(client.uri().to_string(), "http://alertmanager:9093/api/v2/alerts");
/// let sink = AlertSink::spawn(AlertConfig::new(), client);
/// // sink.watch_engine(&engine); sink.watch_health(hub.subscribe());
/// # drop(sink); Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct AlertmanagerClient {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: http::Uri,
}

impl AlertmanagerClient {
    /// A client for the Alertmanager at `base` (`http://host:port`, with an
    /// optional path prefix such as `http://host/alertmanager`).
    pub fn try_new(base: &str) -> Result<Self, Error> {
        let bad = |m: String| Error::Config(format!("alertmanager url {base:?}: {m}"));
        let uri: http::Uri = base.parse().map_err(|e: http::uri::InvalidUri| bad(e.to_string()))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("only http:// is supported (use a TLS proxy or your own service)".into()));
        }
        let Some(authority) = uri.authority() else { return Err(bad("no host".into())) };
        if uri.query().is_some() {
            return Err(bad("no query string allowed".into()));
        }
        let prefix = uri.path().trim_end_matches('/');
        let uri = format!("http://{authority}{prefix}/api/v2/alerts").parse().map_err(|e: http::uri::InvalidUri| bad(e.to_string()))?;
        Ok(AlertmanagerClient { client: Client::builder(TokioExecutor::new()).build_http(), uri })
    }

    /// The alerts endpoint requests go to.
    pub fn uri(&self) -> &http::Uri {
        &self.uri
    }
}

/// An error and its sources, `: `-separated (hyper-util's own message is terse).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl Service<Vec<Alert>> for AlertmanagerClient {
    type Response = ();
    type Error = Error;
    type Future = BoxFuture<'static, Result<(), Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, alerts: Vec<Alert>) -> Self::Future {
        let client = self.client.clone();
        let uri = self.uri.clone();
        Box::pin(async move {
            let body = serde_json::to_vec(&alerts).map_err(|e| Error::AlertDelivery(format!("encode: {e}")))?;
            let req = http::Request::post(uri)
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| Error::AlertDelivery(e.to_string()))?;
            let resp = client.request(req).await.map_err(|e| Error::AlertDelivery(chain(&e)))?;
            let status = resp.status();
            let body = match resp.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) if status.is_success() => {
                    return Err(Error::AlertDelivery(format!("reading the answer: {}", chain(&e))));
                }
                Err(_) => Bytes::new(),
            };
            if status.is_success() {
                Ok(())
            } else {
                let text = String::from_utf8_lossy(&body[..body.len().min(MAX_ERROR_BODY)]).into_owned();
                Err(Error::AlertRejected { status: status.as_u16(), body: text })
            }
        })
    }
}
