#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use failover::audit::{AuditRecord, AuditStatus};
use proptest::prelude::*;

use crate::audit::AuditAnomaly;
use crate::checker::{self, CellView, Evidence};
use crate::history::{self, Outcome, Record, WriteKind};
use crate::*;

fn topo(ppc: usize) -> Topology {
    Topology::try_new(vec!["a".into(), "b".into(), "c".into()], ppc, 2).unwrap().with_redis(true)
}

fn overlap(a: &Fault, b: &Fault) -> bool {
    a.at < b.heals_at() && b.at < a.heals_at()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_seed_gives_one_schedule_within_its_bounds(seed in any::<u64>(), secs in 10u64..240, ppc in 1usize..4, overlap_max in 1usize..4) {
        let topo = topo(ppc);
        let config = ScheduleConfig::try_new(Duration::from_secs(secs)).unwrap().with_max_overlap(overlap_max).unwrap();
        let s = Schedule::generate(seed, &topo, &config);
        prop_assert_eq!(&s, &Schedule::generate(seed, &topo, &config));
        prop_assert_eq!(s.seed, seed);
        for (i, f) in s.faults.iter().enumerate() {
            prop_assert!(f.at >= Duration::from_secs(3), "fault {i} starts in the warm-up");
            prop_assert!(f.heals_at() <= config.heal_by(), "fault {i} heals after the settle point");
            prop_assert!(!f.lasts.is_zero());
            // concurrency peaks at some fault's start
            let at_once = s.faults.iter().filter(|g| g.at <= f.at && f.at < g.heals_at()).count();
            prop_assert!(at_once <= overlap_max, "{at_once} faults at once");
            match &f.kind {
                FaultKind::Pause { .. } => prop_assert!(f.lasts <= Duration::from_secs(5)),
                FaultKind::ClockStep { offset_ms, .. } => prop_assert!(offset_ms.abs() <= MAX_CLOCK_STEP_MS),
                _ => {}
            }
            // never two cells out of service at once
            if let Some(cell) = f.kind.cell_down(ppc) {
                for g in s.faults.iter().filter(|g| *g != f && overlap(f, g)) {
                    prop_assert!(g.kind.cell_down(ppc).is_none(), "{cell} and another cell down at once");
                }
            }
        }
        let steps = s.steps();
        prop_assert_eq!(steps.len(), s.faults.len() * 2);
        prop_assert!(steps.windows(2).all(|w| w[0].0 <= w[1].0));
        prop_assert_eq!(s.counts().values().sum::<usize>(), s.faults.len());
    }

    #[test]
    fn history_round_trips(n in 0usize..20, seed in any::<u64>()) {
        let h: Vec<Record> = (0..n).map(|i| rec(&format!("r{i}"), if (seed >> (i % 64)) & 1 == 1 { "eu" } else { "us" }, i as u64 * 10, i % 3 != 0, i % 2 == 0)).collect();
        let mut buf = Vec::new();
        history::write_jsonl(&mut buf, &h).unwrap();
        prop_assert_eq!(history::read_jsonl(&buf[..]).unwrap(), h);
    }
}

#[test]
fn long_runs_use_every_kind_and_seeds_differ() {
    let config = ScheduleConfig::try_new(Duration::from_secs(600)).unwrap();
    let s = Schedule::generate(7, &topo(2), &config);
    assert!(s.counts().values().all(|n| *n > 0), "{:?}", s.counts());
    assert_ne!(s, Schedule::generate(8, &topo(2), &config));
    // a topology without Redis never takes it down; kinds can be narrowed
    let no_redis = Topology::try_new(vec!["a".into(), "b".into()], 1, 1).unwrap();
    assert_eq!(Schedule::generate(7, &no_redis, &config).counts()["redis_down"], 0);
    let only = config.clone().with_kinds(["pause", "kafka_down"]).unwrap();
    let s = Schedule::generate(7, &topo(2), &only);
    assert!(s.faults.iter().all(|f| matches!(f.kind, FaultKind::Pause { .. } | FaultKind::KafkaDown)));
    assert!(config.clone().with_kinds(["meteor"]).is_err());
    assert!(ScheduleConfig::try_new(Duration::from_secs(5)).is_err());
    assert!(Topology::try_new(vec!["a".into(), "a".into()], 1, 1).is_err());
    assert!(Topology::try_new(vec!["a".into()], 1, 1).is_err());
}

