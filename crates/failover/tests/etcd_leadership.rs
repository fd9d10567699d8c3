//! One controller at a time over etcd: the election, the term in the commit
//! transaction, the drain cap against the stored table and a leader dying
//! between the steps (shared etcd with unique keys, audit on SQLite).
#![cfg(all(feature = "etcd", feature = "sql"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use cellctx::CellId;
use cellrouter::{Cell, CellState, RoutingTable};
use etcd_client::Client;
use failover::audit::{AuditLog, AuditRecord, AuditStatus};
use failover::switch::AtomicSwitch;
use failover::{
    CellSpec, Change, Controller, ControllerEvent, ControllerHandle, DecisionConfig, DecisionEngine, EngineHandle, Error,
    Prepare, RetryPolicy, SwitchBackend, SwitchOutcome, SwitchRequest, Term, spawn_engine,
};
use support::{At, Fault, Faulty};
use tokio::sync::broadcast;

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
    key: String,
    prefix: String,
}

impl Env {
    async fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("audit.db").display());
        let audit = AuditLog::connect(&url, "failover_audit").await.unwrap();
        let run = testkit::unique("fo-lead");
        let env = Env { _dir: dir, audit, key: format!("/{run}/table"), prefix: format!("/{run}/failover") };
        env.client().await.put(env.key.as_str(), cellrouter::source::encode(&table()).unwrap(), None).await.unwrap();
        env
    }

    async fn client(&self) -> Client {
        Client::connect(testkit::etcd_endpoints(), None).await.unwrap()
    }

    async fn switch(&self, actor: &str, worker: u32) -> AtomicSwitch {
        let ids = idgen::Generator::try_new(idgen::Layout::seed(), 2, worker).unwrap();
        AtomicSwitch::connect(&testkit::etcd_endpoints(), self.audit.clone(), ids)
            .await
            .unwrap()
            .with_table_key(self.key.clone())
            .with_prefix(self.prefix.clone())
            .with_lease_ttl(Duration::from_secs(2))
            .with_actor(actor)
            .with_max_drained(NonZeroUsize::new(1).unwrap())
    }

    async fn table(&self) -> RoutingTable {
        let r = self.client().await.get(self.key.as_str(), None).await.unwrap();
        cellrouter::source::decode(r.kvs()[0].value()).unwrap()
    }

    async fn cleanup(&self) {
        let run = self.key.trim_end_matches("/table").to_string();
        let _ = self.client().await.delete(run, Some(etcd_client::DeleteOptions::new().with_prefix())).await;
    }
}

fn engine() -> EngineHandle {
    let cfg = DecisionConfig::new().with_max_drained(2);
    spawn_engine(DecisionEngine::try_new(cfg, CellSpec::from_table(&table(), 10.0)).unwrap(), Vec::new(), Duration::from_millis(50))
}

async fn controller<B: SwitchBackend>(backend: B, engine: &EngineHandle) -> ControllerHandle {
    let retry = RetryPolicy::try_new(Duration::from_millis(20), Duration::from_millis(400)).unwrap().with_seed(11);
    Controller::new(backend).with_retry(retry).spawn(engine).await.unwrap()
}

async fn wait_for<T>(
    events: &mut broadcast::Receiver<ControllerEvent>,
    mut pick: impl FnMut(&ControllerEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(t) = pick(&events.recv().await.unwrap()) {
                return t;
            }
        }
    })
    .await
    .expect("event not seen within 30 s")
}

