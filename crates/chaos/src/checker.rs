//! [`check`]: the verdict on a healed run, from the history the clients
//! wrote, what every cell holds, the audit log and the routing table.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use failover::audit::AuditRecord;
use serde::Serialize;

use crate::audit::{self, AuditAnomaly};
use crate::history::Record;

/// What one cell holds after the heal.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CellView {
    /// Every write id in its replicated state (each comment's id, each
    /// like's id).
    pub ids: BTreeSet<String>,
    /// The digest of its replicated state.
    pub digest: u64,
    /// Whether the routing table has it active (serving its own slots).
    pub active: bool,
}

/// Everything the checker reads.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    /// The clients' history.
    pub history: &'a [Record],
    /// Each replica's view: every cell of the run, or with several
    /// processes per cell, every process (named as the harness likes, for
    /// example `cell/index`), each of which must hold every acknowledged
    /// write; one that could not be read is absent and counts as holding
    /// nothing.
    pub cells: &'a BTreeMap<String, CellView>,
    /// The replicas of the run (the keys `cells` should have).
    pub all_cells: &'a [String],
    /// The whole audit log.
    pub audit: &'a [AuditRecord],
    /// The drain cap the switch enforces.
    pub drain_cap: usize,
}

/// An acknowledged write missing from some cells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lost {
    /// The write's id.
    pub id: String,
    /// The client's request id.
    pub req: String,
    /// Cells that do not hold it.
    pub missing_in: Vec<String>,
}

/// The checker's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Writes the clients saw acknowledged.
    pub acked: usize,
    /// Requests the clients saw fail.
    pub failed: usize,
    /// Acknowledged writes some cell does not hold.
    pub lost: Vec<Lost>,
    /// Cells whose state differs from the others' (by digest or ids).
    pub diverged: Vec<String>,
    /// Ids acknowledged for two different requests, and ids two processes
    /// issued ([`Verdict::add_issued`]).
    pub duplicate_ids: Vec<String>,
    /// Ids a process issued at or below an id it had issued before
    /// ([`Verdict::add_issued`]).
    pub unordered_ids: Vec<String>,
    /// How many ids the processes' logs held ([`Verdict::add_issued`]).
    pub issued: usize,
    /// Broken audit invariants.
    pub audit: Vec<AuditAnomaly>,
    /// Cells not active in the table after the heal (liveness).
    pub not_restored: Vec<String>,
    /// Per region, the longest time between two successes of its users with
    /// a failure between them, ms.
    pub longest_unavailable_ms: BTreeMap<String, u64>,
    /// Requests of compliance-pinned users served by a cell outside their
    /// allowed cells ([`misrouted`]; empty unless the harness checks it).
    pub misrouted: Vec<String>,
}

impl Verdict {
    /// Whether every invariant held.
    pub fn ok(&self) -> bool {
        self.lost.is_empty()
            && self.diverged.is_empty()
            && self.duplicate_ids.is_empty()
            && self.unordered_ids.is_empty()
            && self.audit.is_empty()
            && self.not_restored.is_empty()
            && self.misrouted.is_empty()
    }

    /// Judges the ids every process issued: `logs` holds, per process (each
    /// run of each process its own entry), its ids in the order it issued
    /// them. Every id must be unique across all processes, and each
    /// process's ids strictly increasing.
    pub fn add_issued(&mut self, logs: &BTreeMap<String, Vec<u64>>) {
        let mut by: BTreeMap<u64, &str> = BTreeMap::new();
        for (process, ids) in logs {
            self.issued += ids.len();
            let mut prev: Option<u64> = None;
            for &id in ids {
                if let Some(p) = prev.filter(|p| id <= *p) {
                    self.unordered_ids.push(format!("{process}: {id} after {p}"));
                }
                prev = Some(id);
                if let Some(first) = by.insert(id, process) {
                    self.duplicate_ids.push(format!("{id} (issued by {first} and {process})"));
                }
            }
        }
    }