#[test]
fn schedules_serialize_for_the_report() {
    let s = Schedule::generate(3, &topo(2), &ScheduleConfig::try_new(Duration::from_secs(30)).unwrap());
    let json = serde_json::to_string(&s).unwrap();
    let back: Schedule = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    let f = serde_json::to_value(&s.faults[0]).unwrap();
    assert!(f["kind"].is_string() && f["at"].is_u64() && f["lasts"].is_u64(), "{f}");
}

fn rec(req: &str, region: &str, at_ms: u64, ok: bool, write: bool) -> Record {
    Record {
        req: req.into(),
        region: region.into(),
        at_ms,
        write: write.then(|| (WriteKind::Comment, "post-1".into())),
        outcome: if ok {
            Outcome::Ok { id: if write { format!("id-{req}") } else { String::new() }, cell: Some("a".into()) }
        } else {
            Outcome::Failed { error: "503".into() }
        },
    }
}

fn cells_holding(ids: &[&str], cells: &[&str]) -> BTreeMap<String, CellView> {
    cells
        .iter()
        .map(|c| (c.to_string(), CellView { ids: ids.iter().map(|s| s.to_string()).collect(), digest: 1, active: true }))
        .collect()
}

fn all() -> Vec<String> {
    vec!["a".into(), "b".into(), "c".into()]
}

#[test]
fn a_clean_run_passes_and_each_broken_invariant_is_named() {
    let history = vec![rec("r1", "eu", 10, true, true), rec("r2", "eu", 20, false, true), rec("r3", "us", 30, true, true)];
    // r2 failed: it may or may not have landed; both are fine
    let cells = cells_holding(&["id-r1", "id-r3", "id-r2"], &["a", "b", "c"]);
    let ok = checker::check(Evidence { history: &history, cells: &cells, all_cells: &all(), audit: &[], drain_cap: 1 });
    assert!(ok.ok(), "{ok:?}");
    assert_eq!((ok.acked, ok.failed), (2, 1));

    // lost: one cell misses an acked id; it is also diverged
    let mut cells = cells_holding(&["id-r1", "id-r3"], &["a", "b"]);
    cells.insert("c".into(), CellView { ids: ["id-r1".to_string()].into(), digest: 2, active: true });
    let v = checker::check(Evidence { history: &history, cells: &cells, all_cells: &all(), audit: &[], drain_cap: 1 });
    assert_eq!(v.lost.len(), 1);
    assert_eq!((v.lost[0].id.as_str(), v.lost[0].missing_in.clone()), ("id-r3", vec!["c".to_string()]));
    assert_eq!(v.diverged, vec!["c".to_string()]);

    // a cell that could not be read holds nothing
    let cells = cells_holding(&["id-r1", "id-r3"], &["a", "b"]);
    let v = checker::check(Evidence { history: &history, cells: &cells, all_cells: &all(), audit: &[], drain_cap: 1 });
    assert_eq!(v.lost.len(), 2);
    assert_eq!(v.not_restored, vec!["c".to_string()]);

    // same ids, different digests: diverged, nothing lost
    let mut cells = cells_holding(&["id-r1", "id-r3"], &["a", "b", "c"]);
    cells.get_mut("b").unwrap().digest = 5;
    let v = checker::check(Evidence { history: &history, cells: &cells, all_cells: &all(), audit: &[], drain_cap: 1 });
    assert!(v.lost.is_empty());
    assert_eq!(v.diverged, vec!["b".to_string()]);

    // the same id acknowledged for two requests
    let mut dup = history.clone();
    let mut twin = rec("r9", "us", 40, true, true);
    twin.outcome = Outcome::Ok { id: "id-r1".into(), cell: None };
    dup.push(twin);
    let cells = cells_holding(&["id-r1", "id-r3"], &["a", "b", "c"]);
    let v = checker::check(Evidence { history: &dup, cells: &cells, all_cells: &all(), audit: &[], drain_cap: 1 });
    assert_eq!(v.duplicate_ids, vec!["id-r1".to_string()]);
    assert!(!v.ok());

    // a drained cell not restored
    let mut cells = cells_holding(&["id-r1", "id-r3"], &["a", "b", "c"]);
    cells.get_mut("a").unwrap().active = false;
    let v = checker::check(Evidence { history: &history, cells: &cells, all_cells: &all(), audit: &[], drain_cap: 1 });
    assert_eq!(v.not_restored, vec!["a".to_string()]);
}

