//! SLA gap attribution: where the error budget went.
//!
//! Given the switches (from the audit rows, [`SwitchSpan`]), every request's
//! outcome ([`RequestSample`]: time, cell, ok or not) and the dependency
//! probes' transitions over time ([`ProbeChange`], e.g. from
//! [`health::HealthEvent::ProbeChanged`]), [`Attribution::attribute`] charges
//! each failed request, and each bad interval (a minute by default whose
//! availability fell under the target), to one [`Blame`] of its cell:
//!
//! 1. [`Blame::Switch`]: the request fell inside a phase of a switch of its
//!    cell (`detect`, `decide`, `commit` or `apply`, between the instants the
//!    audit row carries, see [`SwitchPhases`](super::SwitchPhases));
//! 2. else [`Blame::Probe`]: a probe of its cell was down at that time (the
//!    one that went down first when several were);
//! 3. else [`Blame::Unattributed`].
//!
//! A bad interval is charged to the blame that holds most of its failed
//! requests in that cell. Every failure and every bad interval is charged
//! exactly once: the rows' counts sum to the totals and their shares to 1.
//!
//! ```
//! use std::time::Duration;
//! use failover::sla::attribution::{Attribution, Blame, ProbeChange, RequestSample, SwitchPhase, SwitchSpan};
//!
//! let switch = SwitchSpan {
//!     id: "42".into(),
//!     cell: "eu-1".into(),
//!     detected_at_ms: 1_000,
//!     decided_at_ms: 4_000,
//!     intent_at_ms: 4_010,
//!     committed_at_ms: Some(4_030),
//!     applied_at_ms: Some(4_100),
//! };
//! let db_down = ProbeChange { at_ms: 500, cell: "eu-1".into(), probe: "db".into(), up: false };
//! let requests = [
//!     RequestSample { at_ms: 700, cell: "eu-1".into(), ok: false },   // db down, no switch yet
//!     RequestSample { at_ms: 2_000, cell: "eu-1".into(), ok: false }, // detect phase of switch 42
//!     RequestSample { at_ms: 9_000, cell: "eu-2".into(), ok: true },
//! ];
//! let report = Attribution::default().with_interval(Duration::from_secs(1)).attribute(&requests, &[switch], &[db_down]);
//! assert_eq!(report.errors, 2);
//! assert_eq!(report.rows[0].blame, Blame::Switch { switch: "42".into(), phase: SwitchPhase::Detect });
//! assert_eq!(report.rows[1].blame, Blame::Probe { probe: "db".into() });
//! assert_eq!(report.bad_intervals, 2); // eu-1's seconds 0 and 2
//! ```

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;

use crate::error::Error;

/// A phase of a switch, between two instants of its audit row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchPhase {
    /// First bad observation -> the engine's decision.
    Detect,
    /// Decision -> intent row written.
    Decide,
    /// Intent -> table committed.
    Commit,
    /// Commit -> every watched router runs the new table.
    Apply,
}

impl SwitchPhase {
    /// The phase's name (`detect`, `decide`, `commit`, `apply`).
    pub fn as_str(self) -> &'static str {
        match self {
            SwitchPhase::Detect => "detect",
            SwitchPhase::Decide => "decide",
            SwitchPhase::Commit => "commit",
            SwitchPhase::Apply => "apply",
        }
    }
}

/// One switch's instants (any clock in ms, the same as the samples'), e.g.
/// from an audit row (`From<&AuditRecord>` with the `sql` feature, epoch ms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwitchSpan {
    /// The switch's id (the audit row's transaction id).
    pub id: String,
    /// The cell (the audit row's flow) the switch moved traffic off or back to.
    pub cell: String,
    /// First bad observation.
    pub detected_at_ms: u64,
    /// The engine's decision.
    pub decided_at_ms: u64,
    /// The intent row.
    pub intent_at_ms: u64,
    /// The table committed (none: the switch never committed).
    pub committed_at_ms: Option<u64>,
    /// Every watched router runs it (none: not measured).
    pub applied_at_ms: Option<u64>,
}

