//! The audit log's invariants: every switch audited once, no switch left
//! half-done, one writer per table version, the drain cap never exceeded, no
//! failback step on a cell that was serving.

use std::collections::{BTreeMap, BTreeSet};

use failover::audit::{AuditRecord, AuditStatus};
use serde::Serialize;

/// One broken audit invariant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "anomaly", rename_all = "snake_case")]
pub enum AuditAnomaly {
    /// A transaction id appears on more than one row.
    DuplicateTx {
        /// The id.
        tx: String,
    },
    /// An intent was never settled (committed or rolled back) after the heal.
    OpenIntent {
        /// The id.
        tx: String,
    },
    /// Two committed switches wrote the same table version: two writers.
    VersionReused {
        /// The version.
        version: u64,
        /// The rows that claim it.
        txs: Vec<String>,
    },
    /// A committed row that does not move the version forward.
    VersionNotAdvanced {
        /// The id.
        tx: String,
    },
    /// A failback step on a cell that was serving all its traffic: the ramp
    /// took traffic from a cell no switch had drained.
    RampOfServingCell {
        /// The id.
        tx: String,
        /// The cell.
        cell: String,
    },
    /// More cells drained at once than the cap allows (forced drains, which
    /// say so in their note, excepted).
    CapExceeded {
        /// The version at which it happened.
        version: u64,
        /// The cells drained then.
        drained: Vec<String>,
    },
}

/// Whether a row's change took effect.
fn took_effect(r: &AuditRecord) -> bool {
    matches!(r.status, AuditStatus::Committed | AuditStatus::Applied)
}

/// Checks `rows` (the whole audit table after the heal); `cap` is the most
/// cells the switch may hold drained at once.
pub fn check(rows: &[AuditRecord], cap: usize) -> Vec<AuditAnomaly> {
    let mut out = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for r in rows {
        *seen.entry(r.tx_id.as_str()).or_default() += 1;
    }
    out.extend(seen.iter().filter(|(_, n)| **n > 1).map(|(tx, _)| AuditAnomaly::DuplicateTx { tx: tx.to_string() }));
    out.extend(
        rows.iter().filter(|r| r.status == AuditStatus::Intent).map(|r| AuditAnomaly::OpenIntent { tx: r.tx_id.clone() }),
    );

    let mut committed: Vec<&AuditRecord> = rows.iter().filter(|r| took_effect(r)).collect();
    committed.sort_by_key(|r| (r.version_after, r.tx_id.clone()));
    let mut by_version: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for r in &committed {
        if r.version_after <= r.version_before {
            out.push(AuditAnomaly::VersionNotAdvanced { tx: r.tx_id.clone() });
        }
        by_version.entry(r.version_after).or_default().push(r.tx_id.clone());
    }
    out.extend(
        by_version
            .into_iter()
            .filter(|(_, txs)| txs.len() > 1)
            .map(|(version, txs)| AuditAnomaly::VersionReused { version, txs }),
    );

    out.extend(
        committed
            .iter()
            .filter(|r| r.from == "state=active" && r.to.contains(" home_slots="))
            .map(|r| AuditAnomaly::RampOfServingCell { tx: r.tx_id.clone(), cell: r.flow.clone() }),
    );

    // replay the cell states in version order
    let mut drained: BTreeSet<String> = BTreeSet::new();
    for r in committed {
        // `state=active home_slots=102/1024` (a failback step) is active:
        // the state is the first word
        let Some(state) = r.to.strip_prefix("state=").and_then(|s| s.split_whitespace().next()) else { continue };
        if state == "active" {
            drained.remove(&r.flow);
        } else {
            drained.insert(r.flow.clone());
            let forced = r.reason.contains(failover::audit::FORCED)
                || r.note.as_deref().is_some_and(|n| n.contains("forced"));
            if drained.len() > cap && !forced {
                out.push(AuditAnomaly::CapExceeded { version: r.version_after, drained: drained.iter().cloned().collect() });
            }
        }
    }
    out
}
