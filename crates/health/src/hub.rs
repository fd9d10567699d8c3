//! [`HealthHub`]: keeps every probe's window, scores cells and publishes them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use cellctx::CellId;
use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tokio_stream::wrappers::WatchStream;

use crate::cell::{CellHealth, HealthEvent, HealthSnapshot, ProbeState, ProbeStatus, Rendered};
use crate::error::HealthError;
use crate::handlers::{Healthz, Livez, Readyz};
use crate::metrics::Metrics;
use crate::probe::{ProbeKind, ProbeOutcome, ProbeSpec};
use crate::score::ScorePolicy;
use crate::window::ResultWindow;

/// Capacity of the event channel; a subscriber further behind sees `Lagged`.
const EVENT_CAPACITY: usize = 1024;

/// The shared health state: probes report into it, handlers and subscribers
/// read from it. Cheap to clone.
///
/// - [`snapshot`](HealthHub::snapshot): the latest [`HealthSnapshot`], lock free.
/// - [`subscribe`](HealthHub::subscribe): a `watch` of snapshots, updated after
///   every probe result (the per-cell health stream).
/// - [`events`](HealthHub::events): a broadcast of [`HealthEvent`]s (probe
///   up/down, alert below the threshold, back to healthy).
#[derive(Clone)]
pub struct HealthHub {
    inner: Arc<Inner>,
}

struct Inner {
    current: ArcSwap<HealthSnapshot>,
    watch: watch::Sender<Arc<HealthSnapshot>>,
    events: broadcast::Sender<HealthEvent>,
    state: Mutex<State>,
    policy: ScorePolicy,
    metrics: Metrics,
}

#[derive(Default)]
struct State {
    version: u64,
    cells: BTreeMap<CellId, CellSlot>,
}

struct CellSlot {
    probes: Vec<ProbeSlot>,
    healthy: Option<bool>,
    health: Arc<CellHealth>,
    rendered: Rendered,
    key: Arc<str>,
    attrs: [KeyValue; 1],
}

struct ProbeSlot {
    name: Arc<str>,
    kind: ProbeKind,
    weight: u32,
    budget: Duration,
    window: ResultWindow,
    last: Option<(ProbeOutcome, Duration)>,
    runs: u64,
    attrs: Vec<KeyValue>,
}

/// Identifies a registered probe.
#[derive(Debug, Clone)]
pub(crate) struct ProbeKey {
    pub(crate) cell: CellId,
    pub(crate) idx: usize,
}

impl std::fmt::Debug for HealthHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let snap = self.inner.current.load();
        f.debug_struct("HealthHub")
            .field("version", &snap.version)
            .field("cells", &snap.cells.len())
            .field("policy", &self.inner.policy)
            .finish()
    }
}

