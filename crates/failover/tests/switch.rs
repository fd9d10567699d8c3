//! The atomic switch against a private etcd and the real MariaDB (plus the
//! audit log on PostgreSQL and SQLite).
#![cfg(all(feature = "etcd", feature = "sql"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use cellctx::CellId;
use cellrouter::source::{EtcdSource, TableSource};
use cellrouter::{Cell, CellState, RoutingTable, TableStore};
use etcd_client::Client;
use failover::audit::{AuditLog, AuditRecord, AuditStatus, epoch_ms};
use failover::sla::{SlaConfig, SlaTracker};
use failover::switch::{AtomicSwitch, Change, SwitchOutcome, SwitchRequest};
use failover::{Error, RuleEngine};

fn id(s: &str) -> CellId {
    s.parse().unwrap()
}

fn table() -> RoutingTable {
    let mut a = Cell::new(id("a"), id("eu"), "http://127.0.0.1:1");
    a.failover = vec![id("b")];
    let b = Cell::new(id("b"), id("eu"), "http://127.0.0.1:2");
    RoutingTable::uniform(id("eu"), vec![a, b], 128)
}

fn sql_name(prefix: &str) -> String {
    testkit::unique(prefix).replace('-', "_")
}

struct Env {
    etcd: testkit::EtcdServer,
    key: String,
    prefix: String,
    audit_table: String,
}

impl Env {
    async fn start() -> Env {
        let etcd = testkit::EtcdServer::start();
        let env = Env {
            etcd,
            key: format!("/{}/table", testkit::unique("fo")),
            prefix: format!("/{}", testkit::unique("fo-sw")),
            audit_table: sql_name("fo_audit"),
        };
        let mut c = env.client().await;
        c.put(env.key.as_str(), cellrouter::source::encode(&table()).unwrap(), None).await.unwrap();
        env
    }

    async fn client(&self) -> Client {
        Client::connect([self.etcd.endpoint()], None).await.unwrap()
    }

    async fn switch(&self, actor: &str, worker: u32) -> AtomicSwitch {
        let audit = AuditLog::connect(&testkit::mysql_url(), &self.audit_table).await.unwrap();
        let ids = idgen::Generator::try_new(idgen::Layout::seed(), 1, worker).unwrap();
        AtomicSwitch::connect(&[self.etcd.endpoint()], audit, ids)
            .await
            .unwrap()
            .with_table_key(self.key.clone())
            .with_prefix(self.prefix.clone())
            .with_lease_ttl(Duration::from_secs(2))
            .with_lock_timeout(Duration::from_secs(20))
            .with_actor(actor)
    }

    async fn table(&self) -> RoutingTable {
        let mut c = self.client().await;
        let r = c.get(self.key.as_str(), None).await.unwrap();
        cellrouter::source::decode(r.kvs()[0].value()).unwrap()
    }