impl SwitchSpan {
    /// The phase `at_ms` falls in (each phase is `[from, to)`); `None` outside
    /// the switch. A phase whose end is unknown ends where it starts.
    pub fn phase_at(&self, at_ms: u64) -> Option<SwitchPhase> {
        let phases = [
            (SwitchPhase::Detect, self.detected_at_ms, Some(self.decided_at_ms)),
            (SwitchPhase::Decide, self.decided_at_ms, Some(self.intent_at_ms)),
            (SwitchPhase::Commit, self.intent_at_ms, self.committed_at_ms),
            (SwitchPhase::Apply, self.committed_at_ms.unwrap_or(self.intent_at_ms), self.applied_at_ms),
        ];
        phases.into_iter().find(|(_, from, to)| to.is_some_and(|to| (*from..to).contains(&at_ms))).map(|(p, _, _)| p)
    }
}

#[cfg(feature = "sql")]
impl From<&crate::audit::AuditRecord> for SwitchSpan {
    fn from(a: &crate::audit::AuditRecord) -> Self {
        SwitchSpan {
            id: a.tx_id.clone(),
            cell: a.flow.clone(),
            detected_at_ms: a.detected_at_ms,
            decided_at_ms: a.decided_at_ms,
            intent_at_ms: a.intent_at_ms,
            committed_at_ms: a.committed_at_ms,
            applied_at_ms: a.applied_at_ms,
        }
    }
}

/// One request's outcome, charged to `cell` (e.g. the user's home cell).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestSample {
    /// When it started (ms, the switches' clock).
    pub at_ms: u64,
    /// The cell it is charged to.
    pub cell: String,
    /// Whether it succeeded.
    pub ok: bool,
}

/// A probe of a cell went up or down at `at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeChange {
    /// When (ms, the switches' clock).
    pub at_ms: u64,
    /// The probed cell.
    pub cell: String,
    /// The probe's name (`db`, `cache`, `kafka`, `healthz`, ...).
    pub probe: String,
    /// Up now.
    pub up: bool,
}

impl ProbeChange {
    /// The change a [`health::HealthEvent::ProbeChanged`] seen at `at_ms`
    /// reports; `None` for other events.
    pub fn from_event(at_ms: u64, event: &health::HealthEvent) -> Option<Self> {
        match event {
            health::HealthEvent::ProbeChanged { cell, probe, up, .. } => {
                Some(ProbeChange { at_ms, cell: cell.to_string(), probe: probe.clone(), up: *up })
            }
            _ => None,
        }
    }
}

/// What a failure or a bad interval is charged to (besides its cell).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Blame {
    /// A phase of a switch of the cell.
    Switch {
        /// The switch's id.
        switch: String,
        /// The phase.
        phase: SwitchPhase,
    },
    /// A probe of the cell that was down.
    Probe {
        /// The probe's name.
        probe: String,
    },
    /// Neither a switch nor a down probe.
    Unattributed,
}

/// What one (cell, blame) was charged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttributionRow {
    /// The cell.
    pub cell: String,
    /// What in the cell.
    #[serde(flatten)]
    pub blame: Blame,
    /// Failed requests.
    pub errors: u64,
    /// `errors` over all failed requests (0 when none failed).
    pub error_share: f64,
    /// Bad intervals.
    pub bad_intervals: u64,
    /// `bad_intervals` over all bad intervals (0 when none was bad).
    pub bad_interval_share: f64,
}

/// Where the error budget went ([`Attribution::attribute`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AttributionReport {
    /// The length of an interval, seconds.
    pub interval_secs: f64,
    /// The availability under which a (cell, interval) is bad.
    pub target: f64,
    /// Requests seen.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Bad (cell, interval) pairs.
    pub bad_intervals: u64,
    /// Per (cell, blame), most errors first (then most bad intervals, cell, blame).
    pub rows: Vec<AttributionRow>,
}

/// How requests are grouped into intervals and when an interval is bad.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribution {
    target: f64,
    interval: Duration,
}

impl Default for Attribution {
    /// Target 99.995 % (as [`SlaConfig`](super::SlaConfig)'s default), one-minute intervals.
    fn default() -> Self {
        Attribution { target: 0.99995, interval: Duration::from_secs(60) }
    }
}

impl Attribution {
    /// An attribution where a (cell, interval) is bad when its availability
    /// is under `target`, in `(0, 1)`.
    pub fn try_new(target: f64) -> Result<Self, Error> {
        if !(target > 0.0 && target < 1.0) {
            return Err(Error::Config("attribution target must be in (0, 1)".into()));
        }
        Ok(Attribution { target, ..Attribution::default() })
    }

