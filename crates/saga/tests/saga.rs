//! Sagas on real databases: MariaDB, PostgreSQL and SQLite (a temp file).
//!
//! Every scenario runs on the three backends, each in its own tables
//! (`testkit::unique` prefix), against in-process stand-ins for the downstream
//! services that record what was applied, in which order, under which key.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use saga::{
    BoxError, Error, Executor, LogPool, Outcome, Phase, Retention, RetryPolicy, Saga, SagaLog, SagaState,
    Step, StepContext, StepState,
};
use serde_json::{Value, json};
use sqlx::mysql::MySqlPoolOptions;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::Notify;

// ---------------------------------------------------------------- backends

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    MySql,
    Postgres,
    Sqlite,
}

struct Backend {
    kind: Kind,
    prefix: String,
    _dir: Option<tempfile::TempDir>,
    sqlite_url: String,
}

impl Backend {
    async fn new(kind: Kind) -> Self {
        let prefix = format!("{}_", testkit::unique("sg").replace('-', "_"));
        let (dir, sqlite_url) = if kind == Kind::Sqlite {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("saga.db").display());
            (Some(dir), url)
        } else {
            (None, String::new())
        };
        let b = Backend {
            kind,
            prefix,
            _dir: dir,
            sqlite_url,
        };
        b.log()
            .await
            .migrate()
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: cannot create the saga tables: {e}"));
        b
    }

    /// A log on a new pool over this test's tables (one pool per executor, as in
    /// separate processes).
    async fn log(&self) -> SagaLog {
        let log = match self.kind {
            Kind::MySql => {
                let url = testkit::mysql_url();
                let pool = MySqlPoolOptions::new()
                    .max_connections(4)
                    .connect(&url)
                    .await
                    .unwrap_or_else(|e| panic!("MariaDB at {url} is not reachable: {e}"));
                SagaLog::new(pool)
            }
            Kind::Postgres => {
                let url = testkit::postgres_url();
                let pool = PgPoolOptions::new()
                    .max_connections(4)
                    .connect(&url)
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL at {url} is not reachable: {e}"));
                SagaLog::new(pool)
            }
            Kind::Sqlite => SagaLog::connect(&self.sqlite_url).await.unwrap(),
        };
        log.with_table_prefix(&self.prefix).unwrap()
    }

    async fn cleanup(&self) {
        let log = self.log().await;
        for t in [log.step_table().to_string(), log.saga_table().to_string()] {
            run_sql(&log, &format!("DROP TABLE {t}")).await;
        }
    }
}

