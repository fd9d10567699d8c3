//! A step: an async action, its compensation, a timeout and retry policies.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{BoxError, Error};
use crate::retry::RetryPolicy;

/// The header that carries the XID to downstream services (`X-Xid`), as
/// `cellctx` writes it from [`CellContext::xid`](cellctx::CellContext::xid).
pub const XID_HEADER: &str = "x-xid";

/// The header that carries a step's idempotency key (`Idempotency-Key`).
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The default per-attempt timeout of a step: 10 s.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
type ActionFn = Arc<dyn Fn(StepContext) -> BoxFuture<Result<Value, BoxError>> + Send + Sync>;
type CompensationFn = Arc<dyn Fn(StepContext) -> BoxFuture<Result<(), BoxError>> + Send + Sync>;

/// Which half of a step is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The forward action.
    Action,
    /// The compensation (undo) of a completed action.
    Compensation,
}

impl Phase {
    /// `action` or `compensation` (the `phase` metric attribute).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Action => "action",
            Phase::Compensation => "compensation",
        }
    }
}

/// What an action or compensation gets: the XID, the step, the attempt, the saga
/// input and the outputs of earlier steps.
///
/// The same XID and step always give the same [`idempotency_key`](Self::idempotency_key),
/// across retries and across executors resuming after a crash, so a downstream
/// service that keys on it applies each step once.
#[derive(Debug, Clone)]
pub struct StepContext {
    pub(crate) xid: Arc<str>,
    pub(crate) saga: Arc<str>,
    pub(crate) index: usize,
    pub(crate) name: Arc<str>,
    pub(crate) attempt: u32,
    pub(crate) phase: Phase,
    pub(crate) input: Arc<Value>,
    pub(crate) outputs: Arc<Vec<(Arc<str>, Option<Value>)>>,
}

impl StepContext {
    /// The saga's transaction id.
    pub fn xid(&self) -> &str {
        &self.xid
    }

    /// The saga definition's name.
    pub fn saga(&self) -> &str {
        &self.saga
    }

    /// The step's position (0-based).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The step's name.
    pub fn step_name(&self) -> &str {
        &self.name
    }

    /// The attempt number, 1-based, counted in this executor run (a resumed saga
    /// starts again at 1; the log keeps the total).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether this is the action or the compensation.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The idempotency key: `<xid>:<step name>` for the action,
    /// `<xid>:<step name>:undo` for the compensation.
    pub fn idempotency_key(&self) -> String {
        match self.phase {
            Phase::Action => format!("{}:{}", self.xid, self.name),
            Phase::Compensation => format!("{}:{}:undo", self.xid, self.name),
        }
    }

    /// The saga input as JSON.
    pub fn input_value(&self) -> &Value {
        &self.input
    }

    /// The saga input, deserialized.
    pub fn input<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(T::deserialize(&*self.input)?)
    }

    /// The recorded output of a completed step of this saga, by name: any earlier
    /// step in an action; in a compensation, this step's own output too (what the
    /// action created, e.g. the id to delete).
    pub fn output_of(&self, step: &str) -> Option<&Value> {
        self.outputs
            .iter()
            .find(|(n, _)| &**n == step)
            .and_then(|(_, v)| v.as_ref())
    }

    /// [`output_of`](Self::output_of), deserialized; `Ok(None)` when the step has no output.
    pub fn output_as<T: DeserializeOwned>(&self, step: &str) -> Result<Option<T>, Error> {
        self.output_of(step)
            .map(|v| T::deserialize(v))
            .transpose()
            .map_err(Error::from)
    }

    /// The headers to put on a downstream call made by this step: `x-xid` and
    /// `idempotency-key`. (Inside a step, [`cellctx::current`] also carries the XID,
    /// so the `cellctx` client layer writes `X-Xid` on its own.)
    pub fn headers(&self) -> [(&'static str, String); 2] {
        [
            (XID_HEADER, self.xid.to_string()),
            (IDEMPOTENCY_KEY_HEADER, self.idempotency_key()),
        ]
    }
}

/// One step of a saga: an action, its compensation, a per-attempt timeout and
/// retry policies for both halves.
///
/// A step without a compensation (a read, a notification, or a last step whose
/// success commits the saga) is skipped when the saga turns back.
#[derive(Clone)]
pub struct Step {
    pub(crate) name: Arc<str>,
    pub(crate) action: ActionFn,
    pub(crate) compensation: Option<CompensationFn>,
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) compensation_retry: RetryPolicy,
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Step")
            .field("name", &self.name)
            .field("compensable", &self.compensation.is_some())
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("compensation_retry", &self.compensation_retry)
            .finish()
    }
}

impl Step {
    /// A step named `name` running `action`. The action's output (any
    /// `Serialize` value, `()` included) is recorded in the log and readable by
    /// later steps and by this step's compensation.
    ///
    /// Defaults: timeout [`DEFAULT_STEP_TIMEOUT`], [`RetryPolicy::default`] for the
    /// action, and 10 attempts (100 ms to 10 s backoff) for the compensation.
    pub fn new<F, Fut, T, E>(name: impl Into<String>, action: F) -> Self
    where
        F: Fn(StepContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Serialize,
        E: Into<BoxError>,
    {
        let action = Arc::new(action);
        let action: ActionFn = Arc::new(move |ctx| {
            let fut = action(ctx);
            Box::pin(async move {
                let out = fut.await.map_err(Into::into)?;
                serde_json::to_value(out).map_err(BoxError::from)
            })
        });
        Step {
            name: name.into().into(),
            action,
            compensation: None,
            timeout: DEFAULT_STEP_TIMEOUT,
            retry: RetryPolicy::default(),
            compensation_retry: default_compensation_retry(),
        }
    }

    /// Sets the compensation: it undoes the action and must be idempotent (it may
    /// run more than once after a crash; key on [`StepContext::idempotency_key`]).
    /// It also runs when the action timed out (it may have taken effect), so it
    /// must succeed when there is nothing to undo.
    pub fn compensate<F, Fut, E>(mut self, compensation: F) -> Self
    where
        F: Fn(StepContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let compensation = Arc::new(compensation);
        self.compensation = Some(Arc::new(move |ctx| {
            let fut = compensation(ctx);
            Box::pin(async move { fut.await.map_err(Into::into) })
        }));
        self
    }

    /// Sets the timeout of each attempt (of the action and of the compensation).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the action's retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the compensation's retry policy: when it is spent the saga is marked
    /// stuck for an operator.
    pub fn with_compensation_retry(mut self, retry: RetryPolicy) -> Self {
        self.compensation_retry = retry;
        self
    }

    /// The step's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

fn default_compensation_retry() -> RetryPolicy {
    RetryPolicy::try_new(10, Duration::from_millis(100), Duration::from_secs(10))
        .unwrap_or_default()
}

/// Validates a saga or step name: 1 to 64 bytes of `a-z`, `A-Z`, `0-9`, `-`, `_`, `.`.
pub(crate) fn validate_name(kind: &str, name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > 64 {
        return Err(Error::InvalidConfig(format!(
            "{kind} name must be 1 to 64 bytes, got {name:?}"
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(Error::InvalidConfig(format!(
            "{kind} name {name:?} may only hold a-z, A-Z, 0-9, '-', '_', '.'"
        )));
    }
    Ok(())
}
