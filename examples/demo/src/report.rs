//! The run's report: computed from the clients' records, the audit log (the
//! switch phases are its rows' timestamps) and the cells' final states.

use std::collections::{BTreeMap, HashSet};
use std::time::SystemTime;

use failover::audit::{AuditRecord, AuditStatus, epoch_ms};
use failover::sla::attribution::{AttributionReport, Blame, ProbeChange};
use serde::Serialize;

use crate::load::{Op, Record, User};

/// Per-cell counts.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct CellCounts {
    /// Requests the cell served successfully.
    pub(crate) requests: u64,
    /// Failed requests of users homed in the cell.
    pub(crate) errors: u64,
}

/// The switch's phases in ms: `detect`, `decide`, `commit` and `apply` as
/// `failover::sla::SwitchPhases` defines them (one definition, read from the
/// drain's audit row with `AuditRecord::phases`), plus `notice`, which only
/// the demo can know: the kill -> the engine's first bad observation.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct SwitchMs {
    /// Kill -> the engine's first bad observation.
    pub(crate) notice: Option<u64>,
    /// First bad observation -> the engine's decision (the trip window).
    pub(crate) detect: Option<u64>,
    /// Decision -> intent row written.
    pub(crate) decide: Option<u64>,
    /// Intent -> table committed.
    pub(crate) commit: Option<u64>,
    /// Commit -> every live router runs the table; `None` when the apply was
    /// not measured (the row is `committed`, not `applied`: a timeout).
    pub(crate) apply: Option<u64>,
    /// Kill -> first success for the dead cell's users.
    pub(crate) total: Option<u64>,
}

/// One audit row, as reported.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AuditRow {
    pub(crate) action: String,
    pub(crate) cell: String,
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) table_version: u64,
    pub(crate) status: String,
    /// Why the switch was made.
    pub(crate) reason: String,
    /// ms since the run started: the first bad (or good) observation.
    pub(crate) detected_at_ms: u64,
    /// ms since the run started: the engine's decision.
    pub(crate) decided_at_ms: u64,
    /// ms since the run started: the intent row.
    pub(crate) intent_at_ms: u64,
    /// ms since the run started: the table committed.
    pub(crate) committed_at_ms: Option<u64>,
    /// ms since the run started: every live router runs the table.
    pub(crate) applied_at_ms: Option<u64>,
}

/// The whole report (the `--json` line).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    /// Where the cells' changes were captured (`outbox` or `binlog`).
    pub(crate) replication: crate::config::Replication,
    pub(crate) cells: BTreeMap<String, CellCounts>,
    pub(crate) killed_cell: String,
    pub(crate) kill_at_ms: u64,
    pub(crate) restart_at_ms: u64,
    pub(crate) switch_ms: SwitchMs,
    /// Restart -> failback applied.
    pub(crate) failback_ms: Option<u64>,
    pub(crate) client_errors_during_switch: u64,
    pub(crate) errors_total: u64,
    pub(crate) total_requests: u64,
    pub(crate) acked_writes: u64,
    pub(crate) lost_writes: u64,
    pub(crate) converged: bool,
    pub(crate) digests: BTreeMap<String, u64>,
    pub(crate) audit_rows: Vec<AuditRow>,
    /// Successful requests served by a cell other than the user's home or its declared failover target.
    pub(crate) misrouted: u64,
    pub(crate) requests_before_kill: u64,
    /// Successful requests before the kill not served by the user's home cell.
    pub(crate) off_home_before_kill: u64,
    /// Successful requests of the dead cell's users served by its failover target.
    pub(crate) failover_served: u64,
    /// Requests per cell per second of the run.
    pub(crate) timeline: Vec<BTreeMap<String, u64>>,
    /// Where the error budget went: failed requests by home cell and switch phase.
    pub(crate) error_budget: Vec<crate::budget::BudgetRow>,
    /// Where the error budget went, as `failover::sla::attribution` charges
    /// it: per (home cell, switch + phase | down probe | unattributed), the
    /// failed requests and the bad seconds.
    pub(crate) sla_attribution: AttributionReport,
    /// Client-visible failed requests (and requests) by phase of the run.
    pub(crate) errors_by_phase: ByPhase,
    /// What the gateway's retries did (amplification = attempts / requests).
    pub(crate) retries: crate::gateway::RetryReport,
    /// The killed cell's failback steps, in order, with their table versions.
    pub(crate) ramp_steps: Vec<RampStep>,
}