    async fn marker_exists(&self, tx: &str) -> bool {
        let mut c = self.client().await;
        !c.get(format!("{}/tx/{tx}", self.prefix), None).await.unwrap().kvs().is_empty()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_race_exactly_one_commits_with_one_audit_row() {
    let env = Env::start().await;
    let s1 = env.switch("ctl-1", 1).await;
    let s2 = env.switch("ctl-2", 2).await;
    let detected = SystemTime::now() - Duration::from_secs(30);
    let decided = SystemTime::now();
    let req = |rule: &str| {
        SwitchRequest::new(Change::Drain(id("a")))
            .with_reason("error rate 1.2% > 0.5% for 30s")
            .with_rule(rule)
            .with_times(detected, decided)
    };
    let before = epoch_ms(SystemTime::now());
    let (r1, r2) = tokio::join!(s1.switch(req("r1")), s2.switch(req("r2")));
    let after = epoch_ms(SystemTime::now());
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    let committed: Vec<&AuditRecord> = [&r1, &r2]
        .into_iter()
        .filter_map(|r| match r {
            SwitchOutcome::Committed(rec) => Some(&**rec),
            SwitchOutcome::NoChange { .. } => None,
        })
        .collect();
    assert_eq!(committed.len(), 1, "{r1:?} {r2:?}");
    assert!([&r1, &r2].iter().any(|r| matches!(r, SwitchOutcome::NoChange { version: 2 })));
    let rows = s1.audit().all().await.unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row, committed[0]);
    // Column by column.
    assert!(row.tx_id.parse::<u64>().is_ok());
    assert_eq!(row.flow, "a");
    assert_eq!(row.from, "state=active");
    assert_eq!(row.to, "state=down");
    assert_eq!(row.reason, "error rate 1.2% > 0.5% for 30s");
    assert!(row.rule == "r1" || row.rule == "r2");
    assert_eq!(row.actor, if row.rule == "r1" { "ctl-1" } else { "ctl-2" });
    assert_eq!(row.status, AuditStatus::Committed);
    assert_eq!(row.version_before, 1);
    assert_eq!(row.version_after, 2);
    assert_eq!(row.detected_at_ms, epoch_ms(detected));
    assert_eq!(row.decided_at_ms, epoch_ms(decided));
    assert!(row.intent_at_ms >= before && row.intent_at_ms <= after);
    let c = row.committed_at_ms.unwrap();
    assert!(c >= row.intent_at_ms && c <= after);
    assert_eq!(row.applied_at_ms, None);
    assert_eq!(row.note, None);
    // The table and the marker.
    let t = env.table().await;
    assert_eq!(t.version, 2);
    assert_eq!(t.cell(&id("a")).unwrap().state, CellState::Down);
    assert!(env.marker_exists(&row.tx_id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_holding_the_lock_is_reconciled() {
    let env = Env::start().await;
    let endpoint = env.etcd.endpoint();
    let (key, prefix, table_name) = (env.key.clone(), env.prefix.clone(), env.audit_table.clone());
    // Controller 1 dies after writing its intent (before the table write),
    // controller 2 dies after the table write (before recording the commit).
    let crashed: Vec<(String, bool)> = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let out = rt.block_on(async move {
            let mut out = Vec::new();
            for (flow, worker, write) in [("a", 11u32, false), ("b", 12, true)] {
                let audit = AuditLog::connect(&testkit::mysql_url(), &table_name).await.unwrap();
                let ids = idgen::Generator::try_new(idgen::Layout::seed(), 1, worker).unwrap();
                let sw = AtomicSwitch::connect(std::slice::from_ref(&endpoint), audit, ids)
                    .await
                    .unwrap()
                    .with_table_key(key.clone())
                    .with_prefix(prefix.clone())
                    .with_lease_ttl(Duration::from_secs(2))
                    .with_actor("doomed");
                let lock = sw.lock(flow).await.unwrap();
                let p = sw.prepare(&lock, &SwitchRequest::new(Change::Drain(id(flow)))).await.unwrap().unwrap();
                if write {
                    sw.write_table(&lock, &p).await.unwrap();
                }
                out.push((p.record().tx_id.clone(), write));
                std::mem::forget(lock); // no unlock, no revoke: the process dies
            }
            out
        });
        rt.shutdown_background(); // keep-alive tasks die with the runtime
        out
    })
    .join()
    .unwrap();
    let s = env.switch("ctl-new", 3).await;
    assert_eq!(s.audit().pending().await.unwrap().len(), 2);
    // Reconcile takes each flow's lock, which waits out the dead holders' leases (TTL 2 s).
    let report = s.reconcile().await.unwrap();
    let mut c = env.client().await;
    let locks = c.get(format!("{}/lock/", env.prefix), Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
    assert!(locks.kvs().is_empty(), "the dead controllers' locks expired with their leases");
    assert_eq!(report.rolled_back, vec![crashed[0].0.clone()]);
    assert_eq!(report.committed, vec![crashed[1].0.clone()]);
    let rows = s.audit().all().await.unwrap();
    assert_eq!(rows.len(), 2);
    let a = rows.iter().find(|r| r.flow == "a").unwrap();
    assert_eq!(a.status, AuditStatus::RolledBack);
    assert_eq!(a.committed_at_ms, None);
    assert_eq!(a.note.as_deref(), Some("reconciled by ctl-new: table never written"));
    assert_eq!(a.actor, "doomed");
    let b = rows.iter().find(|r| r.flow == "b").unwrap();
    assert_eq!(b.status, AuditStatus::Committed);
    assert!(b.committed_at_ms.is_some());
    assert_eq!(b.note.as_deref(), Some("reconciled by ctl-new: table write found"));
    // The table matches the rows: b's switch happened, a's did not.
    let t = env.table().await;
    assert_eq!(t.version, 2);
    assert_eq!(t.cell(&id("a")).unwrap().state, CellState::Active);
    assert_eq!(t.cell(&id("b")).unwrap().state, CellState::Down);
    // Nothing left to reconcile, and the flow is free again.
    assert_eq!(s.reconcile().await.unwrap(), Default::default());
    let out = s.switch(SwitchRequest::new(Change::Drain(id("a")))).await.unwrap();
    assert!(matches!(out, SwitchOutcome::Committed(ref r) if r.version_after == 3), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_table_writer_makes_the_compare_fail_and_nothing_is_lost() {
    let env = Env::start().await;
    let s = env.switch("ctl-1", 4).await;
    let lock = s.lock("a").await.unwrap();
    let p = s.prepare(&lock, &SwitchRequest::new(Change::Drain(id("a")))).await.unwrap().unwrap();
    // Another writer (an operator tool using cellrouter's publish) changes b's weight.
    let mut other = table();
    other.version = 2;
    other.cell_mut(&id("b")).unwrap().weight = 250;
    let mut c = env.client().await;
    assert!(cellrouter::source::publish(&mut c, &env.key, &other).await.unwrap());
    let err = s.commit(&lock, p.clone()).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    lock.release().await.unwrap();
    let t = env.table().await;
    assert_eq!(t, other, "the other writer's table stays, untouched");
    let row = s.audit().get(&p.record().tx_id).await.unwrap().unwrap();
    assert_eq!(row.status, AuditStatus::RolledBack);
    assert_eq!(row.note.as_deref(), Some("routing table changed concurrently; nothing written"));
    assert_eq!(row.committed_at_ms, None);
    assert!(!env.marker_exists(&row.tx_id).await);
    // Retrying on the new table works and keeps the other writer's change.
    let out = s.switch(SwitchRequest::new(Change::Drain(id("a")))).await.unwrap();
    assert!(matches!(out, SwitchOutcome::Committed(ref r) if r.version_before == 2 && r.version_after == 3));
    let t = env.table().await;
    assert_eq!(t.cell(&id("b")).unwrap().weight, 250);
    assert_eq!(t.cell(&id("a")).unwrap().state, CellState::Down);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_means_no_write() {
    let env = Env::start().await;
    let s = env.switch("ctl-1", 5).await;
    let lock = s.lock("a").await.unwrap();
    let p = s.prepare(&lock, &SwitchRequest::new(Change::Drain(id("a")))).await.unwrap().unwrap();
    env.client().await.lease_revoke(lock.lease()).await.unwrap();
    let err = s.commit(&lock, p.clone()).await.unwrap_err();
    assert!(matches!(err, Error::LockLost(_)), "{err}");
    assert_eq!(env.table().await, table());
    assert_eq!(s.audit().get(&p.record().tx_id).await.unwrap().unwrap().status, AuditStatus::RolledBack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_failback_and_applied_by_a_router() {
    let env = Env::start().await;
    let s = env.switch("ops", 6).await;
    // Dry run: what would change, nothing written.
    let dry = s.dry_run(&Change::Drain(id("a"))).await.unwrap();
    assert_eq!((dry.from.as_str(), dry.to.as_str(), dry.changes), ("state=active", "state=down", true));
    assert_eq!((dry.version_before, dry.version_after), (1, 2));
    assert_eq!(dry.table.cell(&id("a")).unwrap().state, CellState::Down);
    assert_eq!(env.table().await, table());
    assert!(s.audit().all().await.unwrap().is_empty());
    assert!(matches!(s.dry_run(&Change::Drain(id("nope"))).await, Err(Error::UnknownCell(_))));
    // A decision of the engine becomes a switch request.
    let d = failover::Decision::Drain {
        cell: id("a"),
        reason: failover::DrainReason::ErrorRate { rate: 0.012 },
        detected_at: tokio::time::Instant::now() - Duration::from_secs(30),
        decided_at: tokio::time::Instant::now(),
    };
    let req = SwitchRequest::from_decision(&d, "seed-default").unwrap();
    assert_eq!(req.change, Change::Drain(id("a")));
    assert_eq!(req.reason, r#"{"kind":"error_rate","rate":0.012}"#);
    let gap = req.decided_at.duration_since(req.detected_at).unwrap();
    assert!(gap >= Duration::from_millis(29_990) && gap <= Duration::from_millis(30_010), "{gap:?}");
    // a ramp step is a table change of its own (half of the cell's slots home)
    let step = SwitchRequest::from_decision(&failover::Decision::FailbackStep { cell: id("a"), share: 0.5, at: tokio::time::Instant::now() }, "r");
    assert_eq!(step.unwrap().change, Change::Ramp { cell: id("a"), permille: 500 });
    assert!(SwitchRequest::from_decision(&failover::Decision::FailbackReady { cell: id("a"), at: tokio::time::Instant::now() }, "r").is_none());
    // A router watching the key applies the switch.
    let store = TableStore::new();
    let source = EtcdSource::try_new(vec![env.etcd.endpoint()]).unwrap().with_key(env.key.clone());
    let task = tokio::spawn(source.run(store.clone()));
    let sla = SlaTracker::try_new(SlaConfig::default()).unwrap();
    for change in [Change::Drain(id("a")), Change::Failback(id("a"))] {
        let SwitchOutcome::Committed(rec) = s.switch(SwitchRequest::new(change)).await.unwrap() else { panic!() };
        let applied = s.mark_applied(&rec, &store, Duration::from_secs(10)).await.unwrap();
        let row = s.audit().get(&rec.tx_id).await.unwrap().unwrap();
        assert_eq!(row, applied);
        assert_eq!(row.status, AuditStatus::Applied);
        assert!(row.applied_at_ms.unwrap() >= row.committed_at_ms.unwrap());
        sla.record_switch(row.phases().unwrap());
    }
    assert_eq!(store.version(), Some(3));
    assert_eq!(store.current().unwrap().table().cell(&id("a")).unwrap().state, CellState::Active);
    let rows = s.audit().all().await.unwrap();
    assert_eq!(rows.iter().map(|r| (r.from.as_str(), r.to.as_str())).collect::<Vec<_>>(), vec![
        ("state=active", "state=down"),
        ("state=down", "state=active")
    ]);
    assert_eq!(sla.report().switches.count, 2);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_load_from_etcd_and_a_bad_set_keeps_the_old_one() {
    let env = Env::start().await;
    let key = format!("{}/rules", env.prefix);
    let mut c = env.client().await;
    c.put(key.as_str(), "rules:\n  - name: v2\n    action: { route_version: v2 }\n", None).await.unwrap();
    let rules = RuleEngine::new();
    let task = tokio::spawn(rules.clone().watch_etcd(vec![env.etcd.endpoint()], key.clone()));
    let wait = |n: u64| {
        let rules = rules.clone();
        async move {
            for _ in 0..200 {
                let (l, r, _) = rules.counts();
                if l + r >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("rules not loaded");
        }
    };
    wait(1).await;
    assert_eq!(rules.current().spec().rules[0].name, "v2");
    c.put(key.as_str(), "rules:\n  - name: broken\n    when: 'request.path ==='\n    action: { drain: a }\n", None)
        .await
        .unwrap();
    wait(2).await;
    assert_eq!(rules.counts().1, 1);
    assert_eq!(rules.current().spec().rules[0].name, "v2");
    c.put(key.as_str(), "rules:\n  - name: v3\n    action: { route_version: v3 }\n", None).await.unwrap();
    wait(3).await;
    assert_eq!(rules.current().spec().rules[0].name, "v3");
    task.abort();
}

async fn audit_roundtrip(url: &str) {
    let log = AuditLog::connect(url, &sql_name("fo_audit_rt")).await.unwrap();
    let rec = AuditRecord {
        tx_id: "123456789012345678".into(),
        flow: "eu-1".into(),
        from: "state=active".into(),
        to: "state=down".into(),
        reason: "test".into(),
        rule: "r".into(),
        actor: "me".into(),
        status: AuditStatus::Intent,
        version_before: 7,
        version_after: 8,
        detected_at_ms: 1_700_000_000_000,
        decided_at_ms: 1_700_000_030_000,
        intent_at_ms: 1_700_000_030_010,
        committed_at_ms: None,
        applied_at_ms: None,
        note: None,
    };
    log.insert_intent(&rec).await.unwrap();
    assert_eq!(log.get(&rec.tx_id).await.unwrap().unwrap(), rec);
    assert_eq!(log.pending().await.unwrap().len(), 1);
    assert!(log.mark_committed(&rec.tx_id, 1_700_000_030_050, None).await.unwrap());
    assert!(!log.mark_committed(&rec.tx_id, 1, None).await.unwrap(), "only an intent can commit");
    assert!(!log.mark_rolled_back(&rec.tx_id, "late").await.unwrap(), "a committed row never rolls back");
    assert!(log.mark_applied(&rec.tx_id, 1_700_000_030_150).await.unwrap());
    let row = log.get(&rec.tx_id).await.unwrap().unwrap();
    assert_eq!(row.status, AuditStatus::Applied);
    let ph = row.phases().unwrap();
    assert_eq!(ph.detect, Duration::from_secs(30));
    assert_eq!(ph.decide, Duration::from_millis(10));
    assert_eq!(ph.commit, Duration::from_millis(40));
    assert_eq!(ph.apply, failover::sla::ApplyPhase::Applied(Duration::from_millis(100)));
    assert!(log.pending().await.unwrap().is_empty());
}

#[tokio::test]
async fn audit_log_on_mariadb_postgres_and_sqlite() {
    audit_roundtrip(&testkit::mysql_url()).await;
    audit_roundtrip(&testkit::postgres_url()).await;
    let dir = tempfile::tempdir().unwrap();
    audit_roundtrip(&format!("sqlite://{}?mode=rwc", dir.path().join("audit.db").display())).await;
    assert!(matches!(AuditLog::connect("oracle://x", "t").await, Err(Error::Config(_))));
    assert!(matches!(AuditLog::connect(&testkit::mysql_url(), "bad name;").await, Err(Error::Config(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_drives_the_etcd_switch_from_engine_decisions() {
    use failover::{CellSpec, Controller, ControllerEvent, DecisionConfig, DecisionEngine, spawn_engine};
    use std::sync::Arc;
    let env = Env::start().await;
    let s = env.switch("controller", 7).await;
    let audit = s.audit().clone();
    let store = TableStore::new();
    let source = EtcdSource::try_new(vec![env.etcd.endpoint()]).unwrap().with_key(env.key.clone());
    let task = tokio::spawn(source.run(store.clone()));
    let engine = DecisionEngine::try_new(DecisionConfig::new(), CellSpec::from_table(&table(), 10.0)).unwrap();
    let engine = spawn_engine(engine, Vec::new(), Duration::from_millis(50));
    let sla = Arc::new(SlaTracker::try_new(SlaConfig::default()).unwrap());
    let controller = Controller::new(s).with_sla(sla.clone()).with_router(store.clone()).spawn(&engine).await.unwrap();
    let mut events = controller.events();
    // An operator drain goes through the engine, the controller and the etcd switch.
    engine.drain(&id("a")).await.unwrap();
    let mut ev = tokio::time::timeout(Duration::from_secs(20), events.recv()).await.unwrap().unwrap();
    assert!(matches!(ev, ControllerEvent::Elected { .. }), "a lone controller is elected first: {ev:?}");
    ev = tokio::time::timeout(Duration::from_secs(20), events.recv()).await.unwrap().unwrap();
    let ControllerEvent::Switched(row) = ev else { panic!("{ev:?}") };
    assert_eq!((row.from.as_str(), row.to.as_str()), ("state=active", "state=down"));
    assert_eq!((row.version_before, row.version_after, row.status), (1, 2, AuditStatus::Applied));
    assert_eq!(row.reason, r#"{"kind":"manual"}"#);
    assert_eq!(audit.all().await.unwrap(), vec![*row]);
    assert_eq!(env.table().await.cell(&id("a")).unwrap().state, CellState::Down);
    assert_eq!(store.version(), Some(2));
    assert_eq!(sla.report().switches.count, 1);
    task.abort();
}
