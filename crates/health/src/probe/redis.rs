//! [`RedisProbe`]: `PING` through a connection manager.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

use super::{Probe, ProbeFuture, ProbeKind, ProbeOutcome};
use crate::error::HealthError;

/// Sends `PING` through a [`ConnectionManager`]; P50/P99 come from the result
/// window (the seed's default budget is P99 < 50 ms).
///
/// The connection is opened on the first run and dropped after a failure, so a
/// Redis that was down when the probe started, or that went away and came back,
/// is picked up on the next run.
pub struct RedisProbe {
    client: redis::Client,
    conn: Mutex<Option<ConnectionManager>>,
    connect_timeout: Duration,
}

impl std::fmt::Debug for RedisProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisProbe")
            .field("addr", &self.client.get_connection_info().addr)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisProbe {
    /// A probe of a `redis://` URL.
    pub fn try_new(url: &str) -> Result<Self, HealthError> {
        let client = redis::Client::open(url)
            .map_err(|e| HealthError::InvalidUrl { url: url.to_string(), reason: e.to_string() })?;
        Ok(RedisProbe { client, conn: Mutex::new(None), connect_timeout: Duration::from_millis(500) })
    }

    /// Timeout of one connection attempt and of one response (default 500 ms).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    async fn run(&self) -> ProbeOutcome {
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            let config = ConnectionManagerConfig::new()
                .set_number_of_retries(0)
                .set_connection_timeout(self.connect_timeout)
                .set_response_timeout(self.connect_timeout);
            match ConnectionManager::new_with_config(self.client.clone(), config).await {
                Ok(c) => *guard = Some(c),
                Err(e) => return ProbeOutcome::down(format!("connect: {e}")),
            }
        }
        let Some(conn) = guard.as_mut() else {
            return ProbeOutcome::down("no connection");
        };
        match redis::cmd("PING").query_async::<String>(conn).await {
            Ok(pong) if pong == "PONG" => ProbeOutcome::up(),
            Ok(other) => ProbeOutcome::down(format!("PING answered {other:?}")),
            Err(e) => {
                *guard = None;
                ProbeOutcome::down(format!("PING: {e}"))
            }
        }
    }
}

impl Probe for RedisProbe {
    fn kind(&self) -> ProbeKind {
        ProbeKind::Redis
    }

    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(self.run())
    }
}