/// Failed requests and requests by phase of the run, by start time: before
/// the kill, during the switch (kill -> first success for the dead cell's
/// users), drained (until the failback ramp starts), during the ramp (first
/// step -> last step committed), after.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ByPhase {
    pub(crate) before: PhaseCount,
    pub(crate) during_switch: PhaseCount,
    pub(crate) drained: PhaseCount,
    pub(crate) during_ramp: PhaseCount,
    pub(crate) after: PhaseCount,
}

/// Requests and client-visible errors in one phase.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct PhaseCount {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
}

/// One failback step of the killed cell.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RampStep {
    /// The cell's state after the step (`state=active home_slots=34/341`, `state=active`).
    pub(crate) to: String,
    pub(crate) table_version: u64,
    /// ms since the run started.
    pub(crate) committed_at_ms: Option<u64>,
}

/// The killed cell's failback steps: its `state=active...` rows after its drain.
fn ramp_steps(rows: &[AuditRow], killed: &str) -> Vec<RampStep> {
    let Some(drain) = rows.iter().position(|a| a.cell == killed && a.action == "drain") else { return Vec::new() };
    rows[drain..]
        .iter()
        .filter(|a| a.cell == killed && a.to.starts_with(ACTIVE))
        .map(|a| RampStep { to: a.to.clone(), table_version: a.table_version, committed_at_ms: a.committed_at_ms })
        .collect()
}

/// Counts `records` by phase (see [`ByPhase`]); `switch_end` and the ramp
/// bounds in ms since the start.
fn by_phase(records: &[Record], kill_ms: u64, switch_end: Option<u64>, ramp: Option<(u64, u64)>) -> ByPhase {
    let mut out = ByPhase::default();
    for r in records {
        let t = r.start_ms;
        let p = if kill_ms == 0 || t < kill_ms {
            &mut out.before
        } else if switch_end.is_none_or(|e| t <= e) {
            &mut out.during_switch
        } else {
            match ramp {
                Some((from, _)) if t < from => &mut out.drained,
                Some((_, to)) if t < to => &mut out.during_ramp,
                Some(_) => &mut out.after,
                None => &mut out.drained,
            }
        };
        p.requests += 1;
        if !r.ok {
            p.errors += 1;
        }
    }
    out
}

/// What the orchestrator gathered.
#[derive(Debug)]
pub(crate) struct Inputs<'a> {
    pub(crate) cells: Vec<String>,
    pub(crate) users: &'a [User],
    pub(crate) records: &'a [Record],
    pub(crate) t0: SystemTime,
    pub(crate) killed: String,
    pub(crate) kill_ms: u64,
    pub(crate) restart_ms: u64,
    pub(crate) audit: Vec<AuditRecord>,
    /// Per cell: (state JSON, digest); `None` when it did not answer.
    pub(crate) states: BTreeMap<String, Option<(String, u64)>>,
    /// Successes per cell per second ([`crate::stats::Stats::timeline`]).
    pub(crate) timeline: Vec<BTreeMap<String, u64>>,
    /// The probers' probe transitions, ms since the run started.
    pub(crate) probes: Vec<ProbeChange>,
    /// Where the cells' changes were captured.
    pub(crate) replication: crate::config::Replication,
    /// What the gateway's retries did.
    pub(crate) retries: crate::gateway::RetryReport,
}

const DRAINED: &str = "state=down";
const ACTIVE: &str = "state=active";

/// The first audit row switching `cell` to `to`.
fn row<'a>(audit: &'a [AuditRecord], cell: &str, to: &str) -> Option<&'a AuditRecord> {
    audit.iter().find(|a| a.flow == cell && a.to == to)
}

/// Whether `cell`'s failback is applied.
pub(crate) fn failed_back(audit: &[AuditRecord], cell: &str) -> bool {
    row(audit, cell, ACTIVE).is_some_and(|a| a.status == AuditStatus::Applied)
}

