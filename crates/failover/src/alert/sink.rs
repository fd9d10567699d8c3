//! [`AlertSink`]: deduplicates alerts by labels, queues them (bounded, oldest
//! dropped) and hands them to a background task that sends them.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cellctx::CellId;
use opentelemetry::metrics::Meter;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower_service::Service;

use super::config::AlertConfig;
use super::kind::AlertKind;
use super::metrics::AlertMetrics;
use super::payload::{Alert, Labels};
use super::queue::Queue;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sends alerts to a receiver without ever making its callers wait.
///
/// Callers (the engine and controller subscribers, a health watcher, your
/// code) only take a short lock, update the firing set and enqueue; one
/// background task per sink sends batches to the receiver, any
/// `tower::Service<Vec<Alert>>` ([`AlertmanagerClient`](super::AlertmanagerClient)
/// for Alertmanager's `POST /api/v2/alerts`, feature `alerts-http`).
///
/// - **De-duplication**: alerts are identified by their labels. While an
///   alert fires, firing it again within the repeat interval sends nothing
///   (`failover.alerts.deduplicated`); the sink sends every still-firing
///   alert again once per interval, so Alertmanager does not time it out.
/// - **Resolve**: resolving a firing alert sends the same labels, annotations
///   and `startsAt` with `endsAt` set; resolving an alert that is not firing
///   sends nothing.
/// - **Bounded queue**: when the receiver fails, the batch goes back in front
///   of the queue and is retried with exponential back-off; when the queue is
///   full the oldest alert is dropped (`failover.alerts.dropped`,
///   [`dropped`](Self::dropped)).
///
/// Clones share the sink. The sender task stops when the last clone is
/// dropped (alerts still queued are lost then). One receiver per sink: to send
/// to two, make two sinks and subscribe both.
#[derive(Clone)]
pub struct AlertSink {
    pub(crate) shared: Arc<Shared>,
    _task: Arc<TaskGuard>,
}

struct TaskGuard(JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) struct Shared {
    config: AlertConfig,
    state: Mutex<State>,
    wake: Notify,
    metrics: AlertMetrics,
}

struct State {
    queue: Queue,
    firing: HashMap<Labels, Firing>,
}

struct Firing {
    alert: Alert,
    last_sent: Instant,
}