impl Default for HealthHub {
    fn default() -> Self {
        Self::build(ScorePolicy::default(), &opentelemetry::global::meter("health"))
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl HealthHub {
    /// A hub scoring with `policy`, recording metrics on the global meter `health`.
    pub fn try_new(policy: ScorePolicy) -> Result<Self, HealthError> {
        Self::try_with_meter(policy, &opentelemetry::global::meter("health"))
    }

    /// A hub scoring with `policy`, recording metrics on `meter`.
    pub fn try_with_meter(policy: ScorePolicy, meter: &Meter) -> Result<Self, HealthError> {
        policy.validate()?;
        Ok(Self::build(policy, meter))
    }

    fn build(policy: ScorePolicy, meter: &Meter) -> Self {
        let snap = Arc::new(HealthSnapshot {
            threshold: policy.unhealthy_below,
            all: Rendered { healthy: true, body: Bytes::new() },
            ..Default::default()
        });
        let (watch, _) = watch::channel(snap.clone());
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        HealthHub {
            inner: Arc::new(Inner {
                current: ArcSwap::new(snap),
                watch,
                events,
                state: Mutex::new(State::default()),
                policy,
                metrics: Metrics::new(meter),
            }),
        }
    }

    /// The scoring policy.
    pub fn policy(&self) -> &ScorePolicy {
        &self.inner.policy
    }

    /// The latest snapshot (no lock, no I/O).
    pub fn snapshot(&self) -> Arc<HealthSnapshot> {
        self.inner.current.load_full()
    }

    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<HealthSnapshot>> {
        self.inner.current.load()
    }

    /// The latest health of `cell`.
    pub fn cell(&self, cell: &CellId) -> Option<Arc<CellHealth>> {
        self.inner.current.load().cells.get(cell).cloned()
    }

    /// A `watch` of snapshots, updated after every probe result.
    pub fn subscribe(&self) -> watch::Receiver<Arc<HealthSnapshot>> {
        self.inner.watch.subscribe()
    }

    /// The same as a `Stream` (yields the current snapshot first).
    pub fn stream(&self) -> WatchStream<Arc<HealthSnapshot>> {
        WatchStream::new(self.subscribe())
    }

    /// A receiver of change and alert events from now on.
    pub fn events(&self) -> broadcast::Receiver<HealthEvent> {
        self.inner.events.subscribe()
    }

    /// The `/livez` service.
    pub fn livez(&self) -> Livez {
        Livez::new()
    }

    /// The `/readyz` service (200 when every cell is healthy).
    pub fn readyz(&self) -> Readyz {
        Readyz::new(self.clone())
    }

    /// The `/healthz?cell=ID` service.
    pub fn healthz(&self) -> Healthz {
        Healthz::new(self.clone())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-written in a
        // way that matters more than losing health reporting: keep going.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a probe; its cell appears (pending) in the next snapshot.
    pub(crate) fn register(&self, spec: &ProbeSpec) -> Result<ProbeKey, HealthError> {
        spec.validate()?;
        let mut st = self.lock();
        let slot = st.cells.entry(spec.cell.clone()).or_insert_with(|| CellSlot {
            probes: Vec::new(),
            healthy: None,
            health: Arc::new(CellHealth { cell: spec.cell.clone(), score: 0, healthy: false, probes: Vec::new() }),
            rendered: Rendered::default(),
            key: Arc::from(spec.cell.as_str()),
            attrs: [KeyValue::new("cell", spec.cell.to_string())],
        });
        if slot.probes.iter().any(|p| p.name == spec.name) {
            return Err(HealthError::InvalidConfig(format!("duplicate probe {}/{}", spec.cell, spec.name)));
        }
        let kind = spec.probe.kind();
        slot.probes.push(ProbeSlot {
            name: spec.name.clone(),
            kind,
            weight: spec.weight,
            budget: spec.latency_budget,
            window: ResultWindow::new(self.inner.policy.window),
            last: None,
            runs: 0,
            attrs: vec![
                KeyValue::new("cell", spec.cell.to_string()),
                KeyValue::new("probe", spec.name.to_string()),
                KeyValue::new("kind", kind.as_str()),
            ],
        });
        let key = ProbeKey { cell: spec.cell.clone(), idx: slot.probes.len() - 1 };
        let mut events = Vec::new();
        self.rescore(&mut st, &spec.cell, &mut events);
        self.publish(&mut st);
        drop(st);
        Ok(key)
    }

    /// Records one run of a probe and publishes the new state.
    pub(crate) fn record(&self, key: &ProbeKey, outcome: ProbeOutcome, latency: Duration) {
        let m = &self.inner.metrics;
        let mut events = Vec::new();
        let mut st = self.lock();
        let Some(cell) = st.cells.get_mut(&key.cell) else { return };
        let Some(p) = cell.probes.get_mut(key.idx) else { return };
        let was_up = p.last.as_ref().map(|(o, _)| o.ok);
        p.window.push(outcome.ok, latency);
        p.runs += 1;
        m.duration.record(latency.as_secs_f64(), &p.attrs);
        m.up.record(u64::from(outcome.ok), &p.attrs);
        if let Some(w) = outcome.water_level {
            m.water_level.record(w.ratio(), &p.attrs);
        }
        if let Some(b) = outcome.backlog {
            m.backlog.record(b, &p.attrs);
        }
        if was_up != Some(outcome.ok) {
            tracing::info!(cell = %key.cell, probe = %p.name, up = outcome.ok, error = ?outcome.error, "probe changed");
            events.push(HealthEvent::ProbeChanged {
                cell: key.cell.clone(),
                probe: p.name.to_string(),
                up: outcome.ok,
                error: outcome.error.clone(),
            });
        }
        p.last = Some((outcome, latency));
        self.rescore(&mut st, &key.cell, &mut events);
        self.publish(&mut st);
        // Under the lock, after the snapshot: events come in state order and a
        // receiver reading the snapshot on an event sees that state or a later one.
        for e in events {
            // No subscriber is fine.
            let _ = self.inner.events.send(e);
        }
        drop(st);
    }

    fn rescore(&self, st: &mut State, cell_id: &CellId, events: &mut Vec<HealthEvent>) {
        let policy = &self.inner.policy;
        let Some(cell) = st.cells.get_mut(cell_id) else { return };
        let mut statuses = Vec::with_capacity(cell.probes.len());
        let mut pending = false;
        for p in &cell.probes {
            let ratio = p.window.success_ratio();
            let p99 = p.window.p99();
            let (state, score, last_lat, outcome) = match &p.last {
                None => {
                    pending = true;
                    (ProbeState::Pending, 0, None, None)
                }
                Some((o, lat)) => {
                    let s = policy.probe_score(o, ratio.unwrap_or(0.0), p99, p.budget);
                    (if o.ok { ProbeState::Up } else { ProbeState::Down }, s, Some(*lat), Some(o))
                }
            };
            statuses.push(ProbeStatus {
                name: p.name.to_string(),
                kind: p.kind,
                state,
                score,
                weight: p.weight,
                latency_ms: last_lat.map(ms),
                p50_ms: p.window.p50().map(ms),
                p99_ms: p99.map(ms),
                success_ratio: ratio,
                runs: p.runs,
                error: outcome.and_then(|o| o.error.clone()),
                water_level: outcome.and_then(|o| o.water_level),
                backlog: outcome.and_then(|o| o.backlog),
                hit_ratio: outcome.and_then(|o| o.hit_ratio),
            });
        }
        let score = if pending {
            0
        } else {
            policy.cell_score(statuses.iter().map(|s| (s.score, s.weight)))
        };
        let healthy = !pending && score >= policy.unhealthy_below;
        let health = CellHealth { cell: cell_id.clone(), score, healthy, probes: statuses };
        if !pending {
            self.inner.metrics.score.record(u64::from(score), &cell.attrs);
            if cell.healthy != Some(healthy) {
                if healthy {
                    tracing::info!(cell = %cell_id, score, "cell healthy");
                    events.push(HealthEvent::Healthy { cell: cell_id.clone(), score });
                } else {
                    tracing::warn!(cell = %cell_id, score, threshold = policy.unhealthy_below, "cell health alert");
                    self.inner.metrics.alerts.add(1, &cell.attrs);
                    events.push(HealthEvent::Alert { cell: cell_id.clone(), score, threshold: policy.unhealthy_below });
                }
                cell.healthy = Some(healthy);
            }
        }
        cell.rendered = Rendered { healthy, body: if healthy { Bytes::new() } else { to_json(&health) } };
        cell.health = Arc::new(health);
    }

    fn publish(&self, st: &mut State) {
        st.version += 1;
        let mut cells = BTreeMap::new();
        let mut rendered = HashMap::with_capacity(st.cells.len());
        let mut all_healthy = true;
        for (id, c) in &st.cells {
            cells.insert(id.clone(), c.health.clone());
            rendered.insert(c.key.clone(), c.rendered.clone());
            all_healthy &= c.rendered.healthy;
        }
        let all = if all_healthy {
            Rendered { healthy: true, body: Bytes::new() }
        } else {
            #[derive(Serialize)]
            struct All<'a> {
                healthy: bool,
                cells: Vec<&'a CellHealth>,
            }
            let body = to_json(&All { healthy: false, cells: cells.values().map(|c| &**c).collect() });
            Rendered { healthy: false, body }
        };
        let threshold = self.inner.policy.unhealthy_below;
        let snap = Arc::new(HealthSnapshot { version: st.version, threshold, cells, rendered, all });
        self.inner.current.store(snap.clone());
        self.inner.watch.send_replace(snap);
    }
}

fn to_json<T: Serialize>(v: &T) -> Bytes {
    match serde_json::to_vec(v) {
        Ok(b) => Bytes::from(b),
        Err(e) => Bytes::from(format!("{{\"error\":\"serialize: {e}\"}}")),
    }
}