/// Acknowledged writes missing from `state` (a cell's state JSON), each by
/// its own id: a comment in its post's comment set, a like in its post's
/// like-id set (never by counts: a committed but unacknowledged write could
/// hide a lost acknowledged one).
fn lost_writes(records: &[Record], state: &str) -> u64 {
    let state: BTreeMap<String, serde_json::Value> = serde_json::from_str(state).unwrap_or_default();
    let present = |set: &str, id: &str| {
        state.get(set).and_then(|v| v.as_array()).is_some_and(|a| a.iter().any(|m| m.as_str() == Some(id)))
    };
    let mut lost = 0;
    for r in records.iter().filter(|r| r.ok && r.id.is_some()) {
        let id = r.id.as_deref().unwrap_or_default();
        let set = match r.op {
            Op::Comment => format!("comments:{}", r.post),
            Op::Like => format!("like_ids:{}", r.post),
            Op::Read => continue,
        };
        if !present(&set, id) {
            lost += 1;
        }
    }
    lost
}

/// Computes the report.
pub(crate) fn compute(i: Inputs<'_>) -> Report {
    let mut cells: BTreeMap<String, CellCounts> = i.cells.iter().map(|c| (c.clone(), CellCounts::default())).collect();
    let (mut misrouted, mut before, mut off_home, mut failover_served, mut errors) = (0, 0, 0, 0, 0);
    let mut first_failover_success: Option<u64> = None;
    for r in i.records {
        let u = &i.users[r.user];
        if !r.ok {
            errors += 1;
            cells.entry(u.home.clone()).or_default().errors += 1;
            continue;
        }
        let Some(by) = &r.served_by else { continue };
        cells.entry(by.clone()).or_default().requests += 1;
        if by != &u.home && Some(by) != u.failover.as_ref() {
            misrouted += 1;
        }
        if r.end_ms < i.kill_ms {
            before += 1;
            if by != &u.home {
                off_home += 1;
            }
        }
        if u.home == i.killed && Some(by) == u.failover.as_ref() {
            failover_served += 1;
            if r.start_ms >= i.kill_ms {
                first_failover_success = Some(first_failover_success.map_or(r.end_ms, |f| f.min(r.end_ms)));
            }
        }
    }
    let total = first_failover_success.map(|f| f.saturating_sub(i.kill_ms));
    let during = i
        .records
        .iter()
        .filter(|r| !r.ok && r.start_ms >= i.kill_ms && total.is_none_or(|t| r.start_ms <= i.kill_ms + t))
        .count() as u64;
    // phases from the drain's audit row (epoch ms)
    let t0 = epoch_ms(i.t0);
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let switch_ms = match row(&i.audit, &i.killed, DRAINED) {
        Some(a) => {
            // the phases from the row's instants; detect and decide are known before the commit too
            let phases = a.phases();
            SwitchMs {
                notice: Some(a.detected_at_ms.saturating_sub(t0).saturating_sub(i.kill_ms)),
                detect: Some(a.decided_at_ms.saturating_sub(a.detected_at_ms)),
                decide: Some(a.intent_at_ms.saturating_sub(a.decided_at_ms)),
                commit: phases.map(|p| ms(p.commit)),
                apply: phases.and_then(|p| p.apply.duration()).map(ms),
                total,
            }
        }
        None => SwitchMs { total, ..Default::default() },
    };
    let failback_ms = row(&i.audit, &i.killed, ACTIVE)
        .and_then(|a| a.applied_at_ms)
        .map(|at| at.saturating_sub(t0).saturating_sub(i.restart_ms));
    let digests: BTreeMap<String, u64> =
        i.states.iter().filter_map(|(c, s)| s.as_ref().map(|(_, d)| (c.clone(), *d))).collect();
    let distinct: HashSet<u64> = digests.values().copied().collect();
    let converged = digests.len() == i.cells.len() && distinct.len() == 1;
    let lost = i
        .states
        .values()
        .flatten()
        .map(|(json, _)| lost_writes(i.records, json))
        .max()
        .unwrap_or_else(|| i.records.iter().filter(|r| r.ok && r.id.is_some()).count() as u64);
    let audit_rows = audit_rows(&i.audit, t0);
    let kill = (i.kill_ms > 0).then_some((i.killed.as_str(), i.kill_ms));
    let error_budget = crate::budget::attribute(i.records, i.users, &audit_rows, kill);
    let sla_attribution = crate::budget::sla_attribution(i.records, i.users, &i.audit, t0, &i.probes);
    let steps = ramp_steps(&audit_rows, &i.killed);
    let ramp = steps.first().and_then(|f| f.committed_at_ms).zip(steps.last().and_then(|l| l.committed_at_ms));
    let errors_by_phase = by_phase(i.records, i.kill_ms, total.map(|t| i.kill_ms + t), ramp);
    Report {
        replication: i.replication,
        cells,
        killed_cell: i.killed.clone(),
        kill_at_ms: i.kill_ms,
        restart_at_ms: i.restart_ms,
        switch_ms,
        failback_ms,
        client_errors_during_switch: during,
        errors_total: errors,
        total_requests: i.records.len() as u64,
        acked_writes: i.records.iter().filter(|r| r.ok && r.id.is_some()).count() as u64,
        lost_writes: lost,
        converged,
        digests,
        audit_rows,
        misrouted,
        requests_before_kill: before,
        off_home_before_kill: off_home,
        failover_served,
        timeline: i.timeline,
        error_budget,
        sla_attribution,
        errors_by_phase,
        retries: i.retries,
        ramp_steps: steps,
    }
}