    /// The interval length (default one minute; at least 1 ms).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Charges every failed request and every bad interval (see the module docs).
    pub fn attribute(&self, requests: &[RequestSample], switches: &[SwitchSpan], probes: &[ProbeChange]) -> AttributionReport {
        let down = down_spans(probes);
        let interval_ms = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut charged: BTreeMap<(String, Blame), (u64, u64)> = BTreeMap::new();
        let mut intervals: HashMap<(&str, u64), Slot> = HashMap::new();
        let mut errors = 0;
        for r in requests {
            let slot = intervals.entry((r.cell.as_str(), r.at_ms / interval_ms)).or_default();
            slot.requests += 1;
            if r.ok {
                continue;
            }
            errors += 1;
            let blame = blame(r, switches, &down);
            *slot.failed.entry(blame.clone()).or_default() += 1;
            charged.entry((r.cell.clone(), blame)).or_default().0 += 1;
        }
        let mut bad = 0;
        for ((cell, _), Slot { requests: n, failed: by }) in &intervals {
            let failed: u64 = by.values().sum();
            if (1.0 - failed as f64 / *n as f64) >= self.target {
                continue;
            }
            // the blame with most failures (the first in order on a tie)
            let Some((worst, _)) = by.iter().fold(None::<(&Blame, u64)>, |best, (b, k)| match best {
                Some((_, m)) if m >= *k => best,
                _ => Some((b, *k)),
            }) else {
                continue;
            };
            bad += 1;
            charged.entry((cell.to_string(), worst.clone())).or_default().1 += 1;
        }
        let share = |n: u64, of: u64| if of == 0 { 0.0 } else { n as f64 / of as f64 };
        let mut rows: Vec<AttributionRow> = charged
            .into_iter()
            .map(|((cell, blame), (e, b))| AttributionRow {
                cell,
                blame,
                errors: e,
                error_share: share(e, errors),
                bad_intervals: b,
                bad_interval_share: share(b, bad),
            })
            .collect();
        rows.sort_by(|a, b| {
            (b.errors, b.bad_intervals).cmp(&(a.errors, a.bad_intervals)).then_with(|| (&a.cell, &a.blame).cmp(&(&b.cell, &b.blame)))
        });
        AttributionReport {
            interval_secs: self.interval.as_secs_f64(),
            target: self.target,
            requests: requests.len() as u64,
            errors,
            bad_intervals: bad,
            rows,
        }
    }
}

/// One (cell, interval): its requests and its failures per blame.
#[derive(Debug, Default)]
struct Slot {
    requests: u64,
    failed: BTreeMap<Blame, u64>,
}

/// A probe of a cell down over `[from, to)` (`to` none: still down).
#[derive(Debug)]
struct Down<'a> {
    probe: &'a str,
    from: u64,
    to: Option<u64>,
}

/// Each cell's probe outages, from the changes in time order.
fn down_spans(probes: &[ProbeChange]) -> HashMap<&str, Vec<Down<'_>>> {
    let mut sorted: Vec<&ProbeChange> = probes.iter().collect();
    sorted.sort_by_key(|p| p.at_ms);
    let mut out: HashMap<&str, Vec<Down<'_>>> = HashMap::new();
    for p in sorted {
        let spans = out.entry(p.cell.as_str()).or_default();
        let open = spans.iter_mut().find(|d| d.probe == p.probe && d.to.is_none());
        match (open, p.up) {
            (Some(d), true) => d.to = Some(p.at_ms),
            (None, false) => spans.push(Down { probe: &p.probe, from: p.at_ms, to: None }),
            _ => {}
        }
    }
    out
}

