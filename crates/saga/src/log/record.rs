//! What the log holds: saga and step states, and the records read back.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

/// A saga's state in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SagaState {
    /// Going forward: running its steps' actions.
    Running,
    /// Going backward: compensating its completed steps in reverse order.
    Compensating,
    /// Finished: every step's action completed.
    Committed,
    /// Finished: a step failed and every completed step was compensated.
    Compensated,
    /// A compensation spent its retry budget; an operator must look
    /// ([`Executor::resume_stuck`](crate::Executor::resume_stuck) resumes it).
    Stuck,
}

impl SagaState {
    /// The stored name: `running`, `compensating`, `committed`, `compensated`, `stuck`.
    pub fn as_str(self) -> &'static str {
        match self {
            SagaState::Running => "running",
            SagaState::Compensating => "compensating",
            SagaState::Committed => "committed",
            SagaState::Compensated => "compensated",
            SagaState::Stuck => "stuck",
        }
    }

    /// Whether no executor will touch the saga again on its own.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            SagaState::Committed | SagaState::Compensated | SagaState::Stuck
        )
    }
}

impl FromStr for SagaState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "running" => SagaState::Running,
            "compensating" => SagaState::Compensating,
            "committed" => SagaState::Committed,
            "compensated" => SagaState::Compensated,
            "stuck" => SagaState::Stuck,
            other => return Err(format!("unknown saga state {other:?}")),
        })
    }
}

impl fmt::Display for SagaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step's state in the log.
///
/// `pending -> running -> done | failed | timed_out`, then, when the saga
/// turns back, `done | timed_out -> compensating -> compensated`. `running` is written before the action
/// starts and `compensating` before the compensation starts, so a crash leaves a
/// trace of an action or compensation that may have happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepState {
    /// Not started.
    Pending,
    /// The action was started (it may or may not have taken effect).
    Running,
    /// The action completed; its output is recorded.
    Done,
    /// The action failed for good (retries spent) and no attempt timed out:
    /// it did not take effect, so it is not compensated.
    Failed,
    /// The action failed for good and at least one attempt timed out: it may
    /// have taken effect downstream, so it is compensated like a done step
    /// (a timed-out step without a compensation stays `timed_out`).
    TimedOut,
    /// The compensation was started.
    Compensating,
    /// The compensation completed.
    Compensated,
}

impl StepState {
    /// The stored name: `pending`, `running`, `done`, `failed`, `timed_out`,
    /// `compensating`, `compensated`.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Done => "done",
            StepState::Failed => "failed",
            StepState::TimedOut => "timed_out",
            StepState::Compensating => "compensating",
            StepState::Compensated => "compensated",
        }
    }
}

impl FromStr for StepState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "pending" => StepState::Pending,
            "running" => StepState::Running,
            "done" => StepState::Done,
            "failed" => StepState::Failed,
            "timed_out" => StepState::TimedOut,
            "compensating" => StepState::Compensating,
            "compensated" => StepState::Compensated,
            other => return Err(format!("unknown step state {other:?}")),
        })
    }
}

impl fmt::Display for StepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A saga as the log holds it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SagaRecord {
    /// The transaction id.
    pub xid: String,
    /// The definition's name.
    pub name: String,
    /// The input, as JSON.
    pub input: Value,
    /// The saga's state.
    pub state: SagaState,
    /// The executor holding the lease, if any.
    pub owner: Option<String>,
    /// When the lease expires, in ms since the Unix epoch (0 when released).
    pub lease_until_ms: i64,
    /// The step whose failure turned the saga back.
    pub failed_step: Option<usize>,
    /// That step's last error.
    pub error: Option<String>,
    /// When the saga was written first, ms since the Unix epoch.
    pub created_ms: i64,
    /// When the saga row was last written, ms since the Unix epoch.
    pub updated_ms: i64,
    /// The steps, in order.
    pub steps: Vec<StepRecord>,
}

/// A step as the log holds it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StepRecord {
    /// The step's name.
    pub name: String,
    /// Its state.
    pub state: StepState,
    /// Attempts so far, action and compensation together, across executors.
    pub attempts: u32,
    /// The action's output, once done.
    pub output: Option<Value>,
    /// The last error of the action or the compensation.
    pub error: Option<String>,
}
