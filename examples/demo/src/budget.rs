//! Where the error budget went: every failed request charged to the cell its
//! user is homed in and to the phase of that cell's switch it fell in, as the
//! original pipeline's "SLA gap attribution" does.
//!
//! The phases of a drain are `failover::sla::SwitchPhases`', from the audit
//! row's timestamps (ms since the run started), with one before and one
//! after: `notice` (the kill -> the first bad observation; killed cells only),
//! `detect` (-> the engine's decision), `decide` (-> intent row), `commit`
//! (-> table written), `apply` (-> every router runs it), `reroute` (the
//! second after the apply, while routers and clients catch up). A failback's
//! window (intent -> applied) is `failback`. Anything else is `steady`.
//!
//! [`sla_attribution`] is the same question asked through the library:
//! `failover::sla::attribution` charges each failure and each bad second to
//! (cell, switch + phase), (cell, down probe) or (cell, unattributed), from
//! the audit rows and the probers' probe transitions.

use std::collections::BTreeMap;
use std::time::Duration;

use failover::audit::AuditRecord;
use failover::sla::attribution::{Attribution, AttributionReport, ProbeChange, RequestSample, SwitchSpan};
use serde::Serialize;

use crate::load::{Record, User};
use crate::report::AuditRow;

/// Failed requests charged to one (cell, phase).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct BudgetRow {
    /// The home cell of the users whose requests failed.
    pub(crate) cell: String,
    /// The phase of that cell's switch (see the module docs).
    pub(crate) phase: &'static str,
    /// The table version the switch wrote (none for `steady`).
    pub(crate) table_version: Option<u64>,
    /// Failed requests.
    pub(crate) errors: u64,
}

/// How long after a switch applied a failure still counts as its `reroute`.
const REROUTE_MS: u64 = 1_000;

/// One phase window of one cell: `[from, to)` in run ms.
struct Window {
    cell: String,
    phase: &'static str,
    version: u64,
    from: u64,
    to: u64,
}

/// The windows of every switch in `audit` (drain rows `state=down`, failback
/// rows `state=active`); `kill` is (cell, kill ms) when a cell was killed.
fn windows(audit: &[AuditRow], kill: Option<(&str, u64)>) -> Vec<Window> {
    let mut out = Vec::new();
    for a in audit {
        let w = |phase, from: u64, to: Option<u64>| to.filter(|t| *t > from).map(|to| Window { cell: a.cell.clone(), phase, version: a.table_version, from, to });
        if a.action == "drain" {
            if let Some((cell, at)) = kill
                && cell == a.cell
            {
                out.extend(w("notice", at, Some(a.detected_at_ms)));
            }
            out.extend(w("detect", a.detected_at_ms, Some(a.decided_at_ms)));
            out.extend(w("decide", a.decided_at_ms, Some(a.intent_at_ms)));
            out.extend(w("commit", a.intent_at_ms, a.committed_at_ms));
            if let Some(c) = a.committed_at_ms {
                out.extend(w("apply", c, a.applied_at_ms));
            }
            if let Some(applied) = a.applied_at_ms {
                out.extend(w("reroute", applied, Some(applied + REROUTE_MS)));
            }
        } else if a.action == "failback" || a.action == "ramp" {
            out.extend(w("failback", a.intent_at_ms, a.applied_at_ms.or(a.committed_at_ms)));
        }
    }
    out
}

