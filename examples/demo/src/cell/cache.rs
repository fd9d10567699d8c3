//! The optional Redis read cache (`DEMO_REDIS_URL`), called through a circuit
//! breaker: when Redis fails the breaker opens and reads go straight to the
//! replica instead of waiting on a dead cache.

use std::time::Duration;

use breaker::{BreakerConfig, CircuitBreakerLayer, ErrorsAreFailures, SlidingWindowConfig, WaitConfig, WindowConfig};
use redis::AsyncCommands;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceBuilder, ServiceExt};

use super::posts::PostView;
use crate::error::DemoError;

/// A cache command.
#[derive(Debug, Clone)]
enum Cmd {
    Get(String),
    Put(String, String),
    Del(String),
}

/// The cache client (cheap to clone).
#[derive(Clone)]
pub(crate) struct Cache {
    svc: BoxCloneSyncService<Cmd, Option<String>, BoxError>,
    prefix: String,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl Cache {
    /// A cache at `url` (a bad URL is an error); keys start with `prefix`.
    /// It connects at its first use, not here: a cell starts while Redis is
    /// down (reads then go to the replica), found by the fault campaign.
    pub(crate) async fn connect(url: &str, prefix: String) -> Result<Self, DemoError> {
        let client = redis::Client::open(url).map_err(|e| DemoError::Other(format!("redis: {e}")))?;
        let conn: std::sync::Arc<tokio::sync::OnceCell<redis::aio::ConnectionManager>> = Default::default();
        let config = BreakerConfig::sliding(SlidingWindowConfig {
            window: WindowConfig::Count { size: 20 },
            minimum_calls: 5,
            failure_rate_threshold: Some(50.0),
            wait: WaitConfig::Fixed { wait: Duration::from_secs(1) },
            ..Default::default()
        });
        let layer = CircuitBreakerLayer::new("redis-cache", config)
            .map_err(|e| DemoError::Other(format!("breaker: {e}")))?
            .with_classifier(ErrorsAreFailures);
        let svc = ServiceBuilder::new().layer(layer).service_fn(move |cmd: Cmd| {
            let (conn, client) = (conn.clone(), client.clone());
            async move {
                let r = tokio::time::timeout(Duration::from_millis(50), async {
                    let mut conn = conn.get_or_try_init(|| redis::aio::ConnectionManager::new(client)).await?.clone();
                    match cmd {
                        Cmd::Get(k) => conn.get::<_, Option<String>>(k).await,
                        Cmd::Put(k, v) => conn.set_ex::<_, _, ()>(k, v, 1).await.map(|_| None),
                        Cmd::Del(k) => conn.del::<_, ()>(k).await.map(|_| None),
                    }
                })
                .await;
                match r {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(e)) => Err(BoxError::from(e)),
                    Err(_) => Err(BoxError::from("redis timeout")),
                }
            }
        });
        Ok(Cache { svc: BoxCloneSyncService::new(svc), prefix })
    }

    fn key(&self, post: &str) -> String {
        format!("{}{post}", self.prefix)
    }

    /// The cached view of `post` (a miss, an error and an open breaker all read as `None`).
    pub(crate) async fn get(&self, post: &str) -> Option<PostView> {
        let raw = self.svc.clone().oneshot(Cmd::Get(self.key(post))).await.ok()??;
        serde_json::from_str(&raw).ok()
    }

    /// Caches `view` for a second.
    pub(crate) async fn put(&self, view: &PostView) {
        if let Ok(v) = serde_json::to_string(view) {
            let _ = self.svc.clone().oneshot(Cmd::Put(self.key(&view.post), v)).await;
        }
    }

    /// Drops the cached view of `post` after a write.
    pub(crate) async fn invalidate(&self, post: &str) {
        let _ = self.svc.clone().oneshot(Cmd::Del(self.key(post))).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Regression: a cell restarted while Redis was down exited at start
    /// (the cache connected there). Now the cache comes up without Redis and
    /// every read is a miss, answered by the replica.
    #[tokio::test]
    async fn the_cache_starts_without_redis_and_reads_miss() {
        // nothing listens on a port just released
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cache = Cache::connect(&format!("redis://127.0.0.1:{port}"), "t:".into()).await.expect("no connection at start");
        assert_eq!(cache.get("post-1").await, None);
        let view = PostView { post: "post-1".into(), likes: 1, comments: vec![], cell: "a".into() };
        cache.put(&view).await;
        cache.invalidate("post-1").await;
        assert_eq!(cache.get("post-1").await, None);
    }
}
