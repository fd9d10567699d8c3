//! How a saga ended, and what a recovery pass did.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::Error;
use crate::log::SagaState;

/// How a saga ended.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Outcome {
    /// Every step's action completed.
    Committed {
        /// The transaction id.
        xid: String,
        /// Each step's recorded output, by step name.
        outputs: BTreeMap<String, Value>,
    },
    /// A step failed for good and every completed step was compensated.
    Compensated {
        /// The transaction id.
        xid: String,
        /// The step whose failure turned the saga back.
        failed_step: String,
        /// That step's last error.
        error: String,
    },
    /// A compensation spent its retry budget: the saga waits for an operator
    /// (see [`Executor::resume_stuck`](crate::Executor::resume_stuck)).
    Stuck {
        /// The transaction id.
        xid: String,
        /// The step whose compensation failed.
        step: String,
        /// The compensation's last error.
        error: String,
    },
}

impl Outcome {
    /// The transaction id.
    pub fn xid(&self) -> &str {
        match self {
            Outcome::Committed { xid, .. }
            | Outcome::Compensated { xid, .. }
            | Outcome::Stuck { xid, .. } => xid,
        }
    }

    /// The saga's final state.
    pub fn state(&self) -> SagaState {
        match self {
            Outcome::Committed { .. } => SagaState::Committed,
            Outcome::Compensated { .. } => SagaState::Compensated,
            Outcome::Stuck { .. } => SagaState::Stuck,
        }
    }

    /// A committed step's output.
    pub fn output(&self, step: &str) -> Option<&Value> {
        match self {
            Outcome::Committed { outputs, .. } => outputs.get(step),
            _ => None,
        }
    }
}

/// What one [`Executor::recover`](crate::Executor::recover) pass did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Sagas this executor took from the log and drove to an end.
    pub resumed: Vec<Outcome>,
    /// Candidates another executor (or another task of this one) took first.
    pub skipped: usize,
    /// Rows that could not be resumed: [`Error::MalformedRow`],
    /// [`Error::UnknownSaga`], database errors, lost leases. Reported, never
    /// panicked on; malformed rows are left untouched for an operator.
    pub errors: Vec<Error>,
}
