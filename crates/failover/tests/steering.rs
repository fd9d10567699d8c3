//! Traffic steered through the routing table: the failback ramp in audited
//! steps, a relapse that reverts it, a drain spread by headroom, a cohort for
//! a canary, and a forced drain past the cap. All through `LocalSwitch` with
//! its SQLite audit log.
#![cfg(feature = "sql")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::num::NonZeroUsize;
use std::time::Duration;

use cellctx::CellId;
use cellrouter::{Cell, CellState, RoutingTable, SlotState, TableStore};
use failover::audit::{AuditLog, AuditRecord};
use failover::{
    CellSpec, Change, Decision, DecisionConfig, DecisionEngine, DrainReason, Error, Failback, LocalSwitch, RampCurve,
    SwitchBackend, SwitchOutcome, SwitchRequest,
};
use tokio::time::Instant;

fn id(s: &str) -> CellId {
    s.parse().unwrap()
}

/// Cells a (failover b, c), b, c in one region of `slots` slots, plus an
/// optional slot-less `canary`.
fn table(slots: u32, canary: bool) -> RoutingTable {
    let cell = |n: &str| Cell::new(id(n), id("eu"), format!("http://127.0.0.1:{}", n.len()));
    let mut a = cell("a");
    a.failover = vec![id("b"), id("c")];
    let mut t = RoutingTable::uniform(id("eu"), vec![a, cell("b"), cell("c")], slots);
    if canary {
        t.cells.push(cell("canary"));
    }
    t
}

async fn switch(dir: &tempfile::TempDir, store: &TableStore) -> LocalSwitch {
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("audit.db").display());
    let audit = AuditLog::connect(&url, "failover_audit").await.unwrap();
    let ids = idgen::Generator::try_new(idgen::Layout::seed(), 0, 3).unwrap();
    let s = LocalSwitch::new(store.clone(), audit, ids);
    s.campaign().await.unwrap();
    s
}

async fn commit(s: &LocalSwitch, req: SwitchRequest) -> AuditRecord {
    match s.switch(req).await.unwrap() {
        SwitchOutcome::Committed(r) => *r,
        other => panic!("expected a commit, got {other:?}"),
    }
}

/// Per slot of region `eu`: (owner, migration target).
fn slots(store: &TableStore) -> Vec<(CellId, Option<CellId>)> {
    let t = store.current().unwrap();
    (0..t.slot_count())
        .map(|s| match t.slot_state(&id("eu"), s).unwrap() {
            SlotState::Stable(o) => (o.clone(), None),
            SlotState::Migrating { from, to } => (from.clone(), Some(to.clone())),
        })
        .collect()
}

fn count(slots: &[(CellId, Option<CellId>)], owner: &str, to: Option<&str>) -> usize {
    slots.iter().filter(|(o, t)| o.as_str() == owner && t.as_ref().map(|c| c.as_str()) == to).count()
}

/// Found by the fault campaign (seed 1040): a controller that took the lead
/// while its own engine was ramping a cell the table never had drained wrote
/// the ramp, moving 90 % of a serving cell's users away. A ramp only gives
/// traffic back.
#[tokio::test]
async fn a_ramp_never_takes_traffic_from_a_cell_that_serves_all_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = TableStore::with_table(table(999, false)).unwrap();
    let s = switch(&dir, &store).await;
    for permille in [100u16, 500] {
        let out = s.switch(SwitchRequest::new(Change::Ramp { cell: id("a"), permille })).await.unwrap();
        assert!(matches!(out, SwitchOutcome::NoChange { version: 1 }), "{out:?}");
    }
    assert_eq!(count(&slots(&store), "a", None), 333, "every slot of a still home");
    assert!(s.audit().all().await.unwrap().is_empty());
    // after a drain the same steps do move the slots
    commit(&s, SwitchRequest::new(Change::Drain(id("a")))).await;
    commit(&s, SwitchRequest::new(Change::Ramp { cell: id("a"), permille: 100 })).await;
    assert_eq!(count(&slots(&store), "a", None), 34);
}