#[test]
fn a_pinned_user_served_outside_its_cells_is_misrouted() {
    // "eu" is pinned to cells a and b; "us" is not pinned
    let allowed = BTreeMap::from([("eu".to_string(), ["a".to_string(), "b".to_string()].into())]);
    let mut history = vec![rec("r1", "eu", 10, true, true), rec("r2", "eu", 20, false, true), rec("r3", "us", 30, true, true)];
    assert!(checker::misrouted(&history, &allowed).is_empty(), "served by a, a failure, an unpinned user");
    let mut away = rec("r4", "eu", 40, true, false);
    away.outcome = Outcome::Ok { id: String::new(), cell: Some("c".into()) };
    let mut unsaid = rec("r5", "eu", 50, true, true);
    unsaid.outcome = Outcome::Ok { id: "id-r5".into(), cell: None };
    let mut us_away = rec("r6", "us", 60, true, false);
    us_away.outcome = Outcome::Ok { id: String::new(), cell: Some("c".into()) };
    history.extend([away, unsaid, us_away]);
    assert_eq!(checker::misrouted(&history, &allowed), ["r4", "r5"]);
    let cells = cells_holding(&["id-r1", "id-r3", "id-r5"], &["a", "b", "c"]);
    let mut v = checker::check(Evidence { history: &history, cells: &cells, all_cells: &all(), audit: &[], drain_cap: 1 });
    assert!(v.ok(), "{v:?}");
    v.misrouted = checker::misrouted(&history, &allowed);
    assert!(!v.ok(), "a misrouted request breaks the run");
}

#[test]
fn unavailability_spans_success_to_success_across_failures() {
    let h = vec![
        rec("1", "eu", 100, true, false),
        rec("2", "eu", 150, false, false),
        rec("3", "eu", 400, false, true),
        rec("4", "eu", 900, true, false),
        rec("5", "eu", 950, true, false),
        rec("6", "us", 100, true, false),
        rec("7", "us", 200, true, false),
        rec("8", "ap", 100, true, false),
        rec("9", "ap", 300, false, false),
    ];
    let u = checker::unavailability(&h);
    assert_eq!(u["eu"], 800);
    assert_eq!(u["us"], 0);
    assert_eq!(u["ap"], 200, "a region that ends failing counts to its last record");
}

fn row(tx: &str, flow: &str, to: &str, status: AuditStatus, before: u64, after: u64) -> AuditRecord {
    AuditRecord {
        tx_id: tx.into(),
        flow: flow.into(),
        from: String::new(),
        to: to.into(),
        reason: String::new(),
        rule: "manual".into(),
        actor: "c0".into(),
        status,
        version_before: before,
        version_after: after,
        detected_at_ms: 0,
        decided_at_ms: 0,
        intent_at_ms: 0,
        committed_at_ms: Some(1),
        applied_at_ms: None,
        note: None,
    }
}

#[test]
fn audit_invariants() {
    use AuditStatus::*;
    let good = vec![
        row("1", "a", "state=down", Committed, 1, 2),
        row("2", "b", "state=down", RolledBack, 2, 3),
        row("3", "a", "state=active", Applied, 2, 3),
        row("4", "b", "state=down", Committed, 3, 4),
    ];
    assert_eq!(audit::check(&good, 1), vec![]);

    let mut bad = good.clone();
    bad.push(row("4", "b", "state=down", Committed, 3, 4)); // the same tx twice, version 4 twice
    bad.push(row("5", "c", "state=down", Intent, 4, 5));
    bad.push(row("6", "c", "state=down", Committed, 7, 7));
    let got = audit::check(&bad, 1);
    assert!(got.contains(&AuditAnomaly::DuplicateTx { tx: "4".into() }), "{got:?}");
    assert!(got.contains(&AuditAnomaly::OpenIntent { tx: "5".into() }));
    assert!(got.contains(&AuditAnomaly::VersionReused { version: 4, txs: vec!["4".into(), "4".into()] }));
    assert!(got.contains(&AuditAnomaly::VersionNotAdvanced { tx: "6".into() }));
    assert!(got.contains(&AuditAnomaly::CapExceeded { version: 7, drained: vec!["b".into(), "c".into()] }));

    // a forced drain over the cap says so and is not an anomaly
    let mut forced = good.clone();
    let mut f = row("7", "c", "state=down", Committed, 4, 5);
    f.note = Some("forced by operator".into());
    forced.push(f);
    assert_eq!(audit::check(&forced, 1), vec![]);
    // ... as the switch writes it: the mark in the reason
    let mut forced = good.clone();
    let mut f = row("7", "c", "state=down", Committed, 4, 5);
    f.reason = format!("rule: drain {}", failover::audit::FORCED);
    forced.push(f);
    assert_eq!(audit::check(&forced, 1), vec![]);
    let mut not_forced = forced.clone();
    if let Some(r) = not_forced.last_mut() {
        r.reason = "rule: drain".into();
    }
    assert_eq!(audit::check(&not_forced, 1), vec![AuditAnomaly::CapExceeded { version: 5, drained: vec!["b".into(), "c".into()] }]);
}

