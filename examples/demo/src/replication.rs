//! What the orchestrator can see of replication: each cell's CRDT state and
//! digest (gRPC `demo.v1.Posts/State`) and its outbox backlog
//! (`/admin/status`), read once at the end of the run and, for the console,
//! once a second while it runs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::cell::pb;
use crate::cells::Cells;
use crate::gateway::{self, HttpClient};

/// Each cell's state over gRPC: `(state JSON, digest)`, `None` when it did not answer.
pub(crate) async fn states(cells: &[(String, u16)]) -> BTreeMap<String, Option<(String, u64)>> {
    let mut out = BTreeMap::new();
    for (id, port) in cells {
        let url = format!("http://127.0.0.1:{port}");
        let got = async {
            let mut c = pb::posts_client::PostsClient::connect(url).await.ok()?;
            let r = c.state(pb::StateRequest {}).await.ok()?.into_inner();
            Some((r.json, r.digest))
        };
        out.insert(id.clone(), tokio::time::timeout(Duration::from_secs(2), got).await.ok().flatten());
    }
    out
}

/// A cell's `/admin/status`, `None` when it did not answer.
async fn status(client: &HttpClient, port: u16) -> Option<serde_json::Value> {
    let url = format!("http://127.0.0.1:{port}/admin/status");
    gateway::get_json(client, &url, Duration::from_millis(500)).await.ok()
}

/// Replication events not yet relayed, summed over the cells (a cell that
/// does not answer counts one).
pub(crate) async fn pending_outbox(client: &HttpClient, cells: &[(String, u16)]) -> i64 {
    let mut total = 0;
    for (_, port) in cells {
        total += status(client, *port).await.map_or(1, |j| j["pending_outbox"].as_i64().unwrap_or(1).max(0));
    }
    total
}

/// One cell's replication, as the console shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct CellReplication {
    /// The digest of its CRDT state.
    pub(crate) digest: Option<u64>,
    /// Its outbox rows not yet relayed to Kafka.
    pub(crate) pending_outbox: Option<i64>,
    /// Remote events it applied.
    pub(crate) applied: Option<u64>,
    /// The routing table version it runs.
    pub(crate) table_version: Option<u64>,
}

/// The latest reading per cell.
pub(crate) type Readings = Arc<Mutex<BTreeMap<String, CellReplication>>>;

/// Reads every live cell's replication once a second until the returned
/// handle is aborted.
pub(crate) fn spawn_poller(cells: Arc<Mutex<Cells>>, client: HttpClient) -> (Readings, tokio::task::JoinHandle<()>) {
    let readings: Readings = Arc::default();
    let out = readings.clone();
    let task = tokio::spawn(async move {
        loop {
            let list = cells.lock().map(|c| c.list()).unwrap_or_default();
            let mut next = BTreeMap::new();
            for (id, ports, alive) in list {
                let mut r = CellReplication::default();
                if let (true, Some(port)) = (alive, ports.first().copied()) {
                    if let Some(j) = status(&client, port).await {
                        r.pending_outbox = j["pending_outbox"].as_i64();
                        r.applied = j["applied"].as_u64();
                        r.table_version = j["table_version"].as_u64();
                    }
                    r.digest = states(&[(id.clone(), port)]).await.remove(&id).flatten().map(|(_, d)| d);
                }
                next.insert(id, r);
            }
            if let Ok(mut g) = readings.lock() {
                *g = next;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    (out, task)
}
