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
    /// Connects to `url`; keys start with `prefix`.
    pub(crate) async fn connect(url: &str, prefix: String) -> Result<Self, DemoError> {
        let client = redis::Client::open(url).map_err(|e| DemoError::Other(format!("redis: {e}")))?;
        let conn = redis::aio::ConnectionManager::new(client).await.map_err(|e| DemoError::Other(format!("redis: {e}")))?;
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
            let mut conn = conn.clone();
            async move {
                let r = tokio::time::timeout(Duration::from_millis(50), async {
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
