//! Background subscribers that feed a sink from the engine, the controller
//! and a health hub, without touching them: each follows a stream they
//! already publish.

use std::sync::Arc;

use health::HealthSnapshot;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::sink::AlertSink;
use crate::driver::EngineHandle;

impl AlertSink {
    /// Follows `engine`'s decisions ([`on_decision`](Self::on_decision));
    /// after missing some (a lagged receiver) it re-reads the plan
    /// ([`on_plan`](Self::on_plan)). Ends when the engine stops.
    pub fn watch_engine(&self, engine: &EngineHandle) -> JoinHandle<()> {
        let mut decisions = engine.decisions();
        let plan = engine.plan_watch();
        let sink = self.clone();
        tokio::spawn(async move {
            loop {
                match decisions.recv().await {
                    Ok(d) => sink.on_decision(&d),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "alert sink missed engine decisions; re-reading the plan");
                        let current = plan.borrow().clone();
                        sink.on_plan(&current);
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        })
    }

    /// Follows a [`Controller`](crate::Controller)'s events
    /// ([`on_controller_event`](Self::on_controller_event)). Ends when the
    /// controller stops.
    #[cfg(feature = "sql")]
    pub fn watch_controller(&self, controller: &crate::ControllerHandle) -> JoinHandle<()> {
        let mut events = controller.events();
        let sink = self.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(e) => sink.on_controller_event(&e),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "alert sink missed controller events");
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        })
    }

    /// Follows a health hub's snapshots (`health::HealthHub::subscribe`,
    /// [`on_health`](Self::on_health)), the current one first. A watch
    /// always holds the latest state, so no change of level is lost. Ends
    /// when the hub is dropped.
    pub fn watch_health(&self, mut snapshots: watch::Receiver<Arc<HealthSnapshot>>) -> JoinHandle<()> {
        let sink = self.clone();
        tokio::spawn(async move {
            loop {
                let snapshot = snapshots.borrow_and_update().clone();
                sink.on_health(&snapshot);
                if snapshots.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}
