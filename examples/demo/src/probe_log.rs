//! The probers' probe transitions over the run, for the SLA gap attribution:
//! every `health::HealthEvent::ProbeChanged` of the first prober's hub, stamped
//! with the wall clock when it was seen.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use failover::audit::epoch_ms;
use failover::sla::attribution::ProbeChange;
use health::HealthHub;
use tokio::sync::broadcast::error::RecvError;

/// Probe changes seen so far (times in ms since the Unix epoch).
#[derive(Debug, Clone, Default)]
pub(crate) struct ProbeLog(Arc<Mutex<Vec<ProbeChange>>>);

impl ProbeLog {
    /// Records `hub`'s probe changes from now on (until the hub is dropped).
    pub(crate) fn record(hub: &HealthHub) -> Self {
        let log = ProbeLog::default();
        let out = log.clone();
        let mut events = hub.events();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(e) => {
                        if let (Some(c), Ok(mut v)) = (ProbeChange::from_event(epoch_ms(SystemTime::now()), &e), log.0.lock()) {
                            v.push(c);
                        }
                    }
                    Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "probe log lagged"),
                    Err(RecvError::Closed) => return,
                }
            }
        });
        out
    }

    /// The changes with times in ms since `t0` (earlier ones at 0).
    pub(crate) fn since(&self, t0: SystemTime) -> Vec<ProbeChange> {
        let t0 = epoch_ms(t0);
        let v = self.0.lock().map(|v| v.clone()).unwrap_or_default();
        v.into_iter().map(|c| ProbeChange { at_ms: c.at_ms.saturating_sub(t0), ..c }).collect()
    }
}
