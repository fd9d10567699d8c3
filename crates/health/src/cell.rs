//! What the hub publishes: [`CellHealth`] per cell in a [`HealthSnapshot`], and
//! [`HealthEvent`]s on changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use cellctx::CellId;
use serde::Serialize;

use crate::probe::{ProbeKind, WaterLevel};

/// State of one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeState {
    /// No result yet.
    Pending,
    /// The last run succeeded.
    Up,
    /// The last run failed or timed out.
    Down,
}

/// One probe's latest status, as listed in `/healthz` bodies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeStatus {
    /// The probe's name (unique within its cell).
    pub name: String,
    /// What it checks.
    pub kind: ProbeKind,
    /// Up, down or pending.
    pub state: ProbeState,
    /// This probe's score 0..=100 (see the crate docs).
    pub score: u8,
    /// Its weight in the cell's score.
    pub weight: u32,
    /// Latency of the last run, in milliseconds.
    pub latency_ms: Option<f64>,
    /// Median latency of the successful runs in the window.
    pub p50_ms: Option<f64>,
    /// P99 latency of the successful runs in the window.
    pub p99_ms: Option<f64>,
    /// Share of successful runs in the window.
    pub success_ratio: Option<f64>,
    /// Runs so far.
    pub runs: u64,
    /// Why the last run failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Pool water level (SQL probes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub water_level: Option<WaterLevel>,
    /// Message backlog (Kafka consumer-group lag).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u64>,
    /// Hit ratio (closure probes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hit_ratio: Option<f64>,
}

/// The health of one cell: the weighted score of its probes.
///
/// `healthy` is `score >= threshold` once every probe has reported at least
/// once; a cell with a pending probe is not healthy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellHealth {
    /// The cell.
    pub cell: CellId,
    /// Health score 0..=100.
    pub score: u8,
    /// Score at or above the threshold, and no probe pending.
    pub healthy: bool,
    /// Each probe's status, in registration order.
    pub probes: Vec<ProbeStatus>,
}

impl CellHealth {
    /// Whether the cell alerts under `threshold`: every probe has reported
    /// and the score is below it.
    pub fn is_alerting(&self, threshold: u8) -> bool {
        self.score < threshold && self.probes.iter().all(|p| p.state != ProbeState::Pending)
    }

    /// The probe named `name`.
    pub fn probe(&self, name: &str) -> Option<&ProbeStatus> {
        self.probes.iter().find(|p| p.name == name)
    }
}

/// A change worth telling subscribers about.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum HealthEvent {
    /// A probe went up or down.
    ProbeChanged {
        /// The cell.
        cell: CellId,
        /// The probe's name.
        probe: String,
        /// Whether it is up now.
        up: bool,
        /// The failure, when down.
        error: Option<String>,
    },
    /// The cell's score fell below the threshold (or its first score was below it).
    Alert {
        /// The cell.
        cell: CellId,
        /// Its score.
        score: u8,
        /// The threshold it fell below.
        threshold: u8,
    },
    /// The cell became healthy (or its first score was healthy).
    Healthy {
        /// The cell.
        cell: CellId,
        /// Its score.
        score: u8,
    },
}

/// The pre-rendered answer for one cell (or all of them).
#[derive(Debug, Clone, Default)]
pub(crate) struct Rendered {
    pub(crate) healthy: bool,
    /// JSON body; empty when healthy (the answer is then `ok`).
    pub(crate) body: Bytes,
}

/// All cells' health at one moment. Cheap to share (`Arc`); read by handlers
/// without locking.
#[derive(Debug, Default)]
pub struct HealthSnapshot {
    pub(crate) version: u64,
    pub(crate) threshold: u8,
    pub(crate) cells: BTreeMap<CellId, Arc<CellHealth>>,
    pub(crate) rendered: HashMap<Arc<str>, Rendered>,
    pub(crate) all: Rendered,
}

impl HealthSnapshot {
    /// Grows by one with every published change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The health of `cell`.
    pub fn get(&self, cell: &CellId) -> Option<&Arc<CellHealth>> {
        self.cells.get(cell)
    }

    /// Every cell, ordered by id.
    pub fn cells(&self) -> impl Iterator<Item = &Arc<CellHealth>> {
        self.cells.values()
    }

    /// The score under which a cell alerts: the hub's
    /// [`ScorePolicy::unhealthy_below`](crate::ScorePolicy::unhealthy_below)
    /// (60 by default).
    pub fn threshold(&self) -> u8 {
        self.threshold
    }

    /// The cells alerting now: every probe has reported and the score is below
    /// [`threshold`](Self::threshold) (the cells a [`HealthEvent::Alert`] was
    /// raised for, with no [`HealthEvent::Healthy`] since). A level-triggered
    /// view for alert sinks: a `watch` of snapshots always holds the current
    /// set, where a lagging event receiver can miss a change.
    pub fn alerting(&self) -> impl Iterator<Item = &Arc<CellHealth>> {
        self.cells.values().filter(|c| c.is_alerting(self.threshold))
    }

    /// True when every cell is healthy (and vacuously when there is none).
    pub fn all_healthy(&self) -> bool {
        self.all.healthy
    }
}
