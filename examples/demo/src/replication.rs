//! What the orchestrator can see of replication: each cell's CRDT state and
//! digest (gRPC `demo.v1.Posts/State`) and its outbox backlog
//! (`/admin/status`), read once at the end of the run and, for the console,
//! once a second while it runs. Under load the digests rarely match at one
//! instant, so the console also shows how many writes each cell holds fewer
//! than the most advanced one: its replication lag, in writes.

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
    /// The digest of its CRDT state (hex in JSON: a u64 does not survive a JS number).
    #[serde(serialize_with = "hex")]
    pub(crate) digest: Option<u64>,
    /// Its outbox rows not yet relayed to Kafka.
    pub(crate) pending_outbox: Option<i64>,
    /// Remote events it applied.
    pub(crate) applied: Option<u64>,
    /// The routing table version it runs.
    pub(crate) table_version: Option<u64>,
    /// Writes its state holds (likes plus comments, every post).
    pub(crate) writes: Option<u64>,
}

/// Writes a cell's state JSON holds: every post's like ids plus its comments
/// (the like counter, kept in outbox mode only, counts the same likes).
pub(crate) fn writes_in(state: &str) -> Option<u64> {
    let state: BTreeMap<String, serde_json::Value> = serde_json::from_str(state).ok()?;
    Some(
        state
            .iter()
            .map(|(k, v)| match k.split_once(':').map(|(kind, _)| kind) {
                Some("like_ids" | "comments") => v.as_array().map_or(0, |a| a.len() as u64),
                _ => 0,
            })
            .sum(),
    )
}

fn hex<S: serde::Serializer>(digest: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match digest {
        Some(d) => s.serialize_str(&format!("{d:016x}")),
        None => s.serialize_none(),
    }
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
            // a paused cell answers nothing: not waited for
            let list = cells
                .lock()
                .map(|c| c.list().into_iter().map(|(id, ports, alive)| (alive && !c.paused(&id), id, ports)).collect())
                .unwrap_or_else(|_| Vec::new());
            let mut next = BTreeMap::new();
            for (alive, id, ports) in list {
                let mut r = CellReplication::default();
                if let (true, Some(port)) = (alive, ports.first().copied()) {
                    if let Some(j) = status(&client, port).await {
                        r.pending_outbox = j["pending_outbox"].as_i64();
                        r.applied = j["applied"].as_u64();
                        r.table_version = j["table_version"].as_u64();
                    }
                    if let Some((json, digest)) = states(&[(id.clone(), port)]).await.remove(&id).flatten() {
                        r.digest = Some(digest);
                        r.writes = writes_in(&json);
                    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn writes_count_likes_and_comments() {
        let outbox = r#"{"likes:p":3,"like_ids:p":["a","b","c"],"comments:p":["1","2"],"likes:q":1,"like_ids:q":["d"]}"#;
        assert_eq!(writes_in(outbox), Some(6));
        assert_eq!(writes_in(r#"{"like_ids:p":["a","b","c"],"comments:p":["1","2"]}"#), Some(5), "binlog mode: no counters");
        assert_eq!(writes_in("{}"), Some(0));
        assert_eq!(writes_in("not json"), None);
    }
}