    /// The longest unavailability over all regions.
    pub fn longest_unavailable(&self) -> Duration {
        Duration::from_millis(self.longest_unavailable_ms.values().copied().max().unwrap_or(0))
    }
}

/// Judges a healed run.
pub fn check(e: Evidence<'_>) -> Verdict {
    let empty = CellView::default();
    let view = |c: &str| e.cells.get(c).unwrap_or(&empty);

    // duplicate ids: one id acknowledged for two requests
    let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
    let mut duplicate_ids = BTreeSet::new();
    let mut acked = 0;
    let mut lost = Vec::new();
    for r in e.history {
        let Some(id) = r.acked_id() else { continue };
        acked += 1;
        match owner.insert(id, &r.req) {
            Some(prev) if prev != r.req => {
                duplicate_ids.insert(id.to_string());
            }
            _ => {}
        }
        let missing_in: Vec<String> = e.all_cells.iter().filter(|c| !view(c).ids.contains(id)).cloned().collect();
        if !missing_in.is_empty() {
            lost.push(Lost { id: id.to_string(), req: r.req.clone(), missing_in });
        }
    }

    // divergence: cells outside the largest group of equal states
    let mut groups: BTreeMap<(u64, &BTreeSet<String>), Vec<String>> = BTreeMap::new();
    for c in e.all_cells {
        let v = view(c);
        groups.entry((v.digest, &v.ids)).or_default().push(c.clone());
    }
    let mut diverged = Vec::new();
    if groups.len() > 1 {
        let keep = groups.values().max_by_key(|g| (g.len(), std::cmp::Reverse(g.first().cloned()))).cloned();
        for g in groups.into_values() {
            if Some(&g) != keep.as_ref() {
                diverged.extend(g);
            }
        }
        diverged.sort();
    }

    let not_restored = e.all_cells.iter().filter(|c| !view(c).active).cloned().collect();

    Verdict {
        acked,
        failed: e.history.iter().filter(|r| !r.ok()).count(),
        lost,
        diverged,
        duplicate_ids: duplicate_ids.into_iter().collect(),
        unordered_ids: Vec::new(),
        issued: 0,
        audit: audit::check(e.audit, e.drain_cap),
        not_restored,
        longest_unavailable_ms: unavailability(e.history),
        misrouted: Vec::new(),
    }
}

/// The requests (ids) of users of a pinned region served by a cell outside
/// it: `allowed` maps each compliance-pinned region to the cells its users
/// may be served by (a region absent from it is not pinned). A success that
/// does not say which cell served it counts as misrouted for a pinned user.
pub fn misrouted(history: &[Record], allowed: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    history
        .iter()
        .filter_map(|r| {
            let cells = allowed.get(&r.region)?;
            match &r.outcome {
                crate::history::Outcome::Ok { cell, .. } if cell.as_ref().is_none_or(|c| !cells.contains(c)) => Some(r.req.clone()),
                _ => None,
            }
        })
        .collect()
}

/// Per region: the longest span from a success to the next success with a
/// failure between them (a run that ends failing counts to its last record).
pub fn unavailability(history: &[Record]) -> BTreeMap<String, u64> {
    let mut by_region: BTreeMap<&str, Vec<(u64, bool)>> = BTreeMap::new();
    for r in history {
        by_region.entry(&r.region).or_default().push((r.at_ms, r.ok()));
    }
    let mut out = BTreeMap::new();
    for (region, mut obs) in by_region {
        obs.sort_unstable();
        let first = obs.first().map_or(0, |o| o.0);
        let mut last_ok = first;
        let mut failing = false;
        let mut longest = 0u64;
        for (at, ok) in &obs {
            if *ok {
                if failing {
                    longest = longest.max(at - last_ok);
                }
                last_ok = *at;
                failing = false;
            } else {
                failing = true;
            }
        }
        if failing {
            longest = longest.max(obs.last().map_or(0, |o| o.0) - last_ok);
        }
        out.insert(region.to_string(), longest);
    }
    out
}