#[tokio::test]
async fn the_failback_ramp_is_a_table_version_and_an_audit_row_per_step() {
    let dir = tempfile::tempdir().unwrap();
    let store = TableStore::with_table(table(999, false)).unwrap();
    let s = switch(&dir, &store).await;
    commit(&s, SwitchRequest::new(Change::Drain(id("a")))).await;
    // a owns 333 slots: 10 % (rounded up) back home, then 50 %, then all
    let mut rows = Vec::new();
    for (permille, home) in [(100u16, 34usize), (500, 167)] {
        rows.push(commit(&s, SwitchRequest::new(Change::Ramp { cell: id("a"), permille })).await);
        let now = slots(&store);
        assert_eq!(count(&now, "a", None), home);
        assert_eq!(count(&now, "a", Some("b")), 333 - home, "the rest stays on a's first failover target");
        assert_eq!(store.current().unwrap().cell(&id("a")).unwrap().state, CellState::Active);
    }
    rows.push(commit(&s, SwitchRequest::new(Change::Failback(id("a")))).await);
    assert_eq!(count(&slots(&store), "a", None), 333);
    let steps: Vec<(&str, &str, u64, u64)> =
        rows.iter().map(|r| (r.from.as_str(), r.to.as_str(), r.version_before, r.version_after)).collect();
    assert_eq!(
        steps,
        vec![
            ("state=down", "state=active home_slots=34/333", 2, 3),
            ("state=active home_slots=34/333", "state=active home_slots=167/333", 3, 4),
            ("state=active home_slots=167/333", "state=active", 4, 5),
        ]
    );
    let audit = s.audit().all().await.unwrap();
    assert_eq!(audit.len(), 4);
    assert_eq!(&audit[1..], &rows[..]);
    // the same step again is in force: no version, no row
    assert!(matches!(s.switch(SwitchRequest::new(Change::Failback(id("a")))).await.unwrap(), SwitchOutcome::NoChange { version: 5 }));
}

#[tokio::test]
async fn a_relapse_during_the_ramp_stops_it_and_drains_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = TableStore::with_table(table(999, false)).unwrap();
    let s = switch(&dir, &store).await;
    let ms = Duration::from_millis;
    let curve = RampCurve::try_new(vec![(Duration::ZERO, 0.1), (ms(1000), 0.5), (ms(2000), 1.0)]).unwrap();
    let cfg = DecisionConfig::new()
        .with_trip(0.05, ms(100))
        .with_recover(0.01, ms(100))
        .with_min_dwell(ms(200))
        .with_probers(1, Duration::from_secs(60))
        .with_failback(Failback::Ramp(curve));
    let mut engine = DecisionEngine::try_new(cfg, CellSpec::from_table(&table(999, false), 100.0)).unwrap();
    let t0 = Instant::now();
    let mut at = t0;
    // ticks every 50 ms with `a` seen up or down, until a decision about a
    let mut until = |engine: &mut DecisionEngine, up: bool| {
        for _ in 0..100 {
            at += ms(50);
            engine.observe("p0", &id("a"), up, at);
            if let Some(d) = engine.tick(at).into_iter().find(|d| d.cell() == &id("a")) {
                return d;
            }
        }
        panic!("no decision about a");
    };
    let drain = until(&mut engine, false);
    commit(&s, SwitchRequest::from_decision(&drain, "test").unwrap()).await;
    let step = until(&mut engine, true);
    assert!(matches!(step, Decision::FailbackStep { share, .. } if share == 0.1), "{step:?}");
    let ramp = commit(&s, SwitchRequest::from_decision(&step, "test").unwrap()).await;
    assert_eq!(ramp.to, "state=active home_slots=34/333");
    assert_eq!(count(&slots(&store), "a", Some("b")), 299);

    let relapse = until(&mut engine, false);
    assert!(matches!(relapse, Decision::Drain { reason: DrainReason::Relapse, .. }), "{relapse:?}");
    let back = commit(&s, SwitchRequest::from_decision(&relapse, "test").unwrap()).await;
    assert_eq!((back.from.as_str(), back.to.as_str()), ("state=active home_slots=34/333", "state=down"));
    assert!(back.reason.contains("relapse"), "{}", back.reason);
    let t = store.current().unwrap();
    assert_eq!(t.cell(&id("a")).unwrap().state, CellState::Down);
    assert!(t.table().migrations.is_empty(), "the ramp's moves are gone");
    assert_eq!(cellrouter::resolve(&t, "any-user").map(|r| r.target != &id("a")), Ok(true));
    let versions: Vec<(u64, u64)> = s.audit().all().await.unwrap().iter().map(|r| (r.version_before, r.version_after)).collect();
    assert_eq!(versions, vec![(1, 2), (2, 3), (3, 4)]);
}

