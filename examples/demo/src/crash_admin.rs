//! `POST /admin/crash` on a controller, when `DEMO_CLOCK_ADMIN=1` is in its
//! environment (the fault campaign's admin routes; a deployment leaves it
//! unset and the route does not exist): the body `{"point": "after_intent"}`
//! (or `before_record`, `after_commit`) arms a `kill -9` of this process at
//! that point of its next switch, through [`Crashing`], a wrapper of the
//! switch backend's steps; `DELETE /admin/crash` disarms it. What the
//! campaign's `kill_leader` fault uses to kill the leader with a switch in
//! flight, not at a random instant.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use chaos::SwitchPoint;
use failover::audit::{AuditLog, AuditRecord};
use failover::{Change, DryRun, Error, Prepare, Prepared, ReconcileReport, SwitchBackend, SwitchRequest, Term};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// Where the next switch kills this process, if anywhere.
#[derive(Debug, Clone, Default)]
pub(crate) struct Arm(Arc<Mutex<Option<SwitchPoint>>>);

impl Arm {
    fn set(&self, point: Option<SwitchPoint>) {
        if let Ok(mut p) = self.0.lock() {
            *p = point;
        }
    }

    /// `kill -9` of this process when armed at `point`.
    fn strike(&self, point: SwitchPoint) {
        let armed = self.0.lock().map(|p| *p == Some(point)).unwrap_or(false);
        if armed {
            tracing::warn!(?point, "killed by /admin/crash with a switch in flight");
            let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        }
    }
}

/// The body of `POST /admin/crash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CrashAt {
    /// Where in the next switch.
    pub(crate) point: SwitchPoint,
}

/// The routes when [`crate::clock_admin::ENV`] is `1`, else nothing.
pub(crate) fn router(arm: Arm) -> axum::Router {
    match std::env::var(crate::clock_admin::ENV).as_deref() {
        Ok("1") => axum::Router::new().route("/admin/crash", post(set).delete(clear)).with_state(arm),
        _ => axum::Router::new(),
    }
}

async fn set(State(arm): State<Arm>, Json(body): Json<CrashAt>) -> StatusCode {
    tracing::warn!(point = ?body.point, "armed: this controller dies at that point of its next switch");
    arm.set(Some(body.point));
    StatusCode::NO_CONTENT
}

async fn clear(State(arm): State<Arm>) -> StatusCode {
    arm.set(None);
    StatusCode::NO_CONTENT
}

/// A switch backend that dies where [`Arm`] says: before the table write
/// (the intent row exists), before the outcome row (the table is written),
/// or after the switch is recorded. The steps are delegated, `switch` is the
/// trait's, so the production sequence runs through it.
pub(crate) struct Crashing {
    inner: Arc<dyn SwitchBackend>,
    arm: Arm,
}

impl Crashing {
    /// Wraps `inner`.
    pub(crate) fn new(inner: Arc<dyn SwitchBackend>, arm: Arm) -> Self {
        Crashing { inner, arm }
    }
}

impl SwitchBackend for Crashing {
    fn campaign(&self) -> BoxFuture<'_, Result<Term, Error>> {
        self.inner.campaign()
    }

    fn renew(&self) -> BoxFuture<'_, Result<Term, Error>> {
        self.inner.renew()
    }

    fn resign(&self) -> BoxFuture<'_, Result<(), Error>> {
        self.inner.resign()
    }

    fn lease_ttl(&self) -> std::time::Duration {
        self.inner.lease_ttl()
    }

    fn prepare<'a>(&'a self, req: &'a SwitchRequest) -> BoxFuture<'a, Result<Prepare, Error>> {
        self.inner.prepare(req)
    }

    fn write_table<'a>(&'a self, prepared: &'a Prepared) -> BoxFuture<'a, Result<u64, Error>> {
        self.arm.strike(SwitchPoint::AfterIntent);
        self.inner.write_table(prepared)
    }

    fn record_outcome(&self, prepared: Prepared, committed_at_ms: u64) -> BoxFuture<'_, Result<AuditRecord, Error>> {
        Box::pin(async move {
            self.arm.strike(SwitchPoint::BeforeRecord);
            let record = self.inner.record_outcome(prepared, committed_at_ms).await?;
            self.arm.strike(SwitchPoint::AfterCommit);
            Ok(record)
        })
    }

    fn dry_run<'a>(&'a self, change: &'a Change) -> BoxFuture<'a, Result<DryRun, Error>> {
        self.inner.dry_run(change)
    }

    fn reconcile(&self) -> BoxFuture<'_, Result<ReconcileReport, Error>> {
        self.inner.reconcile()
    }

    fn audit(&self) -> &AuditLog {
        self.inner.audit()
    }
}