/// A failback step's row (`state=active home_slots=…`) leaves the cell active:
/// another cell drained during the ramp is within a cap of 1.
#[test]
fn a_cell_ramping_back_is_not_counted_as_drained() {
    use AuditStatus::*;
    let rows = vec![
        row("1", "a", "state=down spread=b:512,c:512", Committed, 1, 2),
        row("2", "a", "state=active home_slots=102/1024", Committed, 2, 3),
        row("3", "b", "state=down", Committed, 3, 4),
        row("4", "a", "state=active", Committed, 4, 5),
    ];
    assert_eq!(audit::check(&rows, 1), vec![]);
    let mut still_down = rows.clone();
    still_down[1].to = "state=down home_slots=102/1024".into();
    assert_eq!(audit::check(&still_down, 1), vec![AuditAnomaly::CapExceeded { version: 4, drained: vec!["a".into(), "b".into()] }]);
    // a ramp that starts from a cell serving all of its traffic took traffic from it
    let mut from_serving = rows.clone();
    from_serving.insert(0, row("0", "c", "state=active home_slots=103/1024", Committed, 0, 1));
    from_serving[0].from = "state=active".into();
    assert_eq!(audit::check(&from_serving, 1), vec![AuditAnomaly::RampOfServingCell { tx: "0".into(), cell: "c".into() }]);
}

#[test]
fn issued_ids_must_be_unique_across_processes_and_increasing_in_each() {
    let history = vec![rec("r1", "us", 10, true, true)];
    let cells = cells_holding(&["id-r1"], &["a", "b", "c"]);
    let judged = |logs: &BTreeMap<String, Vec<u64>>| {
        let mut v = checker::check(Evidence { history: &history, cells: &cells, all_cells: &all(), audit: &[], drain_cap: 1 });
        v.add_issued(logs);
        v
    };
    // two processes, two runs of one of them: all distinct, each increasing
    let logs = BTreeMap::from([
        ("a-0-100".to_string(), vec![1, 5, 9]),
        ("a-0-200".to_string(), vec![10, 11]),
        ("b-1-300".to_string(), vec![2, 3, 4]),
    ]);
    let v = judged(&logs);
    assert!(v.ok(), "{v:?}");
    assert_eq!(v.issued, 8);

    // a restart that issues an id its earlier run issued (a clock behind, no high-water mark)
    let mut reissued = logs.clone();
    reissued.insert("a-0-200".to_string(), vec![9, 12]);
    let v = judged(&reissued);
    assert_eq!(v.duplicate_ids, vec!["9 (issued by a-0-100 and a-0-200)".to_string()]);
    assert!(v.unordered_ids.is_empty());
    assert!(!v.ok());

    // one process going backwards (and repeating itself)
    let mut backwards = logs;
    backwards.insert("b-1-300".to_string(), vec![2, 4, 3, 3]);
    let v = judged(&backwards);
    assert_eq!(v.unordered_ids, vec!["b-1-300: 3 after 4".to_string(), "b-1-300: 3 after 3".to_string()]);
    assert_eq!(v.duplicate_ids, vec!["3 (issued by b-1-300 and b-1-300)".to_string()]);
    assert!(!v.ok());
}