#[tokio::test]
async fn a_drain_beyond_a_targets_headroom_is_spread_over_the_next_targets() {
    let dir = tempfile::tempdir().unwrap();
    let store = TableStore::with_table(table(999, false)).unwrap();
    let s = switch(&dir, &store).await;
    let specs = vec![
        CellSpec::new(id("a")).with_failover([id("b"), id("c")]),
        CellSpec::new(id("b")).with_headroom_rps(60.0),
        CellSpec::new(id("c")).with_headroom_rps(1000.0),
    ];
    let mut engine = DecisionEngine::try_new(DecisionConfig::new(), specs).unwrap();
    engine.set_load(&id("a"), 100.0).unwrap();
    let d = engine.force_drain(&id("a"), Instant::now()).unwrap();
    let req = SwitchRequest::from_decision_in(&d, "test", Some(&engine.plan())).unwrap();
    assert_eq!(req.change, Change::Spread { cell: id("a"), targets: vec![(id("b"), 600), (id("c"), 400)] });
    let row = commit(&s, req).await;
    assert_eq!((row.from.as_str(), row.to.as_str()), ("state=active", "state=down spread=b:200,c:133"));
    let now = slots(&store);
    assert_eq!((count(&now, "a", Some("b")), count(&now, "a", Some("c")), count(&now, "a", None)), (200, 133, 0));
    // b and c keep their own slots
    assert_eq!((count(&now, "b", None), count(&now, "c", None)), (333, 333));
    // a failback undoes the spread
    commit(&s, SwitchRequest::new(Change::Failback(id("a")))).await;
    assert!(store.current().unwrap().table().migrations.is_empty());
}

#[tokio::test]
async fn a_cohort_moves_exactly_its_share_of_a_regions_slots_to_the_canary() {
    let dir = tempfile::tempdir().unwrap();
    let store = TableStore::with_table(table(1024, true)).unwrap();
    let s = switch(&dir, &store).await;
    let before = slots(&store);
    let row = commit(&s, SwitchRequest::new(Change::Cohort { region: id("eu"), permille: 100, to: id("canary") })).await;
    assert_eq!((row.from.as_str(), row.to.as_str()), ("cohort eu->canary: 0 slots", "cohort eu->canary: 102 slots"));
    let after = slots(&store);
    for (slot, (b, a)) in before.iter().zip(after.iter()).enumerate() {
        assert_eq!(a.0, b.0, "slot {slot}: the owner stays");
        let want = (slot < 102).then(|| id("canary"));
        assert_eq!(a.1, want, "slot {slot}");
    }
    // ending the cohort restores the table's routes
    commit(&s, SwitchRequest::new(Change::Cohort { region: id("eu"), permille: 0, to: id("canary") })).await;
    assert_eq!(slots(&store), before);
}

#[tokio::test]
async fn a_manual_drain_respects_the_cap_unless_forced_and_the_audit_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = TableStore::with_table(table(999, false)).unwrap();
    let s = switch(&dir, &store).await.with_max_drained(NonZeroUsize::new(1).unwrap());
    commit(&s, SwitchRequest::new(Change::Drain(id("a")))).await;
    let refused = s.switch(SwitchRequest::new(Change::Drain(id("b")))).await;
    assert!(matches!(refused, Err(Error::DrainCap { drained: 1, cap: 1 })), "{refused:?}");
    let forced = commit(&s, SwitchRequest::new(Change::Drain(id("b"))).with_reason("operator: b's rack").forced()).await;
    assert_eq!(forced.reason, "operator: b's rack [forced: drain cap not applied]");
    assert_eq!(store.current().unwrap().cell(&id("b")).unwrap().state, CellState::Down);
    let rows = s.audit().all().await.unwrap();
    assert_eq!(rows.len(), 2);
    assert!(!rows[0].reason.contains("forced"));
}

mod rules_that_act {
    use std::time::Duration;

    use failover::{Controller, ControllerEvent, RuleEngine, spawn_engine};
    use tokio::sync::broadcast;

    use super::*;

