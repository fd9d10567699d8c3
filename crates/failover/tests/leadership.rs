//! One controller at a time on a shared local store: leadership, fencing,
//! the drain cap at commit, crashes between the steps of a switch, retries
//! and continuous reconcile (SQLite audit, real time with short leases; the
//! assertions are on rows and tables, never on durations).
#![cfg(feature = "sql")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use cellctx::CellId;
use cellrouter::{Cell, CellState, RoutingTable, TableStore};
use failover::audit::{AuditLog, AuditRecord, AuditStatus};
use failover::{
    CellSpec, Change, Controller, ControllerEvent, ControllerHandle, DecisionConfig, DecisionEngine, EngineHandle, Error,
    LocalStore, LocalSwitch, RetryPolicy, SwitchBackend, SwitchOutcome, SwitchRequest, spawn_engine,
};
use support::{At, Fault, Faulty};
use tokio::sync::broadcast;

const TTL: Duration = Duration::from_secs(1);

fn id(s: &str) -> CellId {
    s.parse().unwrap()
}

fn table() -> RoutingTable {
    let mut a = Cell::new(id("a"), id("eu"), "http://127.0.0.1:1");
    a.failover = vec![id("c")];
    let mut b = Cell::new(id("b"), id("eu"), "http://127.0.0.1:2");
    b.failover = vec![id("c")];
    let c = Cell::new(id("c"), id("eu"), "http://127.0.0.1:3");
    RoutingTable::uniform(id("eu"), vec![a, b, c], 96)
}

struct Env {
    _dir: tempfile::TempDir,
    audit: AuditLog,
    shared: LocalStore,
}

impl Env {
    async fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("audit.db").display());
        let audit = AuditLog::connect(&url, "failover_audit").await.unwrap();
        let shared = LocalStore::new(TableStore::with_table(table()).unwrap());
        Env { _dir: dir, audit, shared }
    }

    fn switch(&self, actor: &str, worker: u32) -> LocalSwitch {
        let ids = idgen::Generator::try_new(idgen::Layout::seed(), 0, worker).unwrap();
        LocalSwitch::new(self.shared.clone(), self.audit.clone(), ids)
            .with_actor(actor)
            .with_lease_ttl(TTL)
            .unwrap()
            .with_max_drained(NonZeroUsize::new(1).unwrap())
    }

    fn state(&self, cell: &str) -> CellState {
        self.shared.table().current().unwrap().cell(&id(cell)).unwrap().state
    }

    fn version(&self) -> u64 {
        self.shared.table().version().unwrap()
    }

    async fn rows(&self) -> Vec<AuditRecord> {
        self.audit.all().await.unwrap()
    }
}

fn engine() -> EngineHandle {
    let e = DecisionEngine::try_new(DecisionConfig::new(), CellSpec::from_table(&table(), 10.0)).unwrap();
    spawn_engine(e, Vec::new(), Duration::from_millis(50))
}

async fn controller<B: SwitchBackend>(backend: B, engine: &EngineHandle) -> ControllerHandle {
    let retry = RetryPolicy::try_new(Duration::from_millis(20), Duration::from_millis(200)).unwrap().with_seed(7);
    Controller::new(backend)
        .with_retry(retry)
        .with_reconcile_every(Duration::from_millis(250))
        .unwrap()
        .spawn(engine)
        .await
        .unwrap()
}

/// The next event `pick` accepts (others are skipped), within 20 s.
async fn wait_for<T>(
    events: &mut broadcast::Receiver<ControllerEvent>,
    mut pick: impl FnMut(&ControllerEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let ev = events.recv().await.unwrap();
            if let Some(t) = pick(&ev) {
                return t;
            }
        }
    })
    .await
    .expect("event not seen within 20 s")
}

fn elected(ev: &ControllerEvent) -> Option<failover::Term> {
    match ev {
        ControllerEvent::Elected { term } => Some(*term),
        _ => None,
    }
}

fn switched(ev: &ControllerEvent) -> Option<AuditRecord> {
    match ev {
        ControllerEvent::Switched(r) => Some((**r).clone()),
        _ => None,
    }
}

