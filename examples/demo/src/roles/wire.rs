//! What the roles send each other over HTTP: the request helpers and the
//! bodies (JSON).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};

use crate::error::DemoError;
use crate::gateway::HttpClient;

/// The gateway's outcomes since its last report, per cell (`POST /outcomes`
/// on every controller).
pub(crate) type Outcomes = BTreeMap<String, OutcomeCounts>;

/// Requests one cell served well and badly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OutcomeCounts {
    /// Served.
    pub(crate) ok: u64,
    /// Failed (5xx, timeout, connection error, open breaker).
    pub(crate) err: u64,
}

/// One prober's view of one cell (`POST /probes/{prober}` carries them all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CellView {
    /// The cell.
    pub(crate) cell: String,
    /// The prober's verdict.
    pub(crate) healthy: bool,
}

fn other(url: &str, e: impl std::fmt::Display) -> DemoError {
    DemoError::Other(format!("{url}: {e}"))
}

/// Sends `req` and reads the whole answer within `timeout`: status and body.
async fn send(client: &HttpClient, req: http::Request<Full<Bytes>>, timeout: Duration) -> Result<(http::StatusCode, Bytes), DemoError> {
    let url = req.uri().to_string();
    let answer = async {
        let resp = client.request(req).await.map_err(|e| other(&url, e))?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map_err(|e| other(&url, e))?.to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, answer).await.map_err(|_| other(&url, "timeout"))?
}

/// GETs `url`: the body of a 2xx answer.
pub(crate) async fn get(client: &HttpClient, url: &str, timeout: Duration) -> Result<Bytes, DemoError> {
    let req = http::Request::get(url).body(Full::new(Bytes::new())).map_err(|e| other(url, e))?;
    let (status, body) = send(client, req, timeout).await?;
    if !status.is_success() {
        return Err(other(url, format!("{status}: {}", String::from_utf8_lossy(&body))));
    }
    Ok(body)
}

/// POSTs `body` as JSON to `url`; fails unless the answer is 2xx.
pub(crate) async fn post_json(client: &HttpClient, url: &str, body: &impl Serialize, timeout: Duration) -> Result<(), DemoError> {
    let bytes = serde_json::to_vec(body).map_err(|e| other(url, e))?;
    let req = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .map_err(|e| other(url, e))?;
    let (status, body) = send(client, req, timeout).await?;
    if !status.is_success() {
        return Err(other(url, format!("{status}: {}", String::from_utf8_lossy(&body))));
    }
    Ok(())
}

/// POSTs `body` to `path` on every base URL in `to`, all at once; a failure
/// is logged (the next report comes soon).
pub(crate) async fn post_all(client: &HttpClient, to: &[String], path: &str, body: &impl Serialize, timeout: Duration) {
    let sends = to.iter().map(|base| async move {
        let url = format!("{base}{path}");
        if let Err(e) = post_json(client, &url, body, timeout).await {
            tracing::debug!(error = %e, "report not delivered");
        }
    });
    futures::future::join_all(sends).await;
}