/// The audit rows as reported, times relative to the run's start (`t0`, epoch ms).
pub(crate) fn audit_rows(audit: &[AuditRecord], t0: u64) -> Vec<AuditRow> {
    audit
        .iter()
        .map(|a| AuditRow {
            action: match a.to.as_str() {
                DRAINED => "drain".into(),
                ACTIVE => "failback".into(),
                ramp if ramp.starts_with("state=active home_slots") => "ramp".into(),
                other => other.to_string(),
            },
            cell: a.flow.clone(),
            from: a.from.clone(),
            to: a.to.clone(),
            table_version: a.version_after,
            status: a.status.as_str().to_string(),
            reason: a.reason.clone(),
            detected_at_ms: a.detected_at_ms.saturating_sub(t0),
            decided_at_ms: a.decided_at_ms.saturating_sub(t0),
            intent_at_ms: a.intent_at_ms.saturating_sub(t0),
            committed_at_ms: a.committed_at_ms.map(|c| c.saturating_sub(t0)),
            applied_at_ms: a.applied_at_ms.map(|c| c.saturating_sub(t0)),
        })
        .collect()
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v} ms"))
}

/// What a row of the SLA attribution blames, in words.
pub(crate) fn blame_label(b: &Blame) -> String {
    match b {
        Blame::Switch { switch, phase } => format!("switch {switch} {}", phase.as_str()),
        Blame::Probe { probe } => format!("probe {probe} down"),
        Blame::Unattributed => "unattributed".into(),
    }
}

