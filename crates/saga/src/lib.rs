//! Compensation-based distributed transactions (sagas) with a durable saga log.
//!
//! A [`Saga`] is a named list of [`Step`]s; each step is an async action plus the
//! compensation that undoes it, with a per-attempt timeout and a [`RetryPolicy`]
//! (max attempts, exponential backoff with full jitter). The [`Executor`] runs
//! the steps in order; when one fails for good it runs the compensations of the
//! completed steps in reverse order, each retried until it succeeds or its budget
//! is spent, in which case the saga is marked *stuck* for an operator (an `error`
//! event and the `saga.stuck` metric; never dropped).
//!
//! Every transition is written to a [`SagaLog`] (MySQL/MariaDB, PostgreSQL or
//! SQLite through `sqlx`) before and after each action, so a crash at any point
//! is resumed: [`Executor::recover`] loads the unfinished sagas and drives each
//! forward or backward, as the log says. Executors sharing a log never run one
//! saga at once: each saga row carries a lease (see [`log`]).
//!
//! Each saga has a transaction id (XID) from an [`XidSource`], normally an
//! [`idgen::Generator`]. Steps run inside a [`cellctx`] scope whose
//! [`CellContext::xid`](cellctx::CellContext::xid) is set, so the `cellctx` client
//! layer sends it downstream as `X-Xid`; [`StepContext::idempotency_key`] (XID +
//! step) is what downstream services key their idempotency on, since a step may
//! run again after a crash or a timeout.
//!
//! # Where it goes
//!
//! Not a tower layer: an executor sits beside your handlers. A handler (inside
//! the `cellctx` server layer, so the request's context flows into the steps)
//! calls [`Executor::start`]; each process spawns [`Executor::run_recovery`] once.
//!
//! # Example: post a comment and charge a coin
//!
//! A comment service and a wallet service, each with its own database. Posting
//! a paid comment inserts the comment, then charges one coin; if the charge
//! fails (no coins left), the comment is deleted again.
//!
//! ```
//! use std::collections::HashMap;
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use saga::{Executor, Outcome, RetryPolicy, Saga, SagaLog, Step};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct PostComment { user: String, text: String }
//!
//! /// Stand-ins for the two downstream services, deduplicating on the key.
//! #[derive(Default)]
//! struct Services {
//!     comments: Mutex<HashMap<String, String>>, // idempotency key -> comment text
//!     coins: Mutex<HashMap<String, i64>>,       // user -> balance
//!     charges: Mutex<Vec<String>>,              // idempotency keys applied
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let svc = Arc::new(Services::default());
//! svc.coins.lock().unwrap().insert("ann".into(), 1);
//!
//! let (s1, s2, s3) = (svc.clone(), svc.clone(), svc.clone());
//! let saga = Saga::builder("post-comment")
//!     .step(
//!         Step::new("insert-comment", move |ctx| {
//!             let svc = s1.clone();
//!             async move {
//!                 // A real step sends ctx.headers() (X-Xid, Idempotency-Key) with its call.
//!                 let req: PostComment = ctx.input()?;
//!                 svc.comments.lock().unwrap().insert(ctx.idempotency_key(), req.text);
//!                 Ok::<_, saga::Error>(serde_json::json!({ "comment_id": ctx.idempotency_key() }))
//!             }
//!         })
//!         .compensate(move |ctx| {
//!             let svc = s2.clone();
//!             async move {
//!                 // Idempotent undo: deleting twice is fine. The action's output is here.
//!                 let id = ctx.output_of("insert-comment").and_then(|o| o["comment_id"].as_str()).unwrap_or_default();
//!                 svc.comments.lock().unwrap().remove(id);
//!                 Ok::<_, saga::Error>(())
//!             }
//!         })
//!         .with_timeout(Duration::from_secs(2)),
//!     )
//!     .step(
//!         Step::new("charge-coin", move |ctx| {
//!             let svc = s3.clone();
//!             async move {
//!                 let req: PostComment = ctx.input()?;
//!                 let mut coins = svc.coins.lock().unwrap();
//!                 let balance = coins.entry(req.user).or_default();
//!                 if *balance < 1 {
//!                     return Err("no coins left".into());
//!                 }
//!                 *balance -= 1;
//!                 svc.charges.lock().unwrap().push(ctx.idempotency_key());
//!                 Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
//!             }
//!         })
//!         .with_retry(RetryPolicy::try_new(2, Duration::from_millis(1), Duration::from_millis(5))?),
//!     )
//!     .build()?;
//!
//! let log = SagaLog::connect("sqlite::memory:").await?;
//! log.migrate().await?;
//! let ids = idgen::Generator::try_new(idgen::Layout::seed(), 1, 1)?;
//! let executor = Executor::new(log, ids).register(saga)?;
//!
//! // Ann has one coin: the first comment commits.
//! let post = PostComment { user: "ann".into(), text: "first!".into() };
//! let first = executor.start("post-comment", &post).await?;
//! assert!(matches!(first, Outcome::Committed { .. }));
//!
//! // The second cannot be paid for: the comment is deleted again.
//! let second = executor.start("post-comment", &post).await?;
//! let Outcome::Compensated { failed_step, .. } = &second else { panic!("{second:?}") };
//! assert_eq!(failed_step, "charge-coin");
//! assert_eq!(svc.comments.lock().unwrap().len(), 1);
//! assert_eq!(svc.coins.lock().unwrap()["ann"], 0);
//!
//! // Every process resumes what a crashed one left behind:
//! // tokio::spawn(async move { executor.run_recovery(Duration::from_secs(5)).await });
//! # Ok(()) }
//! ```
//!
//! # Metrics
//!
//! Through the `opentelemetry` API (global meter `saga`, or [`Executor::with_meter`]):
//!
//! | instrument | kind | attributes |
//! |---|---|---|
//! | `saga.started` | counter | `saga` |
//! | `saga.committed` | counter | `saga` |
//! | `saga.compensated` | counter | `saga` |
//! | `saga.stuck` | counter | `saga` |
//! | `saga.recovered` | counter | `saga` |
//! | `saga.log.malformed` | counter | |
//! | `saga.log.pruned` | counter | (sagas deleted by retention) |
//! | `saga.step.duration` | histogram (s) | `saga`, `step`, `phase` (`action`/`compensation`), `outcome` (`ok`/`error`/`timeout`) |
//!
//! The names are also constants in [`metrics`].
//!
//! # Retention
//!
//! The log keeps every saga until it is pruned: give the executor a
//! [`Retention`] (max age and/or max count of finished sagas) with
//! [`Executor::with_retention`] and each [`Executor::run_recovery`] pass also
//! deletes the `committed` and `compensated` sagas beyond it, with their step
//! rows; or call [`Executor::prune`] / [`SagaLog::prune`] from a job of your
//! own. `stuck` sagas are kept for the operator.
//!
//! # Failure semantics
//!
//! - A step's action may run more than once (a retry after a timeout, a resume
//!   after a crash between the action and the log write): downstream services
//!   dedupe on [`StepContext::idempotency_key`]. The same holds for compensations.
//! - Steps whose action completed (`done`) are compensated, and so are steps
//!   whose action timed out on any attempt before failing for good
//!   (`timed_out`): a timed-out call may have taken effect downstream, so it is
//!   treated as *maybe applied* and undone. Hence **compensations must be
//!   idempotent and must tolerate an action that never took effect** (undoing
//!   something absent is a success), keyed on [`StepContext::idempotency_key`].
//!   A step that failed for good with no attempt timing out (`failed`) is not
//!   compensated: an action that returns an error must not have taken effect.
//!   A timed-out step without a compensation stays `timed_out` in the log.
//! - A step without a compensation is skipped on the way back.
//! - A saga resumed by recovery runs its remaining steps in a fresh `cellctx`
//!   context that carries only the XID: the original request's context (tenant,
//!   user, trace) is not stored in the log. Put what steps need into the input.
//! - A step that starts a saga of its own gets a new XID for it.
//! - Leases compare the executors' wall clocks; keep them within a fraction of
//!   the lease (the default lease is 30 s).

mod definition;
mod error;
mod executor;
pub mod log;
pub mod metrics;
mod outcome;
mod retry;
mod step;
mod xid;

pub use definition::{Saga, SagaBuilder};
pub use error::{BoxError, Error};
pub use executor::{DEFAULT_LEASE, Executor};
pub use log::{
    DEFAULT_PRUNE_BATCH, Dialect, LogPool, Retention, SagaLog, SagaRecord, SagaState, StepRecord,
    StepState,
};
pub use outcome::{Outcome, RecoveryReport};
pub use retry::RetryPolicy;
pub use step::{
    DEFAULT_STEP_TIMEOUT, IDEMPOTENCY_KEY_HEADER, Phase, Step, StepContext, XID_HEADER,
};
pub use xid::{MAX_XID_LEN, XidSource};