/// Charges every failed request of `records` to its user's home cell and the
/// phase its start fell in; rows sorted by cell, then phase order.
pub(crate) fn attribute(records: &[Record], users: &[User], audit: &[AuditRow], kill: Option<(&str, u64)>) -> Vec<BudgetRow> {
    let windows = windows(audit, kill);
    let mut charged: BTreeMap<(String, usize, Option<u64>), (&'static str, u64)> = BTreeMap::new();
    for r in records.iter().filter(|r| !r.ok) {
        let Some(u) = users.get(r.user) else { continue };
        let hit = windows.iter().enumerate().find(|(_, w)| w.cell == u.home && (w.from..w.to).contains(&r.start_ms));
        let (order, phase, version) = match hit {
            Some((i, w)) => (i + 1, w.phase, Some(w.version)),
            None => (0, "steady", None),
        };
        charged.entry((u.home.clone(), order, version)).or_insert((phase, 0)).1 += 1;
    }
    charged.into_iter().map(|((cell, _, table_version), (phase, errors))| BudgetRow { cell, phase, table_version, errors }).collect()
}

/// The bad intervals of the SLA attribution: seconds (a demo run is short).
const SLA_INTERVAL: Duration = Duration::from_secs(1);

/// `failover::sla::attribution` over the run: every failed request charged to
/// its user's home cell and a switch phase (from the audit rows, epoch ms,
/// shifted by `t0`, the run's start in epoch ms), a down probe or nothing;
/// `probes` in run ms.
pub(crate) fn sla_attribution(records: &[Record], users: &[User], audit: &[AuditRecord], t0: u64, probes: &[ProbeChange]) -> AttributionReport {
    let requests: Vec<RequestSample> = records
        .iter()
        .filter_map(|r| Some(RequestSample { at_ms: r.start_ms, cell: users.get(r.user)?.home.clone(), ok: r.ok }))
        .collect();
    let rel = |t: u64| t.saturating_sub(t0);
    let switches: Vec<SwitchSpan> = audit
        .iter()
        .map(|a| {
            let s = SwitchSpan::from(a);
            SwitchSpan {
                detected_at_ms: rel(s.detected_at_ms),
                decided_at_ms: rel(s.decided_at_ms),
                intent_at_ms: rel(s.intent_at_ms),
                committed_at_ms: s.committed_at_ms.map(rel),
                applied_at_ms: s.applied_at_ms.map(rel),
                ..s
            }
        })
        .collect();
    Attribution::default().with_interval(SLA_INTERVAL).attribute(&requests, &switches, probes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::load::Op;

    fn user(home: &str) -> User {
        User { key: format!("{home}-u"), region: home.into(), home: home.into(), failover: None, token: String::new() }
    }

    fn failed(user: usize, at: u64) -> Record {
        Record { user, op: Op::Like, post: "p".into(), start_ms: at, end_ms: at + 1, ok: false, served_by: None, id: None }
    }

    fn row(action: &str, cell: &str, version: u64, times: [u64; 5]) -> AuditRow {
        AuditRow {
            action: action.into(),
            cell: cell.into(),
            from: String::new(),
            to: String::new(),
            table_version: version,
            status: "applied".into(),
            reason: String::new(),
            detected_at_ms: times[0],
            decided_at_ms: times[1],
            intent_at_ms: times[2],
            committed_at_ms: Some(times[3]),
            applied_at_ms: Some(times[4]),
        }
    }

    #[test]
    fn each_failure_is_charged_to_its_cell_and_the_phase_it_fell_in() {
        let users = vec![user("a"), user("b")];
        let audit = vec![row("drain", "a", 2, [1_100, 1_390, 1_400, 1_410, 1_420]), row("failback", "a", 3, [5_000, 5_050, 5_100, 5_110, 5_130])];
        let records = vec![
            failed(0, 500),   // before the kill: steady
            failed(0, 1_050), // kill at 1000 -> first bad observation at 1100: notice
            failed(0, 1_200), // detected 1100 -> decided 1390: detect
            failed(0, 1_300), // detect
            failed(0, 1_395), // decided -> intent: decide
            failed(0, 1_405), // commit
            failed(0, 1_415), // apply
            failed(0, 1_900), // within a second of the apply: reroute
            failed(0, 5_120), // failback
            failed(1, 1_200), // b's user: b had no switch: steady
            Record { ok: true, ..failed(0, 1_200) },
        ];
        let rows = attribute(&records, &users, &audit, Some(("a", 1_000)));
        let got: Vec<(&str, &str, Option<u64>, u64)> = rows.iter().map(|r| (r.cell.as_str(), r.phase, r.table_version, r.errors)).collect();
        assert_eq!(
            got,
            vec![
                ("a", "steady", None, 1),
                ("a", "notice", Some(2), 1),
                ("a", "detect", Some(2), 2),
                ("a", "decide", Some(2), 1),
                ("a", "commit", Some(2), 1),
                ("a", "apply", Some(2), 1),
                ("a", "reroute", Some(2), 1),
                ("a", "failback", Some(3), 1),
                ("b", "steady", None, 1),
            ]
        );
        assert_eq!(rows.iter().map(|r| r.errors).sum::<u64>(), 10, "every failure charged once");
    }

    #[test]
    fn the_sla_attribution_names_the_switch_phase_the_down_probe_or_nothing() {
        use failover::audit::AuditStatus;
        use failover::sla::attribution::{Blame, SwitchPhase};
        let t0 = 1_700_000_000_000;
        let drain = AuditRecord {
            tx_id: "77".into(),
            flow: "a".into(),
            from: "state=active".into(),
            to: "state=down".into(),
            reason: String::new(),
            rule: "r".into(),
            actor: "t".into(),
            status: AuditStatus::Applied,
            version_before: 1,
            version_after: 2,
            detected_at_ms: t0 + 1_100,
            decided_at_ms: t0 + 1_390,
            intent_at_ms: t0 + 1_400,
            committed_at_ms: Some(t0 + 1_410),
            applied_at_ms: Some(t0 + 1_420),
            note: None,
        };
        let users = vec![user("a"), user("b")];
        let probes = [ProbeChange { at_ms: 900, cell: "b".into(), probe: "healthz".into(), up: false }];
        let records = [failed(0, 1_200), failed(0, 1_050), failed(1, 1_000), Record { ok: true, ..failed(1, 500) }];
        let r = sla_attribution(&records, &users, &[drain], t0, &probes);
        let got: Vec<(&str, &Blame, u64)> = r.rows.iter().map(|x| (x.cell.as_str(), &x.blame, x.errors)).collect();
        assert_eq!(
            got,
            vec![
                ("a", &Blame::Switch { switch: "77".into(), phase: SwitchPhase::Detect }, 1),
                ("b", &Blame::Probe { probe: "healthz".into() }, 1),
                ("a", &Blame::Unattributed, 1),
            ]
        );
        // a's second 1 is bad: its two failures tie, the switch (first in order) takes it
        assert_eq!(r.rows.iter().map(|x| x.bad_intervals).collect::<Vec<_>>(), [1, 1, 0]);
        assert_eq!((r.requests, r.errors, r.bad_intervals), (4, 3, 2), "a's second 1 and b's second 1 are bad");
    }

    #[test]
    fn a_drain_without_a_kill_starts_at_its_first_bad_observation() {
        let users = vec![user("a")];
        let audit = vec![row("drain", "a", 2, [1_100, 1_390, 1_400, 1_410, 1_420])];
        let rows = attribute(&[failed(0, 1_050), failed(0, 1_150)], &users, &audit, None);
        let got: Vec<(&str, u64)> = rows.iter().map(|r| (r.phase, r.errors)).collect();
        assert_eq!(got, vec![("steady", 1), ("detect", 1)], "no notice phase without a kill");
    }
}