fn elected(ev: &ControllerEvent) -> Option<Term> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_etcd_controllers_only_the_leader_acts_and_the_heir_takes_over_when_it_dies() {
    let env = Env::new().await;
    let engine = engine();
    let first = controller(env.switch("ctl-1", 21).await, &engine).await;
    let mut ev1 = first.events();
    let t1 = wait_for(&mut ev1, elected).await;
    let second = controller(env.switch("ctl-2", 22).await, &engine).await;
    let mut ev2 = second.events();

    engine.drain(&id("a")).await.unwrap();
    let row = wait_for(&mut ev1, switched).await;
    assert_eq!((row.actor.as_str(), row.version_after), ("ctl-1", 2));
    assert!(ev2.try_recv().is_err(), "the follower does nothing");

    drop(first); // killed: its lease runs out
    let t2 = wait_for(&mut ev2, elected).await;
    assert!(t2 > t1, "{t2:?} > {t1:?}");
    engine.drain(&id("b")).await.unwrap();
    // The heir acts, and the cap of the stored table (1) refuses b's drain
    // although its engine allows two.
    let error = wait_for(&mut ev2, |e| match e {
        ControllerEvent::Failed { cell, error } if *cell == id("b") => Some(error.clone()),
        _ => None,
    })
    .await;
    assert!(error.contains("drain cap"), "{error}");
    let t = env.table().await;
    assert_eq!((t.version, t.cell(&id("a")).unwrap().state, t.cell(&id("b")).unwrap().state), (2, CellState::Down, CellState::Active));
    assert_eq!(env.audit.all().await.unwrap().len(), 1);
    drop(second);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_etcd_leaders_late_commit_is_refused_by_the_term() {
    let env = Env::new().await;
    let (one, two) = (env.switch("one", 23).await, env.switch("two", 24).await);
    let t1 = one.campaign().await.unwrap();
    let Prepare::Intent(p) = SwitchBackend::prepare(&one, &SwitchRequest::new(Change::Drain(id("a")))).await.unwrap() else {
        panic!("a drain of an active cell is a change")
    };
    // `one` stops renewing (paused); its lease expires and `two` is elected.
    let t2 = two.campaign().await.unwrap();
    assert!(t2 > t1);
    let late = SwitchBackend::write_table(&one, &p).await;
    assert!(matches!(late, Err(Error::NotLeader(_))), "{late:?}");
    let t = env.table().await;
    assert_eq!((t.version, t.cell(&id("a")).unwrap().state), (1, CellState::Active), "the table version still matched: only the term refused it");
    let row = env.audit.get(&p.record().tx_id).await.unwrap().unwrap();
    assert_eq!(row.status, AuditStatus::RolledBack);
    assert!(row.note.unwrap().contains("superseded"));
    let out = SwitchBackend::switch(&two, SwitchRequest::new(Change::Drain(id("a")))).await.unwrap();
    assert!(matches!(out, SwitchOutcome::Committed(ref r) if r.version_after == 2), "{out:?}");
    SwitchBackend::resign(&two).await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_etcd_drains_never_exceed_the_cap() {
    let env = Env::new().await;
    let leader = env.switch("ctl", 25).await;
    SwitchBackend::campaign(&leader).await.unwrap();
    let (x, y) = tokio::join!(
        SwitchBackend::switch(&leader, SwitchRequest::new(Change::Drain(id("a")))),
        SwitchBackend::switch(&leader, SwitchRequest::new(Change::Drain(id("b")))),
    );
    let committed = [&x, &y].iter().filter(|r| matches!(r, Ok(SwitchOutcome::Committed(_)))).count();
    assert_eq!(committed, 1, "{x:?} {y:?}");
    let t = env.table().await;
    assert_eq!(t.cells.iter().filter(|c| c.state != CellState::Active).count(), 1);
    assert!(env.audit.pending().await.unwrap().is_empty());
    // Operators' lock-based switches check the same cap.
    let op = env.switch("operator", 26).await;
    assert!(matches!(op.switch(SwitchRequest::new(Change::Drain(id("c")))).await, Err(Error::DrainCap { drained: 1, cap: 1 })));
    SwitchBackend::resign(&leader).await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_leader_dying_between_steps_is_completed_by_the_heir() {
    for (at, written) in [(At::WriteTable, false), (At::RecordOutcome, true)] {
        let env = Env::new().await;
        let engine = engine();
        let faulty = Arc::new(Faulty::new(env.switch("doomed", 27).await, Fault::Crash(at)));
        let first = controller(faulty.clone(), &engine).await;
        let mut ev1 = first.events();
        wait_for(&mut ev1, elected).await;
        let second = controller(env.switch("heir", 28).await, &engine).await;
        let mut ev2 = second.events();

        engine.drain(&id("a")).await.unwrap();
        faulty.stopped().wait_for(|s| *s == Some(false)).await.unwrap();
        assert_eq!(env.table().await.version, if written { 2 } else { 1 });
        drop(first);

        wait_for(&mut ev2, elected).await;
        let report = wait_for(&mut ev2, |e| match e {
            ControllerEvent::Reconciled(r) => Some(r.clone()),
            _ => None,
        })
        .await;
        assert_eq!((report.committed.len(), report.rolled_back.len()), if written { (1, 0) } else { (0, 1) });
        if !written {
            let redo = wait_for(&mut ev2, switched).await;
            assert_eq!((redo.actor.as_str(), redo.version_after), ("heir", 2));
        }
        let t = env.table().await;
        assert_eq!((t.version, t.cell(&id("a")).unwrap().state), (2, CellState::Down));
        let rows = env.audit.all().await.unwrap();
        assert!(rows.iter().all(|r| r.status != AuditStatus::Intent), "{rows:?}");
        let committed: Vec<u64> =
            rows.iter().filter(|r| r.status != AuditStatus::RolledBack).map(|r| r.version_after).collect();
        assert_eq!(committed, vec![2], "exactly one committed switch: {rows:?}");
        // Settled rows need no marker: none is left behind.
        let markers = env.client().await.get(format!("{}/tx/", env.prefix), Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
        assert!(markers.kvs().is_empty(), "{:?}", markers.kvs());
        drop(second);
        env.cleanup().await;
    }
}