/// Runs a literal statement on the log's pool.
async fn run_sql(log: &SagaLog, sql: &str) {
    match log.pool() {
        LogPool::MySql(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
        LogPool::Postgres(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
        LogPool::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

// ---------------------------------------------------------------- downstream stand-ins

/// The downstream services: effects applied per (xid, step), deduplicated on
/// the idempotency key, and a trace of every call.
#[derive(Default)]
struct World {
    live: Mutex<BTreeSet<(String, String)>>,
    applied: Mutex<HashMap<String, u32>>,
    trace: Mutex<Vec<(String, String)>>,
    fail: Mutex<HashMap<String, u32>>,
    hang: Mutex<Option<String>>,
    gate: Mutex<Option<String>>,
    reached: Notify,
    open: Notify,
    in_flight: Mutex<HashSet<String>>,
    overlap: AtomicBool,
    bad_context: AtomicBool,
    slow: bool,
}

struct InFlight(Arc<World>, String);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.lock().unwrap().remove(&self.1);
    }
}

impl World {
    fn new() -> Arc<Self> {
        Arc::new(World::default())
    }

    fn slow() -> Arc<Self> {
        Arc::new(World {
            slow: true,
            ..World::default()
        })
    }

    /// `label` (`s1` or `undo:s1`) fails its next `n` calls.
    fn fail(&self, label: &str, n: u32) {
        self.fail.lock().unwrap().insert(label.to_string(), n);
    }

    /// `label` hangs forever on its next call (after signalling `reached`).
    fn hang_at(&self, label: &str) {
        *self.hang.lock().unwrap() = Some(label.to_string());
    }

    /// `label` waits on its next call (after signalling `reached`) until `open`.
    fn gate_at(&self, label: &str) {
        *self.gate.lock().unwrap() = Some(label.to_string());
    }

    fn trace_of(&self, xid: &str) -> Vec<String> {
        self.trace
            .lock()
            .unwrap()
            .iter()
            .filter(|(x, _)| x == xid)
            .map(|(_, l)| l.clone())
            .collect()
    }

    fn live_of(&self, xid: &str) -> Vec<String> {
        self.live
            .lock()
            .unwrap()
            .iter()
            .filter(|(x, _)| x == xid)
            .map(|(_, s)| s.clone())
            .collect()
    }

    async fn call(self: Arc<Self>, ctx: StepContext) -> Result<Value, BoxError> {
        let label = match ctx.phase() {
            Phase::Action => ctx.step_name().to_string(),
            Phase::Compensation => format!("undo:{}", ctx.step_name()),
        };
        let xid = ctx.xid().to_string();
        // The XID travels in the cellctx scope and in the step's headers.
        let scoped = cellctx::current().and_then(|c| c.xid.clone());
        let headers = ctx.headers();
        if scoped.as_deref() != Some(xid.as_str()) || headers[0] != ("x-xid", xid.clone()) {
            self.bad_context.store(true, Ordering::SeqCst);
        }
        if !self.in_flight.lock().unwrap().insert(xid.clone()) {
            self.overlap.store(true, Ordering::SeqCst);
        }
        let _guard = InFlight(self.clone(), xid.clone());
        self.trace
            .lock()
            .unwrap()
            .push((xid.clone(), label.clone()));
        let hang = {
            let mut h = self.hang.lock().unwrap();
            if h.as_deref() == Some(label.as_str()) {
                h.take()
            } else {
                None
            }
        };
        if hang.is_some() {
            self.reached.notify_one();
            std::future::pending::<()>().await;
        }
        let gated = {
            let mut g = self.gate.lock().unwrap();
            if g.as_deref() == Some(label.as_str()) {
                g.take()
            } else {
                None
            }
        };
        if gated.is_some() {
            self.reached.notify_one();
            self.open.notified().await;
        }
        if self.slow {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        {
            let mut fail = self.fail.lock().unwrap();
            if let Some(n) = fail.get_mut(&label).filter(|n| **n > 0) {
                *n -= 1;
                return Err(format!("{label} injected failure").into());
            }
        }
        let key = ctx.idempotency_key();
        let first = {
            let mut applied = self.applied.lock().unwrap();
            let n = applied.entry(key.clone()).or_default();
            *n += 1;
            *n == 1
        };
        if first {
            let mut live = self.live.lock().unwrap();
            match ctx.phase() {
                Phase::Action => live.insert((xid, ctx.step_name().to_string())),
                Phase::Compensation => live.remove(&(xid, ctx.step_name().to_string())),
            };
        }
        Ok(json!({ "step": ctx.step_name(), "key": key }))
    }
}

const STEPS: usize = 3;

fn fast(n: u32) -> RetryPolicy {
    RetryPolicy::try_new(n, Duration::from_millis(1), Duration::from_millis(4)).unwrap()
}

/// `s0 .. s2`, each with a compensation; 3 attempts each way.
fn saga(world: &Arc<World>) -> Saga {
    let mut b = Saga::builder("three-steps");
    for i in 0..STEPS {
        let (w1, w2) = (world.clone(), world.clone());
        b = b.step(
            Step::new(format!("s{i}"), move |ctx| w1.clone().call(ctx))
                .compensate(move |ctx| {
                    let w = w2.clone();
                    async move { w.call(ctx).await.map(|_| ()) }
                })
                .with_timeout(Duration::from_secs(20))
                .with_retry(fast(3))
                .with_compensation_retry(fast(3)),
        );
    }
    b.build().unwrap()
}

fn executor(log: SagaLog, world: &Arc<World>, owner: &str, worker: u32) -> Executor {
    let ids = idgen::Generator::try_new(idgen::Layout::seed(), 1, worker).unwrap();
    Executor::new(log, ids)
        .register(saga(world))
        .unwrap()
        .with_owner(owner)
        .unwrap()
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("s{i}")).collect()
}

fn step_states(rec: &saga::SagaRecord) -> Vec<StepState> {
    rec.steps.iter().map(|s| s.state).collect()
}

// ---------------------------------------------------------------- scenarios

async fn success_path(b: Backend) {
    let world = World::new();
    let exec = executor(b.log().await, &world, "node-a", 1);
    let outcome = exec
        .start("three-steps", &json!({ "user": "ann" }))
        .await
        .unwrap();
    let Outcome::Committed { xid, outputs } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(outputs.len(), STEPS);
    assert_eq!(outputs["s1"]["key"], json!(format!("{xid}:s1")));
    assert_eq!(world.trace_of(xid), names(STEPS));
    assert_eq!(world.live_of(xid), names(STEPS));
    assert!(!world.bad_context.load(Ordering::SeqCst));

    let rec = exec.log().load(xid).await.unwrap();
    assert_eq!(rec.state, SagaState::Committed);
    assert_eq!(rec.name, "three-steps");
    assert_eq!(rec.input, json!({ "user": "ann" }));
    assert_eq!(rec.owner, None);
    assert_eq!(step_states(&rec), vec![StepState::Done; STEPS]);
    assert!(
        rec.steps
            .iter()
            .all(|s| s.attempts == 1 && s.output.is_some() && s.error.is_none())
    );
    // Nothing left to recover.
    let report = exec.recover().await;
    assert!(
        report.resumed.is_empty() && report.errors.is_empty(),
        "{report:?}"
    );
    b.cleanup().await;
}

async fn failure_at_each_position_compensates_completed_steps_in_reverse(b: Backend) {
    for k in 0..STEPS {
        let world = World::new();
        world.fail(&format!("s{k}"), u32::MAX);
        let exec = executor(b.log().await, &world, "node-a", 1);
        let outcome = exec.start("three-steps", &json!({})).await.unwrap();
        let Outcome::Compensated {
            xid,
            failed_step,
            error,
        } = &outcome
        else {
            panic!("{outcome:?}")
        };
        assert_eq!(failed_step, &format!("s{k}"));
        assert!(error.contains("injected failure"), "{error}");

        // Forward up to k (k tried three times), then exactly the completed steps, reversed.
        let mut expected: Vec<String> = (0..k).map(|i| format!("s{i}")).collect();
        expected.extend(std::iter::repeat_n(format!("s{k}"), 3));
        expected.extend((0..k).rev().map(|i| format!("undo:s{i}")));
        assert_eq!(world.trace_of(xid), expected, "failure at s{k}");
        assert!(world.live_of(xid).is_empty());

        let rec = exec.log().load(xid).await.unwrap();
        assert_eq!(rec.state, SagaState::Compensated);
        assert_eq!(rec.failed_step, Some(k));
        let mut states = vec![StepState::Compensated; k];
        states.push(StepState::Failed);
        states.extend(vec![StepState::Pending; STEPS - k - 1]);
        assert_eq!(step_states(&rec), states);
        assert_eq!(rec.steps[k].attempts, 3);
        assert!(
            rec.steps[k]
                .error
                .as_deref()
                .unwrap_or_default()
                .contains("injected failure")
        );
    }
    b.cleanup().await;
}

async fn compensation_fails_twice_then_succeeds(b: Backend) {
    let world = World::new();
    world.fail("s2", u32::MAX);
    world.fail("undo:s1", 2);
    let exec = executor(b.log().await, &world, "node-a", 1);
    let outcome = exec.start("three-steps", &json!({})).await.unwrap();
    let Outcome::Compensated {
        xid, failed_step, ..
    } = &outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(failed_step, "s2");
    assert_eq!(
        world.trace_of(xid),
        [
            "s0", "s1", "s2", "s2", "s2", "undo:s1", "undo:s1", "undo:s1", "undo:s0"
        ]
    );
    assert!(world.live_of(xid).is_empty());
    let rec = exec.log().load(xid).await.unwrap();
    assert_eq!(rec.state, SagaState::Compensated);
    assert_eq!(
        step_states(&rec),
        [
            StepState::Compensated,
            StepState::Compensated,
            StepState::Failed
        ]
    );
    assert_eq!(
        rec.steps[1].attempts, 4,
        "one action and three compensation attempts"
    );
    b.cleanup().await;
}

async fn spent_compensation_budget_marks_the_saga_stuck(b: Backend) {
    let world = World::new();
    world.fail("s2", u32::MAX);
    world.fail("undo:s0", u32::MAX);
    let exec = executor(b.log().await, &world, "node-a", 1);
    let outcome = exec.start("three-steps", &json!({})).await.unwrap();
    let Outcome::Stuck { xid, step, error } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(step, "s0");
    assert!(error.contains("undo:s0 injected failure"), "{error}");
    let rec = exec.log().load(xid).await.unwrap();
    assert_eq!(rec.state, SagaState::Stuck);
    assert_eq!(
        step_states(&rec),
        [
            StepState::Compensating,
            StepState::Compensated,
            StepState::Failed
        ]
    );
    assert_eq!(exec.log().list_stuck().await.unwrap(), vec![xid.clone()]);
    // Recovery leaves stuck sagas to the operator.
    assert!(exec.recover().await.resumed.is_empty());
    assert_eq!(world.live_of(xid), ["s0"]);

    // The operator fixes the wallet and resumes it.
    world.fail("undo:s0", 0);
    let again = exec.resume_stuck(xid).await.unwrap();
    assert!(
        matches!(&again, Outcome::Compensated { failed_step, .. } if failed_step == "s2"),
        "{again:?}"
    );
    assert!(world.live_of(xid).is_empty());
    assert!(exec.log().list_stuck().await.unwrap().is_empty());
    assert!(matches!(
        exec.resume_stuck(xid).await,
        Err(Error::WrongState { .. })
    ));
    b.cleanup().await;
}

/// Starts a saga on a task, waits until it hangs at `label`, aborts the task
/// (the executor future is dropped mid-saga) and returns the XID from the log.
async fn crash_at(
    b: &Backend,
    world: &Arc<World>,
    label: &str,
    owner: &str,
    lease: Duration,
) -> String {
    world.hang_at(label);
    let exec = executor(b.log().await, world, owner, 1)
        .with_lease(lease)
        .unwrap();
    let task = tokio::spawn(async move { exec.start("three-steps", &json!({ "n": 1 })).await });
    world.reached.notified().await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let xids: Vec<String> = world
        .trace
        .lock()
        .unwrap()
        .iter()
        .map(|(x, _)| x.clone())
        .collect();
    xids[0].clone()
}

async fn crash_after_any_step_resumes_to_the_same_final_state(b: Backend) {
    // Forward: crash inside each action; the restarted node (same owner id) resumes at once.
    for k in 0..STEPS {
        let world = World::new();
        let xid = crash_at(
            &b,
            &world,
            &format!("s{k}"),
            "node-a",
            Duration::from_secs(30),
        )
        .await;
        let rec = b.log().await.load(&xid).await.unwrap();
        assert_eq!(rec.state, SagaState::Running);
        let mut states = vec![StepState::Done; k];
        states.push(StepState::Running);
        states.extend(vec![StepState::Pending; STEPS - k - 1]);
        assert_eq!(step_states(&rec), states, "log after a crash in s{k}");

        let restarted = executor(b.log().await, &world, "node-a", 2);
        let report = restarted.recover().await;
        assert!(report.errors.is_empty(), "{report:?}");
        assert_eq!(report.resumed.len(), 1);
        assert!(matches!(&report.resumed[0], Outcome::Committed { xid: x, .. } if *x == xid));
        assert_eq!(
            world.live_of(&xid),
            names(STEPS),
            "same final state as without the crash"
        );
        let applied = world.applied.lock().unwrap().clone();
        assert!(
            (0..STEPS).all(|i| applied.get(&format!("{xid}:s{i}")) == Some(&1)),
            "{applied:?}"
        );
        assert!(!world.bad_context.load(Ordering::SeqCst));
    }

    // Backward: crash inside a compensation; resumed backward.
    let world = World::new();
    world.fail("s2", u32::MAX);
    let xid = crash_at(&b, &world, "undo:s1", "node-a", Duration::from_secs(30)).await;
    let rec = b.log().await.load(&xid).await.unwrap();
    assert_eq!(rec.state, SagaState::Compensating);
    assert_eq!(
        step_states(&rec),
        [StepState::Done, StepState::Compensating, StepState::Failed]
    );
    let restarted = executor(b.log().await, &world, "node-a", 2);
    let report = restarted.recover().await;
    assert_eq!(report.resumed.len(), 1, "{report:?}");
    assert!(
        matches!(&report.resumed[0], Outcome::Compensated { failed_step, .. } if failed_step == "s2")
    );
    assert!(world.live_of(&xid).is_empty());
    assert_eq!(
        world.trace_of(&xid),
        [
            "s0", "s1", "s2", "s2", "s2", "undo:s1", "undo:s1", "undo:s0"
        ],
        "the interrupted compensation runs again, then the rest"
    );

    // Another node takes over once the dead node's lease expires.
    let world = World::new();
    let xid = crash_at(&b, &world, "s1", "node-dead", Duration::from_millis(300)).await;
    let other = executor(b.log().await, &world, "node-b", 2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let outcome = loop {
        let mut report = other.recover().await;
        assert!(report.errors.is_empty(), "{report:?}");
        if let Some(o) = report.resumed.pop() {
            break o;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(matches!(&outcome, Outcome::Committed { xid: x, .. } if *x == xid));
    assert_eq!(world.live_of(&xid), names(STEPS));
    b.cleanup().await;
}

async fn two_executors_never_run_one_saga_at_once(b: Backend) {
    let world = World::slow();
    let a = executor(b.log().await, &world, "node-a", 1);
    let mut xids = BTreeSet::new();
    for _ in 0..8 {
        xids.insert(a.enqueue("three-steps", &json!({})).await.unwrap());
    }
    let (b1, b2) = (
        executor(b.log().await, &world, "node-b", 2),
        executor(b.log().await, &world, "node-c", 3),
    );
    let (r1, r2) = tokio::join!(b1.recover(), b2.recover());
    assert!(
        r1.errors.is_empty() && r2.errors.is_empty(),
        "{r1:?} {r2:?}"
    );
    let mut resumed: Vec<String> = r1
        .resumed
        .iter()
        .chain(&r2.resumed)
        .map(|o| o.xid().to_string())
        .collect();
    resumed.sort();
    assert_eq!(
        resumed,
        xids.iter().cloned().collect::<Vec<_>>(),
        "each saga resumed by exactly one executor"
    );
    assert!(
        r1.resumed
            .iter()
            .chain(&r2.resumed)
            .all(|o| o.state() == SagaState::Committed)
    );
    assert!(
        !world.overlap.load(Ordering::SeqCst),
        "a saga ran on two executors at once"
    );
    let applied = world.applied.lock().unwrap().clone();
    assert_eq!(applied.len(), 8 * STEPS);
    assert!(
        applied.values().all(|n| *n == 1),
        "every action ran exactly once: {applied:?}"
    );

    // A saga leased by a live executor is not taken.
    let world = World::new();
    world.hang_at("s1");
    let live = executor(b.log().await, &world, "node-a", 4);
    let task = tokio::spawn(async move { live.start("three-steps", &json!({})).await });
    world.reached.notified().await;
    let xid = world.trace.lock().unwrap()[0].0.clone();
    let thief = executor(b.log().await, &world, "node-b", 5);
    let report = thief.recover().await;
    assert!(report.resumed.iter().all(|o| o.xid() != xid), "{report:?}");
    assert!(matches!(
        thief.resume(&xid).await,
        Err(Error::LeaseLost { .. })
    ));
    assert_eq!(world.trace_of(&xid), ["s0", "s1"]);
    task.abort();
    let _ = task.await;
    b.cleanup().await;
}

async fn an_executor_that_lost_its_lease_stops_at_its_next_write(b: Backend) {
    let world = World::new();
    world.gate_at("s1");
    let exec = executor(b.log().await, &world, "node-a", 1);
    let log = exec.log().clone();
    let task = tokio::spawn(async move { exec.start("three-steps", &json!({})).await });
    world.reached.notified().await;
    let xid = world.trace.lock().unwrap()[0].0.clone();
    // Another executor took the saga over (as after an expired lease).
    run_sql(
        &log,
        &format!(
            "UPDATE {} SET owner_id = 'node-b' WHERE xid = '{xid}'",
            log.saga_table()
        ),
    )
    .await;
    world.open.notify_one();
    let result = task.await.unwrap();
    assert!(matches!(result, Err(Error::LeaseLost { .. })), "{result:?}");
    // s1's effect happened (the new owner re-runs it under the same key), but
    // nothing was written under the lost lease and s2 never ran.
    assert_eq!(world.trace_of(&xid), ["s0", "s1"]);
    let rec = log.load(&xid).await.unwrap();
    assert_eq!(rec.owner.as_deref(), Some("node-b"));
    assert_eq!(
        step_states(&rec),
        [StepState::Done, StepState::Running, StepState::Pending]
    );
    b.cleanup().await;
}

async fn malformed_rows_are_reported_not_panicked_on(b: Backend) {
    let world = World::new();
    let exec = executor(b.log().await, &world, "node-a", 1);
    let good = exec.enqueue("three-steps", &json!({})).await.unwrap();
    let log = exec.log();
    let (s, t) = (log.saga_table().to_string(), log.step_table().to_string());
    let cols = "(xid, saga_name, input_json, state, step_count, owner_id, lease_until, lease_seq, failed_step, error_text, created_ms, updated_ms)";
    let step_cols =
        "(xid, step_idx, step_name, state, attempts, output_json, error_text, updated_ms)";
    // Bad input JSON.
    run_sql(log, &format!("INSERT INTO {s} {cols} VALUES ('bad-json', 'three-steps', 'not json', 'running', 1, NULL, 0, 0, NULL, NULL, 0, 0)")).await;
    run_sql(
        log,
        &format!(
            "INSERT INTO {t} {step_cols} VALUES ('bad-json', 0, 's0', 'pending', 0, NULL, NULL, 0)"
        ),
    )
    .await;
    // Step count that does not match the step rows.
    run_sql(log, &format!("INSERT INTO {s} {cols} VALUES ('bad-count', 'three-steps', '{{}}', 'running', 3, NULL, 0, 0, NULL, NULL, 0, 0)")).await;
    run_sql(
        log,
        &format!(
            "INSERT INTO {t} {step_cols} VALUES ('bad-count', 0, 's0', 'pending', 0, NULL, NULL, 0)"
        ),
    )
    .await;
    // An unknown step state.
    run_sql(log, &format!("INSERT INTO {s} {cols} VALUES ('bad-state', 'three-steps', '{{}}', 'running', 1, NULL, 0, 0, NULL, NULL, 0, 0)")).await;
    run_sql(log, &format!("INSERT INTO {t} {step_cols} VALUES ('bad-state', 0, 's0', 'exploded', 0, NULL, NULL, 0)")).await;
    // Steps that are not the definition's.
    run_sql(log, &format!("INSERT INTO {s} {cols} VALUES ('bad-shape', 'three-steps', '{{}}', 'running', 1, NULL, 0, 0, NULL, NULL, 0, 0)")).await;
    run_sql(log, &format!("INSERT INTO {t} {step_cols} VALUES ('bad-shape', 0, 'other', 'pending', 0, NULL, NULL, 0)")).await;
    // A definition nobody registered.
    run_sql(log, &format!("INSERT INTO {s} {cols} VALUES ('bad-name', 'gone', '{{}}', 'running', 1, NULL, 0, 0, NULL, NULL, 0, 0)")).await;
    run_sql(
        log,
        &format!(
            "INSERT INTO {t} {step_cols} VALUES ('bad-name', 0, 's0', 'pending', 0, NULL, NULL, 0)"
        ),
    )
    .await;

    let report = exec.recover().await;
    assert_eq!(report.resumed.len(), 1, "{report:?}");
    assert_eq!(report.resumed[0].xid(), good);
    let mut bad: Vec<String> = report
        .errors
        .iter()
        .map(|e| match e {
            Error::MalformedRow { xid, .. } => xid.clone(),
            Error::UnknownSaga(name) => format!("unknown:{name}"),
            other => panic!("unexpected error {other:?}"),
        })
        .collect();
    bad.sort();
    assert_eq!(
        bad,
        [
            "bad-count",
            "bad-json",
            "bad-shape",
            "bad-state",
            "unknown:gone"
        ]
    );
    assert!(matches!(
        log.load("bad-json").await,
        Err(Error::MalformedRow { .. })
    ));
    assert!(matches!(log.load("missing").await, Err(Error::NotFound(_))));
    // The rows are left for an operator and reported again on the next pass.
    assert_eq!(exec.recover().await.errors.len(), 5);
    b.cleanup().await;
}

/// A step whose action takes effect downstream and then overruns its timeout
/// may have been applied: when the saga turns back, its compensation runs too
/// (before the earlier steps' ones), and the log says the step was compensated
/// and why the saga turned back.
async fn a_timed_out_step_is_compensated(b: Backend) {
    #[derive(Default)]
    struct Charges {
        applied: Mutex<HashSet<String>>,
        trace: Mutex<Vec<String>>,
    }
    let charges = Arc::new(Charges::default());
    let step = |name: &'static str, slow: bool| {
        let (c1, c2) = (charges.clone(), charges.clone());
        Step::new(name, move |ctx: StepContext| {
            let c = c1.clone();
            async move {
                c.applied.lock().unwrap().insert(ctx.idempotency_key());
                c.trace.lock().unwrap().push(name.to_string());
                if slow {
                    // Applied downstream, but the answer never comes in time.
                    tokio::time::sleep(Duration::from_secs(3_600)).await;
                }
                Ok::<_, Error>(())
            }
        })
        .compensate(move |ctx: StepContext| {
            let c = c2.clone();
            async move {
                let key = format!("{}:{}", ctx.xid(), ctx.step_name());
                c.applied.lock().unwrap().remove(&key);
                c.trace.lock().unwrap().push(format!("undo:{name}"));
                Ok::<_, Error>(())
            }
        })
        .with_timeout(Duration::from_millis(50))
        .with_retry(fast(1))
        .with_compensation_retry(fast(3))
    };
    let saga = Saga::builder("timeout-after-effect")
        .step(step("reserve", false))
        .step(step("charge", true))
        .step(step("ship", false))
        .build()
        .unwrap();
    let ids = idgen::Generator::try_new(idgen::Layout::seed(), 1, 11).unwrap();
    let exec = Executor::new(b.log().await, ids).register(saga).unwrap();
    let outcome = exec.start("timeout-after-effect", &json!({})).await.unwrap();
    let Outcome::Compensated { xid, failed_step, error } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(failed_step, "charge");
    assert!(error.contains("timed out"), "{error}");
    // Both applied effects were undone, the timed-out one first.
    assert!(charges.applied.lock().unwrap().is_empty(), "left applied: {:?}", charges.applied.lock().unwrap());
    assert_eq!(*charges.trace.lock().unwrap(), ["reserve", "charge", "undo:charge", "undo:reserve"]);
    let rec = exec.log().load(xid).await.unwrap();
    assert_eq!(rec.state, SagaState::Compensated);
    assert_eq!(rec.failed_step, Some(1));
    assert!(rec.error.as_deref().unwrap_or_default().contains("timed out"));
    assert_eq!(
        step_states(&rec),
        [StepState::Compensated, StepState::Compensated, StepState::Pending]
    );
    // The action's one attempt and the compensation's one attempt.
    assert_eq!(rec.steps[1].attempts, 2);
    b.cleanup().await;
}

/// Counts rows with a literal `SELECT COUNT(*) ...`.
async fn count(log: &SagaLog, sql: &str) -> i64 {
    match log.pool() {
        LogPool::MySql(p) => sqlx::query_scalar(sql).fetch_one(p).await,
        LogPool::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await,
        LogPool::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await,
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Rows of `xid` in the saga table and the step table.
async fn rows_of(log: &SagaLog, xid: &str) -> (i64, i64) {
    (
        count(log, &format!("SELECT COUNT(*) FROM {} WHERE xid = '{xid}'", log.saga_table())).await,
        count(log, &format!("SELECT COUNT(*) FROM {} WHERE xid = '{xid}'", log.step_table())).await,
    )
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Retention deletes committed and compensated sagas (and their step rows)
/// older than the age bound, then beyond the newest N, in batches; stuck and
/// live sagas stay however old they are.
async fn retention_prunes_only_finished_sagas_beyond_its_bounds(b: Backend) {
    let log = b.log().await;
    let world = World::new();
    let exec = executor(b.log().await, &world, "node-a", 1);
    let mut committed = Vec::new();
    for _ in 0..4 {
        let o = exec.start("three-steps", &json!({})).await.unwrap();
        committed.push(o.xid().to_string());
    }
    world.fail("s2", u32::MAX);
    let compensated = exec.start("three-steps", &json!({})).await.unwrap();
    assert!(matches!(compensated, Outcome::Compensated { .. }), "{compensated:?}");
    let compensated = compensated.xid().to_string();
    world.fail("undo:s0", u32::MAX);
    let stuck = exec.start("three-steps", &json!({})).await.unwrap();
    assert!(matches!(stuck, Outcome::Stuck { .. }), "{stuck:?}");
    let stuck = stuck.xid().to_string();
    let running = crash_at(&b, &World::new(), "s1", "node-b", Duration::from_secs(30)).await;
    assert_eq!(log.load(&running).await.unwrap().state, SagaState::Running);

    // Three committed sagas, the stuck one and the running one are two days old.
    let t = log.saga_table().to_string();
    for (xid, ms) in [(&committed[0], 1_000), (&committed[1], 2_000), (&committed[2], 3_000), (&stuck, 100), (&running, 100)] {
        run_sql(&log, &format!("UPDATE {t} SET updated_ms = {ms} WHERE xid = '{xid}'")).await;
    }
    let day = Duration::from_secs(86_400);
    let by_age = Retention::try_new(Some(day), None).unwrap().with_batch(2).unwrap();
    assert_eq!(log.prune(&by_age).await.unwrap(), 3);
    for xid in &committed[..3] {
        assert_eq!(rows_of(&log, xid).await, (0, 0), "{xid} not pruned");
        assert!(matches!(log.load(xid).await, Err(Error::NotFound(_))));
    }
    for xid in [&committed[3], &compensated, &stuck, &running] {
        assert_eq!(rows_of(&log, xid).await, (1, STEPS as i64), "{xid} pruned");
    }
    assert_eq!(log.prune(&by_age).await.unwrap(), 0, "a second pass finds nothing");

    // Keep the newest finished saga: the compensated one is older.
    let now = unix_ms();
    run_sql(&log, &format!("UPDATE {t} SET updated_ms = {} WHERE xid = '{compensated}'", now - 60_000)).await;
    run_sql(&log, &format!("UPDATE {t} SET updated_ms = {} WHERE xid = '{}'", now - 30_000, committed[3])).await;
    let keep_one = Retention::try_new(Some(day), Some(1)).unwrap();
    assert_eq!(log.prune(&keep_one).await.unwrap(), 1);
    assert_eq!(rows_of(&log, &compensated).await, (0, 0));
    assert_eq!(rows_of(&log, &committed[3]).await, (1, STEPS as i64));

    // Through the executor (what run_recovery does each pass): keep none.
    let exec = exec.with_retention(Retention::try_new(None, Some(0)).unwrap());
    assert_eq!(exec.prune().await.unwrap(), 1);
    assert_eq!(count(&log, &format!("SELECT COUNT(*) FROM {t}")).await, 2);
    assert_eq!(count(&log, &format!("SELECT COUNT(*) FROM {}", log.step_table())).await, 2 * STEPS as i64);
    assert_eq!(log.load(&stuck).await.unwrap().state, SagaState::Stuck);
    assert_eq!(log.list_stuck().await.unwrap(), vec![stuck.clone()]);
    assert_eq!(log.load(&running).await.unwrap().state, SagaState::Running);
    b.cleanup().await;
}

macro_rules! on_every_backend {
    ($($scenario:ident),* $(,)?) => {
        mod mariadb {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() { super::$scenario(super::Backend::new(super::Kind::MySql).await).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() { super::$scenario(super::Backend::new(super::Kind::Postgres).await).await })*
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() { super::$scenario(super::Backend::new(super::Kind::Sqlite).await).await })*
        }
    };
}

on_every_backend!(
    success_path,
    failure_at_each_position_compensates_completed_steps_in_reverse,
    compensation_fails_twice_then_succeeds,
    spent_compensation_budget_marks_the_saga_stuck,
    crash_after_any_step_resumes_to_the_same_final_state,
    two_executors_never_run_one_saga_at_once,
    an_executor_that_lost_its_lease_stops_at_its_next_write,
    malformed_rows_are_reported_not_panicked_on,
    a_timed_out_step_is_compensated,
    retention_prunes_only_finished_sagas_beyond_its_bounds,
);

// ---------------------------------------------------------------- single-backend checks

#[tokio::test]
async fn metrics_count_sagas_and_step_attempts() {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let b = Backend::new(Kind::Sqlite).await;
    let world = World::new();
    let exec = executor(b.log().await, &world, "node-a", 1)
        .with_meter(&provider.meter("saga"))
        .with_retention(Retention::try_new(None, Some(0)).unwrap());
    exec.start("three-steps", &json!({})).await.unwrap();
    world.fail("s1", u32::MAX);
    world.fail("undo:s0", u32::MAX);
    exec.start("three-steps", &json!({})).await.unwrap();
    // The committed saga goes, the stuck one stays.
    assert_eq!(exec.prune().await.unwrap(), 1);
    provider.force_flush().unwrap();

    let mut sums: HashMap<String, u64> = HashMap::new();
    let mut attempts = 0;
    for rm in exporter.get_finished_metrics().unwrap() {
        for sm in rm.scope_metrics() {
            for m in sm.metrics() {
                match m.data() {
                    AggregatedMetrics::U64(MetricData::Sum(s)) => {
                        sums.insert(
                            m.name().to_string(),
                            s.data_points().map(|d| d.value()).sum(),
                        );
                    }
                    AggregatedMetrics::F64(MetricData::Histogram(h))
                        if m.name() == saga::metrics::STEP_DURATION =>
                    {
                        attempts = h.data_points().map(|d| d.count()).sum();
                    }
                    _ => {}
                }
            }
        }
    }
    assert_eq!(sums.get(saga::metrics::SAGAS_STARTED), Some(&2));
    assert_eq!(sums.get(saga::metrics::SAGAS_COMMITTED), Some(&1));
    assert_eq!(sums.get(saga::metrics::SAGAS_STUCK), Some(&1));
    assert_eq!(sums.get(saga::metrics::LOG_PRUNED), Some(&1));
    // First saga: 3 actions. Second: s0, s1 x3, undo:s0 x3.
    assert_eq!(attempts, 3 + 1 + 3 + 3);
}

#[tokio::test]
async fn config_and_input_errors_are_typed() {
    assert!(matches!(
        SagaLog::connect("oracle://x").await,
        Err(Error::UnsupportedUrl(_))
    ));
    let log = SagaLog::connect("sqlite::memory:").await.unwrap();
    assert!(matches!(
        log.clone().with_table_prefix("Bad-Prefix"),
        Err(Error::InvalidConfig(_))
    ));
    log.migrate().await.unwrap();
    log.migrate().await.unwrap(); // idempotent
    let world = World::new();
    let exec = executor(log, &world, "node-a", 1);
    assert!(matches!(
        exec.start("nope", &json!({})).await,
        Err(Error::UnknownSaga(_))
    ));
    assert!(matches!(
        exec.clone().register(saga(&world)),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        exec.clone().with_owner("has space"),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        exec.clone().with_lease(Duration::from_millis(1)),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        exec.resume("missing").await,
        Err(Error::NotFound(_))
    ));
}

/// A step slower than its timeout counts as a failed attempt.
#[tokio::test]
async fn a_timed_out_attempt_is_retried_then_fails_the_step() {
    let log = SagaLog::connect("sqlite::memory:").await.unwrap();
    log.migrate().await.unwrap();
    let saga = Saga::builder("slow")
        .step(
            Step::new("a", |_| async { Ok::<_, Error>(()) })
                .compensate(|_| async { Ok::<_, Error>(()) }),
        )
        .step(
            Step::new("b", |_| async {
                std::future::pending::<()>().await;
                Ok::<_, Error>(())
            })
            .with_timeout(Duration::from_millis(20))
            .with_retry(fast(2)),
        )
        .build()
        .unwrap();
    let ids = idgen::Generator::try_new(idgen::Layout::seed(), 1, 9).unwrap();
    let exec = Executor::new(log, ids).register(saga).unwrap();
    let outcome = exec.start("slow", &()).await.unwrap();
    let Outcome::Compensated {
        xid,
        failed_step,
        error,
    } = &outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(failed_step, "b");
    assert!(error.contains("timed out"), "{error}");
    let rec = exec.log().load(xid).await.unwrap();
    assert_eq!(rec.steps[1].attempts, 2);
    // It may have taken effect, but has no compensation: the log says so.
    assert_eq!(
        step_states(&rec),
        [StepState::Compensated, StepState::TimedOut]
    );
}

/// The XID reaches a downstream call on the wire: the step calls through the
/// `cellctx` client layer, which writes `X-Xid` from the scope the executor
/// opens (and the caller's own context, here its tenant, rides along).
#[tokio::test]
async fn xid_travels_downstream_in_headers() {
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    type Seen = Arc<Mutex<Vec<http::HeaderMap>>>;
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let downstream = ServiceBuilder::new()
        .layer(cellctx::PropagateCellContextLayer::new())
        .service(service_fn(move |req: http::Request<()>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(req.headers().clone());
                Ok::<_, std::convert::Infallible>(http::Response::new(()))
            }
        }));
    let saga = Saga::builder("call-downstream")
        .step(Step::new("charge", move |ctx: StepContext| {
            let client = downstream.clone();
            async move {
                let mut req = http::Request::new(());
                for (name, value) in ctx.headers() {
                    if name != saga::XID_HEADER {
                        req.headers_mut().insert(name, value.parse().unwrap());
                    }
                }
                client
                    .oneshot(req)
                    .await
                    .map_err(|e| -> BoxError { Box::new(e) })?;
                Ok::<_, BoxError>(())
            }
        }))
        .build()
        .unwrap();
    let log = SagaLog::connect("sqlite::memory:").await.unwrap();
    log.migrate().await.unwrap();
    let ids = idgen::Generator::try_new(idgen::Layout::seed(), 1, 10).unwrap();
    let exec = Executor::new(log, ids).register(saga).unwrap();

    let request = Arc::new(cellctx::CellContext::new().with_tenant("acme").unwrap());
    let outcome = cellctx::scope(request, exec.start("call-downstream", &()))
        .await
        .unwrap();
    let xid = outcome.xid().to_string();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["x-xid"], xid.as_str());
    assert_eq!(seen[0]["idempotency-key"], format!("{xid}:charge").as_str());
    assert_eq!(seen[0]["x-tenant-id"], "acme");
}