/// Every row is settled exactly once and the committed rows' versions grow
/// strictly, each one step above the previous.
fn assert_audit_law(rows: &[AuditRecord]) {
    assert!(rows.iter().all(|r| r.status != AuditStatus::Intent), "unsettled rows: {rows:?}");
    let committed: Vec<&AuditRecord> =
        rows.iter().filter(|r| matches!(r.status, AuditStatus::Committed | AuditStatus::Applied)).collect();
    for w in committed.windows(2) {
        assert!(w[1].version_before == w[0].version_after && w[1].version_after > w[0].version_after, "{rows:?}");
    }
    let mut ids: Vec<&str> = rows.iter().map(|r| r.tx_id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), rows.len(), "one row per switch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_controllers_on_one_store_only_the_leader_acts() {
    let env = Env::new().await;
    let engine = engine();
    let first = controller(env.switch("ctl-1", 1), &engine).await;
    let mut ev1 = first.events();
    let t1 = wait_for(&mut ev1, elected).await;
    let second = controller(env.switch("ctl-2", 2), &engine).await;
    let mut ev2 = second.events();

    engine.drain(&id("a")).await.unwrap();
    let row = wait_for(&mut ev1, switched).await;
    assert_eq!((row.actor.as_str(), row.to.as_str(), row.version_after), ("ctl-1", "state=down", 2));
    // The follower saw the same decision and did nothing with it, through
    // several lease periods (the leader keeps renewing).
    tokio::time::sleep(TTL * 3).await;
    while let Ok(ev) = ev2.try_recv() {
        assert!(!matches!(ev, ControllerEvent::Elected { .. } | ControllerEvent::Switched(_)), "follower acted: {ev:?}");
    }
    assert_eq!(env.shared.leadership().map(|(t, _)| t), Some(t1));
    let rows = env.rows().await;
    assert!(rows.iter().all(|r| r.actor == "ctl-1"), "{rows:?}");
    assert_eq!(env.state("a"), CellState::Down);
    drop((first, second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_after_its_intent_is_rolled_back_and_redone_by_the_next() {
    let env = Env::new().await;
    let engine = engine();
    let faulty = Arc::new(Faulty::new(env.switch("doomed", 1), Fault::Crash(At::WriteTable)));
    let first = controller(faulty.clone(), &engine).await;
    let mut ev1 = first.events();
    let t1 = wait_for(&mut ev1, elected).await;
    let second = controller(env.switch("heir", 2), &engine).await;
    let mut ev2 = second.events();

    engine.drain(&id("a")).await.unwrap();
    let mut stopped = faulty.stopped();
    stopped.wait_for(|s| *s == Some(false)).await.unwrap();
    let rows = env.rows().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, AuditStatus::Intent);
    drop(first); // the process dies between the intent and the table write

    let t2 = wait_for(&mut ev2, elected).await;
    assert!(t2 > t1);
    let report = wait_for(&mut ev2, |e| match e {
        ControllerEvent::Reconciled(r) => Some(r.clone()),
        _ => None,
    })
    .await;
    assert_eq!(report.rolled_back, vec![rows[0].tx_id.clone()]);
    // The heir brings the table in line with the plan: a drained, once.
    let redo = wait_for(&mut ev2, switched).await;
    assert_eq!((redo.actor.as_str(), redo.version_before, redo.version_after), ("heir", 1, 2));
    assert_eq!(env.state("a"), CellState::Down);
    let rows = env.rows().await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].status, AuditStatus::RolledBack);
    assert_eq!(rows[0].note.as_deref(), Some("reconciled by heir: table never written"));
    assert_eq!(rows[1].tx_id, redo.tx_id);
    assert_audit_law(&rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_after_its_commit_is_recorded_committed_by_the_next() {
    let env = Env::new().await;
    let engine = engine();
    let faulty = Arc::new(Faulty::new(env.switch("doomed", 1), Fault::Crash(At::RecordOutcome)));
    let first = controller(faulty.clone(), &engine).await;
    let mut ev1 = first.events();
    wait_for(&mut ev1, elected).await;
    let second = controller(env.switch("heir", 2), &engine).await;
    let mut ev2 = second.events();

    engine.drain(&id("a")).await.unwrap();
    faulty.stopped().wait_for(|s| *s == Some(false)).await.unwrap();
    assert_eq!((env.version(), env.state("a")), (2, CellState::Down), "the table write happened");
    assert_eq!(env.rows().await[0].status, AuditStatus::Intent);
    drop(first); // the process dies between the table write and the outcome row

    wait_for(&mut ev2, elected).await;
    let report = wait_for(&mut ev2, |e| match e {
        ControllerEvent::Reconciled(r) => Some(r.clone()),
        _ => None,
    })
    .await;
    let rows = env.rows().await;
    assert_eq!(report.committed, vec![rows[0].tx_id.clone()]);
    assert_eq!(rows.len(), 1, "the heir finds the drain in force: no second switch");
    assert_eq!(rows[0].status, AuditStatus::Committed);
    assert_eq!(rows[0].note.as_deref(), Some("reconciled by heir: table write found"));
    assert_eq!(env.version(), 2);
    assert_audit_law(&rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_switch_is_reconciled_at_once_and_retried_with_backoff() {
    let env = Env::new().await;
    let engine = engine();
    let faulty = Faulty::new(env.switch("ctl", 1), Fault::FailOnce(At::WriteTable));
    let handle = controller(faulty, &engine).await;
    let mut events = handle.events();
    wait_for(&mut events, elected).await;

    engine.drain(&id("a")).await.unwrap();
    let failed = wait_for(&mut events, |e| match e {
        ControllerEvent::Failed { cell, error } => Some((cell.clone(), error.clone())),
        _ => None,
    })
    .await;
    assert_eq!(failed.0, id("a"));
    assert!(failed.1.contains("injected"), "{failed:?}");
    let report = wait_for(&mut events, |e| match e {
        ControllerEvent::Reconciled(r) => Some(r.clone()),
        _ => None,
    })
    .await;
    assert_eq!(report.rolled_back.len(), 1);
    let (attempt, delay) = wait_for(&mut events, |e| match e {
        ControllerEvent::Retrying { attempt, delay, .. } => Some((*attempt, *delay)),
        _ => None,
    })
    .await;
    assert_eq!(attempt, 1);
    assert!(delay >= Duration::from_millis(20) && delay < Duration::from_millis(200), "{delay:?}");
    let row = wait_for(&mut events, switched).await;
    assert_eq!((row.version_before, row.version_after), (1, 2));
    assert_eq!(env.state("a"), CellState::Down);
    let rows = env.rows().await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].status, AuditStatus::RolledBack);
    assert_eq!(rows[0].tx_id, report.rolled_back[0]);
    assert_audit_law(&rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_row_that_failed_is_settled_by_the_next_reconcile_without_a_second_switch() {
    let env = Env::new().await;
    let engine = engine();
    let handle = controller(Faulty::new(env.switch("ctl", 1), Fault::FailOnce(At::RecordOutcome)), &engine).await;
    let mut events = handle.events();
    wait_for(&mut events, elected).await;

    engine.drain(&id("a")).await.unwrap();
    let report = wait_for(&mut events, |e| match e {
        ControllerEvent::Reconciled(r) => Some(r.clone()),
        _ => None,
    })
    .await;
    assert_eq!(report.committed.len(), 1);
    let unchanged = wait_for(&mut events, |e| match e {
        ControllerEvent::NoChange { cell, version } => Some((cell.clone(), *version)),
        _ => None,
    })
    .await;
    assert_eq!(unchanged, (id("a"), 2));
    let rows = env.rows().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, AuditStatus::Committed);
    assert_audit_law(&rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leaders_late_write_is_fenced_off_after_another_took_over() {
    let env = Env::new().await;
    // The old leader's engine drains a; the new leader's engine sees a healthy.
    let (old_engine, new_engine) = (engine(), engine());
    let faulty = Arc::new(Faulty::new(env.switch("old", 1), Fault::Pause(At::WriteTable)));
    let old = controller(faulty.clone(), &old_engine).await;
    let mut old_events = old.events();
    let t1 = wait_for(&mut old_events, elected).await;
    let new = controller(env.switch("new", 2), &new_engine).await;
    let mut new_events = new.events();

    old_engine.drain(&id("a")).await.unwrap();
    faulty.stopped().wait_for(|s| *s == Some(true)).await.unwrap();
    // The pause outlasts the lease: the other controller takes over and
    // settles the paused intent (no table write behind it).
    let t2 = wait_for(&mut new_events, elected).await;
    assert!(t2 > t1);
    wait_for(&mut new_events, |e| matches!(e, ControllerEvent::Reconciled(_)).then_some(())).await;
    // The old leader wakes up and writes: the table version it read is still
    // the stored one, only the term fences it off.
    assert_eq!(env.version(), 1);
    faulty.release();
    let reason = wait_for(&mut old_events, |e| match e {
        ControllerEvent::Deposed { term, reason } if *term == t1 => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(reason.contains("superseded") || reason.contains("expired") || reason.contains("deadline"), "{reason}");
    assert_eq!((env.version(), env.state("a")), (1, CellState::Active), "no late write");
    let rows = env.rows().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, AuditStatus::RolledBack);
    assert_eq!(env.shared.leadership(), Some((t2, true)));
    drop((old, new));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_with_a_superseded_term_is_refused_and_rolled_back() {
    let env = Env::new().await;
    let (one, two) = (env.switch("one", 1), env.switch("two", 2));
    let t1 = one.campaign().await.unwrap();
    let failover::Prepare::Intent(p) = one.prepare(&SwitchRequest::new(Change::Drain(id("a")))).await.unwrap() else {
        panic!("a drain of an active cell is a change")
    };
    // `one` stops renewing; `two` waits out the lease and takes over.
    let t2 = two.campaign().await.unwrap();
    assert!(t2 > t1);
    assert!(matches!(one.prepare(&SwitchRequest::new(Change::Drain(id("b")))).await, Err(Error::NotLeader(_))));
    let late = one.write_table(&p).await;
    assert!(matches!(late, Err(Error::NotLeader(_))), "{late:?}");
    assert!(matches!(one.renew().await, Err(Error::NotLeader(_))));
    assert_eq!((env.version(), env.state("a")), (1, CellState::Active));
    let row = env.audit.get(&p.record().tx_id).await.unwrap().unwrap();
    assert_eq!(row.status, AuditStatus::RolledBack);
    assert!(row.note.unwrap().contains("superseded"));
    // The new leader switches normally.
    assert!(matches!(two.switch(SwitchRequest::new(Change::Drain(id("a")))).await, Ok(SwitchOutcome::Committed(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_drains_never_exceed_the_cap_of_the_stored_table() {
    let env = Env::new().await;
    let leader = env.switch("ctl", 1);
    leader.campaign().await.unwrap();
    let (x, y) = tokio::join!(
        leader.switch(SwitchRequest::new(Change::Drain(id("a")))),
        leader.switch(SwitchRequest::new(Change::Drain(id("b")))),
    );
    let committed = [&x, &y].iter().filter(|r| matches!(r, Ok(SwitchOutcome::Committed(_)))).count();
    assert_eq!(committed, 1, "{x:?} {y:?}");
    assert!([&x, &y].iter().any(|r| matches!(r, Err(Error::DrainCap { cap: 1, .. }) | Err(Error::Conflict { .. }))));
    let drained = [env.state("a"), env.state("b"), env.state("c")].iter().filter(|s| **s != CellState::Active).count();
    assert_eq!(drained, 1);
    // Refused at prepare time (cap) there is no row; refused at the write
    // (the other drain landed in between) the intent is rolled back.
    assert_audit_law(&env.rows().await);
    // A further drain is refused against the stored table; a failback passes.
    let more = leader.switch(SwitchRequest::new(Change::Drain(id("c")))).await;
    assert!(matches!(more, Err(Error::DrainCap { drained: 1, cap: 1 })), "{more:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_each_within_their_cap_never_drain_more_than_the_cap_together() {
    let env = Env::new().await;
    // Each engine's own view allows one drain: b for the first, a for the second.
    let (e1, e2) = (engine(), engine());
    let first = controller(env.switch("ctl-1", 1), &e1).await;
    let mut ev1 = first.events();
    wait_for(&mut ev1, elected).await;
    let second = controller(env.switch("ctl-2", 2), &e2).await;
    let mut ev2 = second.events();
    e1.drain(&id("b")).await.unwrap();
    e2.drain(&id("a")).await.unwrap();
    wait_for(&mut ev1, switched).await;
    drop(first); // the leader dies; the second takes over with its own plan
    wait_for(&mut ev2, elected).await;
    // Its plan wants a drained and b back (it never drained it); cells are
    // resynced in order, so a's drain comes first and is refused by the cap
    // of the stored table until b's failback frees it, then retried.
    let error = wait_for(&mut ev2, |e| match e {
        ControllerEvent::Failed { cell, error } if *cell == id("a") => Some(error.clone()),
        _ => None,
    })
    .await;
    assert!(error.contains("drain cap"), "{error}");
    let mut seen = Vec::new();
    while seen.iter().filter(|r: &&AuditRecord| r.status != AuditStatus::RolledBack).count() < 2 {
        seen.push(wait_for(&mut ev2, switched).await);
    }
    assert_eq!((env.state("a"), env.state("b")), (CellState::Down, CellState::Active));
    // Replaying every committed row over the first table, at no version were
    // two cells drained.
    let rows = env.rows().await;
    assert_audit_law(&rows);
    let mut t = table();
    for r in rows.iter().filter(|r| r.status != AuditStatus::RolledBack) {
        let cell = t.cell_mut(&id(&r.flow)).unwrap();
        cell.state = if r.to == "state=down" { CellState::Down } else { CellState::Active };
        assert!(t.cells.iter().filter(|c| c.state != CellState::Active).count() <= 1, "{rows:?}");
    }
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_apply_that_times_out_is_reported_as_a_timeout_not_zero_ms() {
    use failover::sla::{SlaConfig, SlaTracker};
    let env = Env::new().await;
    let engine = engine();
    let sla = Arc::new(SlaTracker::try_new(SlaConfig::default()).unwrap());
    // A router that never takes the new table (stuck on version 1).
    let stuck = TableStore::with_table(table()).unwrap();
    let handle = Controller::new(env.switch("ctl", 1))
        .with_sla(sla.clone())
        .with_router(stuck)
        .with_apply_wait(Duration::from_millis(50))
        .spawn(&engine)
        .await
        .unwrap();
    let mut events = handle.events();
    engine.drain(&id("a")).await.unwrap();
    let row = wait_for(&mut events, switched).await;
    assert_eq!((row.status, row.applied_at_ms), (AuditStatus::Committed, None));
    let r = sla.report().switches;
    assert_eq!((r.count, r.apply_timed_out, r.apply_not_tracked), (1, 1, 0));
    assert_eq!((r.mean_ms.apply, r.max_ms.apply, r.mean_ms.total), (None, None, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_reconciles_and_prunes_the_audit_table_periodically() {
    use failover::audit::{Retention, epoch_ms};
    let env = Env::new().await;
    let engine = engine();
    // A settled row two hours old, there before the leader starts (settled
    // first: a running leader would roll an open intent back itself).
    let now = epoch_ms(std::time::SystemTime::now());
    let orphan = AuditRecord {
        tx_id: "900".into(),
        flow: "a".into(),
        from: "state=active".into(),
        to: "state=down".into(),
        reason: "operator".into(),
        rule: "manual".into(),
        actor: "tool".into(),
        status: AuditStatus::Intent,
        version_before: 1,
        version_after: 2,
        detected_at_ms: now,
        decided_at_ms: now,
        intent_at_ms: now,
        committed_at_ms: None,
        applied_at_ms: None,
        note: None,
    };
    let old = AuditRecord { tx_id: "800".into(), intent_at_ms: now - 7_200_000, ..orphan.clone() };
    env.audit.insert_intent(&old).await.unwrap();
    assert!(env.audit.mark_rolled_back("800", "conflict").await.unwrap());
    let handle = Controller::new(env.switch("ctl", 1))
        .with_reconcile_every(Duration::from_millis(100))
        .unwrap()
        .with_retention(Retention::try_new(Some(Duration::from_secs(3600)), None).unwrap())
        .spawn(&engine)
        .await
        .unwrap();
    let mut events = handle.events();
    wait_for(&mut events, elected).await;
    // An orphan intent appears behind the running leader's back (an operator
    // tool that died mid-switch): a periodic reconcile rolls it back.
    env.audit.insert_intent(&orphan).await.unwrap();
    let report = wait_for(&mut events, |e| match e {
        ControllerEvent::Reconciled(r) if !r.rolled_back.is_empty() => Some(r.clone()),
        _ => None,
    })
    .await;
    assert_eq!(report.rolled_back, vec!["900".to_string()]);
    // The pass that reconciled also pruned (or the next one will).
    tokio::time::timeout(Duration::from_secs(20), async {
        while env.audit.get("800").await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the old settled row was not pruned");
    let rows = env.rows().await;
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].tx_id.as_str(), rows[0].status), ("900", AuditStatus::RolledBack));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_shut_down_resigns_and_the_follower_takes_over_without_waiting_for_the_lease() {
    let env = Env::new().await;
    let engine = engine();
    // A lease far longer than the test's waits: only a resignation lets the
    // follower in.
    let long = |actor: &str, worker: u32| env.switch(actor, worker).with_lease_ttl(Duration::from_secs(600)).unwrap();
    let first = controller(long("ctl-1", 1), &engine).await;
    let mut ev1 = first.events();
    let t1 = wait_for(&mut ev1, elected).await;
    let second = controller(long("ctl-2", 2), &engine).await;
    let mut ev2 = second.events();
    first.shutdown().await;
    let t2 = wait_for(&mut ev2, elected).await;
    assert!(t2 > t1);
    engine.drain(&id("a")).await.unwrap();
    let row = wait_for(&mut ev2, switched).await;
    assert_eq!(row.actor, "ctl-2");
}