impl fmt::Debug for AlertSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertSink")
            .field("config", &self.shared.config)
            .field("queued", &self.queued())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl AlertSink {
    /// A sink sending to `receiver`, recording metrics on the global meter
    /// `failover`. Spawns the sender task: call it inside a tokio runtime.
    pub fn spawn<S>(config: AlertConfig, receiver: S) -> Self
    where
        S: Service<Vec<Alert>> + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
    {
        Self::spawn_with_meter(config, receiver, &opentelemetry::global::meter("failover"))
    }

    /// [`spawn`](Self::spawn), recording metrics on `meter`.
    pub fn spawn_with_meter<S>(config: AlertConfig, receiver: S, meter: &Meter) -> Self
    where
        S: Service<Vec<Alert>> + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
    {
        let shared = Arc::new(Shared {
            state: Mutex::new(State { queue: Queue::new(config.queue_capacity()), firing: HashMap::new() }),
            config,
            wake: Notify::new(),
            metrics: AlertMetrics::new(meter),
        });
        let task = tokio::spawn(send_loop(Arc::clone(&shared), receiver));
        AlertSink { shared, _task: Arc::new(TaskGuard(task)) }
    }

    /// The configuration.
    pub fn config(&self) -> &AlertConfig {
        &self.shared.config
    }

    /// Alerts delivered so far.
    pub fn sent(&self) -> u64 {
        self.shared.metrics.sent_total.load(Ordering::Relaxed)
    }

    /// Alerts dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.metrics.dropped_total.load(Ordering::Relaxed)
    }

    /// Alerts not sent again within the repeat interval so far.
    pub fn deduplicated(&self) -> u64 {
        self.shared.metrics.deduplicated_total.load(Ordering::Relaxed)
    }

    /// Failed requests to the receiver so far.
    pub fn send_failures(&self) -> u64 {
        self.shared.metrics.failures_total.load(Ordering::Relaxed)
    }

    /// Alerts waiting in the queue (not counting a batch being sent).
    pub fn queued(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// The label sets firing now, sorted.
    pub fn firing(&self) -> Vec<Labels> {
        let mut v: Vec<Labels> = self.shared.lock().firing.keys().cloned().collect();
        v.sort();
        v
    }

    /// The labels of `kind` about `cell` (and `origin`, for replication lag).
    pub fn labels(&self, kind: AlertKind, cell: &CellId, origin: Option<&CellId>) -> Labels {
        let mut labels = self.shared.config.labels().clone();
        labels.insert("alertname".into(), kind.alertname().into());
        labels.insert("severity".into(), kind.severity().into());
        labels.insert("cell".into(), cell.to_string());
        if let Some(origin) = origin {
            labels.insert("origin".into(), origin.to_string());
        }
        labels
    }

    /// Fires `kind` about `cell` (see the type's docs for de-duplication).
    pub(crate) fn fire(&self, kind: AlertKind, cell: &CellId, origin: Option<&CellId>, annotations: Labels) {
        self.fire_labels(self.labels(kind, cell, origin), annotations);
    }

    /// Resolves `kind` about `cell` if it fires; `note` is added to its annotations.
    pub(crate) fn resolve(&self, kind: AlertKind, cell: &CellId, origin: Option<&CellId>, note: Option<&str>) {
        self.resolve_labels(&self.labels(kind, cell, origin), note);
    }

    pub(crate) fn fire_labels(&self, labels: Labels, annotations: Labels) {
        let now = Instant::now();
        let repeat = self.shared.config.repeat_interval();
        let mut st = self.shared.lock();
        let alert = match st.firing.get_mut(&labels) {
            Some(f) if now < f.last_sent + repeat => {
                f.alert.annotations = annotations;
                drop(st);
                self.shared.metrics.deduplicated(labels.get("alertname").map_or("", String::as_str));
                return;
            }
            Some(f) => {
                f.alert.annotations = annotations;
                f.last_sent = now;
                f.alert.clone()
            }
            None => {
                let alert = Alert {
                    labels: labels.clone(),
                    annotations,
                    starts_at: cellclock::now(),
                    ends_at: None,
                    generator_url: self.shared.config.generator_url().map(str::to_string),
                };
                st.firing.insert(labels, Firing { alert: alert.clone(), last_sent: now });
                tracing::info!(alert = alert.name(), labels = ?alert.labels, "alert firing");
                alert
            }
        };
        self.shared.enqueue(st, alert);
    }

    pub(crate) fn resolve_labels(&self, labels: &Labels, note: Option<&str>) {
        let mut st = self.shared.lock();
        let Some(firing) = st.firing.remove(labels) else { return };
        let mut alert = firing.alert;
        alert.ends_at = Some(cellclock::now());
        if let Some(note) = note {
            alert.annotations.insert("resolution".into(), note.into());
        }
        tracing::info!(alert = alert.name(), labels = ?alert.labels, "alert resolved");
        self.shared.enqueue(st, alert);
    }

    /// Resolves every firing alert named `kind` whose `cell` label `keep`
    /// rejects.
    pub(crate) fn resolve_where(&self, kind: AlertKind, keep: impl Fn(&str) -> bool) {
        let stale: Vec<Labels> = self
            .shared
            .lock()
            .firing
            .keys()
            .filter(|l| l.get("alertname").map(String::as_str) == Some(kind.alertname()))
            .filter(|l| !keep(l.get("cell").map_or("", String::as_str)))
            .cloned()
            .collect();
        for labels in stale {
            self.resolve_labels(&labels, None);
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enqueue(&self, mut st: MutexGuard<'_, State>, alert: Alert) {
        let dropped = st.queue.push(alert);
        drop(st);
        self.metrics.dropped(dropped);
        self.wake.notify_one();
    }

    /// Queues every firing alert last sent a repeat interval ago or more.
    fn repeat_due(&self, now: Instant) {
        let repeat = self.config.repeat_interval();
        let mut st = self.lock();
        let due: Vec<Alert> = st
            .firing
            .values_mut()
            .filter(|f| f.last_sent + repeat <= now)
            .map(|f| {
                f.last_sent = now;
                f.alert.clone()
            })
            .collect();
        let dropped: u64 = due.into_iter().map(|a| st.queue.push(a)).sum();
        drop(st);
        self.metrics.dropped(dropped);
    }

    /// When the next firing alert is due again.
    fn next_repeat(&self) -> Option<Instant> {
        let repeat = self.config.repeat_interval();
        self.lock().firing.values().map(|f| f.last_sent + repeat).min()
    }
}

/// The sender: takes a batch, sends it; on failure puts it back, backs off
/// and retries; when idle, waits for new alerts or the next repeat.
async fn send_loop<S>(shared: Arc<Shared>, mut receiver: S)
where
    S: Service<Vec<Alert>> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
{
    let (initial, max) = shared.config.retry_backoff();
    let mut backoff = initial;
    loop {
        let batch = shared.lock().queue.take(shared.config.batch());
        if batch.is_empty() {
            let due = shared.next_repeat();
            tokio::select! {
                () = shared.wake.notified() => {}
                () = sleep_until(due) => shared.repeat_due(Instant::now()),
            }
            continue;
        }
        match send(&mut receiver, batch.clone(), shared.config.send_timeout()).await {
            Ok(()) => {
                for alert in &batch {
                    shared.metrics.sent(alert.name(), alert.status());
                }
                backoff = initial;
            }
            Err(e) => {
                shared.metrics.failure();
                tracing::warn!(error = %e, alerts = batch.len(), retry_in = ?backoff, "cannot send alerts; retrying");
                let dropped = shared.lock().queue.put_back(batch);
                shared.metrics.dropped(dropped);
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2).min(max);
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn send<S>(receiver: &mut S, alerts: Vec<Alert>, timeout: Duration) -> Result<(), BoxError>
where
    S: Service<Vec<Alert>>,
    S::Error: Into<BoxError>,
{
    let call = async {
        std::future::poll_fn(|cx| receiver.poll_ready(cx)).await.map_err(Into::into)?;
        receiver.call(alerts).await.map_err(Into::into)
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map(|_| ()),
        Err(_) => Err(format!("no answer within {timeout:?}").into()),
    }
}
