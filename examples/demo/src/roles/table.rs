//! The routing table in force, as every role other than the controller gets
//! it: from etcd (`ETCD_ENDPOINTS`), from a controller's `GET /table` (long
//! poll: the answer comes as soon as the table is newer than `?after=V`) or
//! from a table file a controller on the same host writes.

use std::path::PathBuf;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cellrouter::TableStore;
use cellrouter::source::{FileSource, TableSource};

use crate::error::DemoError;
use crate::gateway::HttpClient;

/// How long `GET /table?after=V` holds the request when nothing changes.
const LONG_POLL: Duration = Duration::from_secs(10);
/// How long a role waits for its first table at start.
const FIRST_TABLE: Duration = Duration::from_secs(30);

/// Where a role reads the routing table (ignored when `ETCD_ENDPOINTS` is set).
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct TableArgs {
    /// A controller's table URL (`http://HOST:PORT/table`), followed by long poll.
    #[arg(long, value_name = "URL")]
    pub(crate) table_url: Option<String>,
    /// A table file a controller on this host writes (`demo controller --table-file`).
    #[arg(long, value_name = "FILE")]
    pub(crate) table_file: Option<PathBuf>,
}

impl TableArgs {
    /// Feeds `store` from etcd (under `run_id`'s key), the URL or the file,
    /// in that order of preference; returns once the first table is in.
    pub(crate) async fn follow(&self, run_id: &str, store: &TableStore) -> Result<(), DemoError> {
        if let Some(endpoints) = crate::etcd::endpoints()? {
            #[cfg(feature = "etcd")]
            crate::etcd::spawn_source(endpoints, run_id, store)?;
            #[cfg(not(feature = "etcd"))]
            match endpoints {}
        } else if let Some(url) = &self.table_url {
            tokio::spawn(follow_url(crate::gateway::http_client(), url.clone(), store.clone()));
        } else if let Some(path) = &self.table_file {
            let source = FileSource::new(path.clone()).with_interval(Duration::from_millis(10));
            // the file may not be written yet: the source picks it up when it is
            let _ = source.load_into(store);
            tokio::spawn(source.run(store.clone()));
        } else {
            return Err(DemoError::Config("no routing table: give --table-url or --table-file, or set ETCD_ENDPOINTS".into()));
        }
        let _ = run_id;
        let mut rx = store.subscribe();
        tokio::time::timeout(FIRST_TABLE, rx.wait_for(|t| t.is_some()))
            .await
            .map_err(|_| DemoError::Other(format!("no routing table within {FIRST_TABLE:?}")))?
            .map_err(|e| DemoError::Other(e.to_string()))?;
        Ok(())
    }
}

/// Follows a controller's `GET /table` into `store`, forever.
pub(crate) async fn follow_url(client: HttpClient, url: String, store: TableStore) {
    loop {
        let after = store.version().unwrap_or(0);
        let got = crate::roles::wire::get(&client, &format!("{url}?after={after}"), LONG_POLL + Duration::from_secs(2)).await;
        match got.and_then(|b| cellrouter::source::decode(&b).map_err(DemoError::from)) {
            Ok(table) if table.version > after => {
                if let Err(e) = store.store(table) {
                    tracing::warn!(error = %e, "routing table refused");
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "routing table not read");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// `?after=V`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct After {
    after: Option<u64>,
}

/// `GET /table[?after=V]`: the table in `store`, once its version is above `V`
/// (or [`LONG_POLL`] passed).
pub(crate) async fn serve_table(State(store): State<TableStore>, Query(q): Query<After>) -> Response {
    let after = q.after.unwrap_or(0);
    let mut rx = store.subscribe();
    let newer = rx.wait_for(|t| t.as_ref().is_some_and(|t| t.version() > after));
    let _ = tokio::time::timeout(LONG_POLL, newer).await;
    let Some(t) = store.current() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no routing table yet").into_response();
    };
    match cellrouter::source::encode(t.table()) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