fn blame(r: &RequestSample, switches: &[SwitchSpan], down: &HashMap<&str, Vec<Down<'_>>>) -> Blame {
    if let Some((s, phase)) = switches.iter().filter(|s| s.cell == r.cell).find_map(|s| s.phase_at(r.at_ms).map(|p| (s, p))) {
        return Blame::Switch { switch: s.id.clone(), phase };
    }
    let first_down = down
        .get(r.cell.as_str())
        .into_iter()
        .flatten()
        .filter(|d| d.from <= r.at_ms && d.to.is_none_or(|to| r.at_ms < to))
        .min_by(|a, b| (a.from, a.probe).cmp(&(b.from, b.probe)));
    match first_down {
        Some(d) => Blame::Probe { probe: d.probe.to_string() },
        None => Blame::Unattributed,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn req(at_ms: u64, cell: &str, ok: bool) -> RequestSample {
        RequestSample { at_ms, cell: cell.into(), ok }
    }

    fn probe(at_ms: u64, cell: &str, name: &str, up: bool) -> ProbeChange {
        ProbeChange { at_ms, cell: cell.into(), probe: name.into(), up }
    }

    fn span(id: &str, cell: &str, t: [u64; 5]) -> SwitchSpan {
        SwitchSpan {
            id: id.into(),
            cell: cell.into(),
            detected_at_ms: t[0],
            decided_at_ms: t[1],
            intent_at_ms: t[2],
            committed_at_ms: Some(t[3]),
            applied_at_ms: Some(t[4]),
        }
    }

    fn row<'a>(r: &'a AttributionReport, cell: &str, blame: &Blame) -> Option<&'a AttributionRow> {
        r.rows.iter().find(|x| x.cell == cell && &x.blame == blame)
    }

    #[test]
    fn a_failure_in_a_switch_is_charged_to_its_phase_before_any_probe() {
        let s = span("7", "a", [100, 200, 210, 220, 260]);
        let probes = [probe(50, "a", "db", false), probe(5_000, "a", "db", true)];
        let at = |t| req(t, "a", false);
        let r = Attribution::default().attribute(&[at(150), at(205), at(215), at(230), at(300)], &[s], &probes);
        let sw = |phase| Blame::Switch { switch: "7".into(), phase };
        for p in [SwitchPhase::Detect, SwitchPhase::Decide, SwitchPhase::Commit, SwitchPhase::Apply] {
            assert_eq!(row(&r, "a", &sw(p)).unwrap().errors, 1, "{p:?}");
        }
        // after the apply, the db probe is still down
        assert_eq!(row(&r, "a", &Blame::Probe { probe: "db".into() }).unwrap().errors, 1);
        assert_eq!(r.errors, 5);
    }

    #[test]
    fn a_switch_of_another_cell_does_not_take_the_blame() {
        let s = span("7", "b", [0, 10_000, 10_001, 10_002, 10_003]);
        let r = Attribution::default().attribute(&[req(500, "a", false)], &[s], &[]);
        assert_eq!(r.rows.len(), 1);
        assert_eq!(r.rows[0].blame, Blame::Unattributed);
        assert_eq!(r.rows[0].cell, "a");
    }

    #[test]
    fn the_probe_that_went_down_first_is_blamed_and_a_recovered_one_is_not() {
        let probes = [
            probe(100, "a", "kafka", false),
            probe(200, "a", "cache", false),
            probe(300, "a", "kafka", true),
            probe(100, "b", "db", false),
        ];
        let r = Attribution::default().attribute(&[req(250, "a", false), req(350, "a", false), req(50, "a", false)], &[], &probes);
        assert_eq!(row(&r, "a", &Blame::Probe { probe: "kafka".into() }).unwrap().errors, 1);
        assert_eq!(row(&r, "a", &Blame::Probe { probe: "cache".into() }).unwrap().errors, 1);
        assert_eq!(row(&r, "a", &Blame::Unattributed).unwrap().errors, 1);
    }

    #[test]
    fn an_uncommitted_switch_ends_at_its_intent() {
        let s = SwitchSpan { committed_at_ms: None, applied_at_ms: None, ..span("1", "a", [0, 10, 20, 0, 0]) };
        assert_eq!(s.phase_at(5), Some(SwitchPhase::Detect));
        assert_eq!(s.phase_at(15), Some(SwitchPhase::Decide));
        assert_eq!(s.phase_at(25), None);
    }

    #[test]
    fn a_bad_interval_goes_to_the_blame_with_most_failures_in_it() {
        let s = span("9", "a", [1_000, 1_100, 1_110, 1_120, 1_130]);
        let probes = [probe(0, "a", "db", false)];
        let mut reqs = vec![req(1_050, "a", false), req(1_300, "a", false), req(1_400, "a", false)];
        reqs.extend((0..997).map(|i| req(1_000 + i % 1000, "a", true)));
        // second 1 of cell a: 3 failures in 1000 requests, 2 of them the db's
        let r = Attribution::try_new(0.999).unwrap().with_interval(Duration::from_secs(1)).attribute(&reqs, &[s], &probes);
        assert_eq!(r.bad_intervals, 1);
        assert_eq!(row(&r, "a", &Blame::Probe { probe: "db".into() }).unwrap().bad_intervals, 1);
        let detect = Blame::Switch { switch: "9".into(), phase: SwitchPhase::Detect };
        assert_eq!(row(&r, "a", &detect).unwrap().bad_intervals, 0);
        // at 99.5 % the same second is good
        let r = Attribution::try_new(0.995).unwrap().with_interval(Duration::from_secs(1)).attribute(&reqs, &[], &probes);
        assert_eq!(r.bad_intervals, 0);
    }

    #[test]
    fn an_invalid_target_is_an_error() {
        for t in [0.0, 1.0, -0.5, f64::NAN] {
            assert!(matches!(Attribution::try_new(t), Err(Error::Config(_))), "{t}");
        }
    }

    #[test]
    fn the_report_serializes_each_blame_with_its_kind() {
        let s = span("3", "a", [0, 10, 20, 30, 40]);
        let r = Attribution::default().attribute(&[req(5, "a", false)], &[s], &[]);
        let j = serde_json::to_value(&r.rows[0]).unwrap();
        assert_eq!(j["kind"], "switch");
        assert_eq!(j["switch"], "3");
        assert_eq!(j["phase"], "detect");
        assert_eq!(j["cell"], "a");
    }

    fn arb_case() -> impl Strategy<Value = (Vec<RequestSample>, Vec<SwitchSpan>, Vec<ProbeChange>)> {
        let cell = prop::sample::select(vec!["a", "b", "c"]);
        let reqs = prop::collection::vec((0u64..10_000, cell.clone(), any::<bool>()), 0..300)
            .prop_map(|v| v.into_iter().map(|(t, c, ok)| req(t, c, ok)).collect::<Vec<_>>());
        let spans = prop::collection::vec((cell.clone(), 0u64..10_000, prop::array::uniform4(0u64..500)), 0..4).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (c, t, d))| span(&i.to_string(), c, [t, t + d[0], t + d[0] + d[1], t + d[0] + d[1] + d[2], t + d[0] + d[1] + d[2] + d[3]]))
                .collect::<Vec<_>>()
        });
        let probes = prop::collection::vec((0u64..10_000, cell, prop::sample::select(vec!["db", "cache", "kafka"]), any::<bool>()), 0..20)
            .prop_map(|v| v.into_iter().map(|(t, c, p, up)| probe(t, c, p, up)).collect::<Vec<_>>());
        (reqs, spans, probes)
    }

    proptest! {
        #[test]
        fn attributed_counts_and_shares_sum_to_the_totals((reqs, spans, probes) in arb_case(), target in 0.5f64..0.9999, secs in 1u64..5) {
            let r = Attribution::try_new(target).unwrap().with_interval(Duration::from_secs(secs)).attribute(&reqs, &spans, &probes);
            let failed = reqs.iter().filter(|x| !x.ok).count() as u64;
            prop_assert_eq!(r.errors, failed);
            prop_assert_eq!(r.rows.iter().map(|x| x.errors).sum::<u64>(), failed);
            prop_assert_eq!(r.rows.iter().map(|x| x.bad_intervals).sum::<u64>(), r.bad_intervals);
            let shares: f64 = r.rows.iter().map(|x| x.error_share).sum();
            prop_assert!(failed == 0 || (shares - 1.0).abs() < 1e-9, "error shares sum to {}", shares);
            let bad: f64 = r.rows.iter().map(|x| x.bad_interval_share).sum();
            prop_assert!(r.bad_intervals == 0 || (bad - 1.0).abs() < 1e-9, "bad interval shares sum to {}", bad);
            // every interval with a failure is bad at a target above 1 - 1/requests, never with none
            prop_assert!(r.bad_intervals <= failed);
        }
    }
}
