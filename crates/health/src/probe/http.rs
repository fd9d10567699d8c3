//! [`HttpProbe`]: status, latency and an optional body match.

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{Probe, ProbeFuture, ProbeKind, ProbeOutcome};
use crate::error::HealthError;

/// Largest body read when a body match is configured.
const MAX_BODY: usize = 64 * 1024;

/// `GET`s a URL: up when the status is the expected one (any 2xx by default)
/// and, if set, the body contains a string.
#[derive(Debug, Clone)]
pub struct HttpProbe {
    uri: Uri,
    client: Client<HttpConnector, Empty<Bytes>>,
    expect_status: Option<StatusCode>,
    body_contains: Option<String>,
}

impl HttpProbe {
    /// A probe of an `http://` URL.
    pub fn try_new(url: &str) -> Result<Self, HealthError> {
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| HealthError::InvalidUrl { url: url.to_string(), reason: e.to_string() })?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(HealthError::InvalidUrl { url: url.to_string(), reason: "expected http://host[:port]/path".into() });
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(HttpProbe { uri, client, expect_status: None, body_contains: None })
    }

    /// Requires exactly this status instead of any 2xx.
    pub fn with_expected_status(mut self, status: StatusCode) -> Self {
        self.expect_status = Some(status);
        self
    }

    /// Requires the body (first 64 KiB) to contain `needle`.
    pub fn with_body_contains(mut self, needle: impl Into<String>) -> Self {
        self.body_contains = Some(needle.into());
        self
    }

    /// The probed URL.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    async fn run(&self) -> ProbeOutcome {
        let req = match Request::get(self.uri.clone()).body(Empty::new()) {
            Ok(r) => r,
            Err(e) => return ProbeOutcome::down(e),
        };
        let resp = match self.client.request(req).await {
            Ok(r) => r,
            Err(e) => return ProbeOutcome::down(format!("GET {}: {e}", self.uri)),
        };
        let status = resp.status();
        let status_ok = match self.expect_status {
            Some(s) => status == s,
            None => status.is_success(),
        };
        if !status_ok {
            return ProbeOutcome::down(format!("GET {}: status {status}", self.uri));
        }
        let Some(needle) = &self.body_contains else {
            return ProbeOutcome::up();
        };
        match Limited::new(resp.into_body(), MAX_BODY).collect().await {
            Ok(body) => {
                let body = body.to_bytes();
                if contains(&body, needle.as_bytes()) {
                    ProbeOutcome::up()
                } else {
                    ProbeOutcome::down(format!("GET {}: body does not contain {needle:?}", self.uri))
                }
            }
            Err(e) => ProbeOutcome::down(format!("GET {}: body: {e}", self.uri)),
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

impl Probe for HttpProbe {
    fn kind(&self) -> ProbeKind {
        ProbeKind::Http
    }

    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(self.run())
    }
}