/// The human-readable report.
pub(crate) fn print_human(r: &Report) {
    println!();
    println!("== requests per cell over time (successes per second) ==");
    let names: Vec<&String> = r.cells.keys().collect();
    print!("{:>5}", "t(s)");
    for n in &names {
        print!(" {n:>10}");
    }
    println!();
    for (s, row) in r.timeline.iter().enumerate() {
        let mark = if (s as u64) == r.kill_at_ms / 1000 {
            "  <- kill"
        } else if (s as u64) == r.restart_at_ms / 1000 {
            "  <- restart"
        } else {
            ""
        };
        print!("{s:>5}");
        for n in &names {
            print!(" {:>10}", row.get(*n).copied().unwrap_or(0));
        }
        println!("{mark}");
    }
    println!();
    println!("== cells ==");
    for (c, n) in &r.cells {
        println!("{c:>10}: {:>6} served, {:>4} errors seen by its users", n.requests, n.errors);
    }
    println!();
    println!("== the switch (killed {} at {} ms) ==", r.killed_cell, r.kill_at_ms);
    let s = &r.switch_ms;
    println!(
        "  notice {}  detect {}  decide {}  commit {}  apply {}",
        opt(s.notice),
        opt(s.detect),
        opt(s.decide),
        opt(s.commit),
        opt(s.apply)
    );
    println!("  total (kill -> first success for its users): {}", opt(s.total));
    println!("  client errors during the switch: {}", r.client_errors_during_switch);
    println!("  failback (restart -> table applied): {}", opt(r.failback_ms));
    for s in &r.ramp_steps {
        println!("    step: table v{} {} at {}", s.table_version, s.to, opt(s.committed_at_ms));
    }
    println!();
    println!("== client-visible errors by phase ==");
    let e = &r.errors_by_phase;
    for (name, p) in [("before", e.before), ("during switch", e.during_switch), ("drained", e.drained), ("during ramp", e.during_ramp), ("after", e.after)] {
        println!("  {name:>14}: {:>5} errors of {:>6} requests", p.errors, p.requests);
    }
    let t = &r.retries;
    println!(
        "  retries: {} ({} answered, {} failed again); refused: {} by the budget, {} no allowed cell, {} unkeyed writes",
        t.retried, t.succeeded, t.failed, t.budget_refused, t.no_target, t.not_idempotent
    );
    println!("  amplification: {:.3} ({} attempts / {} requests); duplicate writes suppressed: {}", t.amplification, t.sent, t.received, t.duplicates_suppressed);
    println!();
    println!("== correctness ({} replication) ==", r.replication.as_str());
    println!("  requests: {} ({} errors)", r.total_requests, r.errors_total);
    println!("  acknowledged writes: {}, lost: {}", r.acked_writes, r.lost_writes);
    println!("  converged: {} ({} cells)", r.converged, r.digests.len());
    println!("  before the kill: {} requests, {} off their home cell", r.requests_before_kill, r.off_home_before_kill);
    println!("  served by the failover cell: {}", r.failover_served);
    println!("  misrouted: {}", r.misrouted);
    println!();
    println!("== where the error budget went (failed requests by home cell and switch phase) ==");
    for b in &r.error_budget {
        let v = b.table_version.map_or_else(String::new, |v| format!(" (table v{v})"));
        println!("  {:>10} {:>9}{v}: {}", b.cell, b.phase, b.errors);
    }
    println!();
    let a = &r.sla_attribution;
    println!("== SLA gap attribution ({} failed requests, {} bad seconds) ==", a.errors, a.bad_intervals);
    for row in &a.rows {
        println!(
            "  {:>10} {:<28} {:>6} errors ({:>5.1} %), {:>3} bad seconds",
            row.cell,
            blame_label(&row.blame),
            row.errors,
            row.error_share * 100.0,
            row.bad_intervals
        );
    }
    println!();
    println!("== audit log ==");
    for a in &r.audit_rows {
        println!("  {:>8} {:>10}: {} -> {} (table v{}, {})", a.action, a.cell, a.from, a.to, a.table_version, a.status);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn rec(op: Op, post: &str, id: &str, ok: bool) -> Record {
        Record { user: 0, op, post: post.into(), start_ms: 0, end_ms: 1, ok, served_by: Some("a".into()), id: Some(id.into()) }
    }

    #[test]
    fn lost_writes_counts_missing_comments_and_likes_by_id() {
        let records = vec![
            rec(Op::Like, "p", "1", true),
            rec(Op::Like, "p", "2", true),
            rec(Op::Comment, "p", "3", true),
            rec(Op::Comment, "p", "4", true),
            rec(Op::Comment, "p", "5", false), // not acknowledged: not counted
        ];
        let all = r#"{"likes:p":2,"like_ids:p":["1","2"],"comments:p":["3","4"]}"#;
        assert_eq!(lost_writes(&records, all), 0);
        let missing = r#"{"likes:p":1,"like_ids:p":["2"],"comments:p":["4","5"]}"#;
        assert_eq!(lost_writes(&records, missing), 2);
        assert_eq!(lost_writes(&records, "{}"), 4);
        // the count matches (a committed, unacknowledged like "9" stands in for
        // the lost acknowledged "1"), the ids do not: the loss is seen
        let hidden = r#"{"likes:p":2,"like_ids:p":["2","9"],"comments:p":["3","4"]}"#;
        assert_eq!(lost_writes(&records, hidden), 1);
    }
}