    async fn next<T>(events: &mut broadcast::Receiver<ControllerEvent>, mut pick: impl FnMut(ControllerEvent) -> Option<T>) -> T {
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.expect("no event in 10 s").unwrap();
            if let Some(t) = pick(ev) {
                return t;
            }
        }
    }

    fn switched(ev: ControllerEvent) -> Option<AuditRecord> {
        match ev {
            ControllerEvent::Switched(r) => Some(*r),
            _ => None,
        }
    }

    async fn controller(
        dir: &tempfile::TempDir,
        t: RoutingTable,
        rules: &RuleEngine,
    ) -> (TableStore, failover::EngineHandle, failover::ControllerHandle, broadcast::Receiver<ControllerEvent>) {
        let store = TableStore::with_table(t.clone()).unwrap();
        let s = switch(dir, &store).await;
        let cfg = DecisionConfig::new().with_min_dwell(Duration::from_millis(1));
        let engine = spawn_engine(DecisionEngine::try_new(cfg, CellSpec::from_table(&t, 100.0)).unwrap(), vec![], Duration::from_millis(20));
        let c = Controller::new(s).with_rules(rules.clone(), Duration::from_millis(20)).unwrap().spawn(&engine).await.unwrap();
        let events = c.events();
        (store, engine, c, events)
    }

    #[tokio::test]
    async fn a_cohort_rule_moves_exactly_its_slots_and_ending_it_moves_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let rules = RuleEngine::new();
        rules.load_str("rules:\n  - name: canary-10\n    action: { cohort: { region: eu, percent: 10, to: canary } }\n").unwrap();
        let t = table(1024, true);
        let before = {
            let s = TableStore::with_table(t.clone()).unwrap();
            slots(&s)
        };
        let (store, _engine, _c, mut events) = controller(&dir, t, &rules).await;
        let row = next(&mut events, switched).await;
        assert_eq!((row.rule.as_str(), row.to.as_str()), ("canary-10", "cohort eu->canary: 102 slots"));
        let after = slots(&store);
        let moved: Vec<usize> = (0..after.len()).filter(|&i| after[i] != before[i]).collect();
        assert_eq!(moved, (0..102).collect::<Vec<_>>());
        assert!(moved.iter().all(|&i| after[i] == (before[i].0.clone(), Some(id("canary")))));

        rules.load_str("rules: []\n").unwrap();
        let row = next(&mut events, switched).await;
        assert_eq!(row.to, "cohort eu->canary: 0 slots");
        assert_eq!(slots(&store), before);
    }

    #[tokio::test]
    async fn a_hold_rule_keeps_a_drain_back_until_it_stops_holding() {
        let dir = tempfile::tempdir().unwrap();
        let rules = RuleEngine::new();
        rules.load_str("rules:\n  - name: keep-a\n    when: \"now.unix > 0\"\n    action: { hold_drain: a }\n").unwrap();
        let (store, engine, _c, mut events) = controller(&dir, table(999, false), &rules).await;
        engine.drain(&id("a")).await.unwrap();
        let (cell, rule) = next(&mut events, |e| match e {
            ControllerEvent::Held { cell, rule, .. } => Some((cell, rule)),
            _ => None,
        })
        .await;
        assert_eq!((cell, rule.as_str()), (id("a"), "keep-a"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(store.current().unwrap().cell(&id("a")).unwrap().state, CellState::Active, "held");

        rules.load_str("rules: []\n").unwrap();
        let row = next(&mut events, switched).await;
        assert_eq!(row.to, "state=down");
        assert!(row.reason.contains("keep-a"), "{}", row.reason);
    }

    #[tokio::test]
    async fn a_failback_blocked_by_a_window_waits_and_a_rule_drain_is_forced() {
        let dir = tempfile::tempdir().unwrap();
        let rules = RuleEngine::new();
        // a window that holds at any hour (the test cannot pick the clock)
        rules.load_str("rules:\n  - name: peak\n    when: \"now.hour >= 0 && now.hour < 24\"\n    action: { block_failback: a }\n").unwrap();
        let (store, engine, _c, mut events) = controller(&dir, table(999, false), &rules).await;
        engine.drain(&id("a")).await.unwrap();
        assert_eq!(next(&mut events, switched).await.to, "state=down");
        engine.approve_failback(&id("a")).await.unwrap();
        let change = next(&mut events, |e| match e {
            ControllerEvent::Held { change, .. } => Some(change),
            _ => None,
        })
        .await;
        assert!(matches!(change, Change::Ramp { .. } | Change::Failback(_)), "{change:?}");
        assert_eq!(store.current().unwrap().cell(&id("a")).unwrap().state, CellState::Down, "blocked");

        // the window ends; a drain rule for b acts, forced
        rules.load_str("rules:\n  - name: drain-b\n    action: { drain: b }\n").unwrap();
        let mut rows = [next(&mut events, switched).await, next(&mut events, switched).await];
        rows.sort_by_key(|r| r.flow.clone());
        // released as the plan wants it now: the ramp's current step
        assert_eq!(rows[0].flow, "a");
        assert!(rows[0].from == "state=down" && rows[0].to.starts_with("state=active"), "{:?}", rows[0]);
        assert_eq!((rows[1].flow.as_str(), rows[1].to.as_str(), rows[1].rule.as_str()), ("b", "state=down", "drain-b"));
        assert!(rows[1].reason.contains("forced"), "{}", rows[1].reason);
    }
}
