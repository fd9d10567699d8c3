//! A saga definition: a name and its ordered steps.

use std::collections::HashSet;
use std::sync::Arc;

use crate::error::Error;
use crate::step::{Step, validate_name};

/// A saga definition: a name (stored in the log, so a recovering executor finds
/// the definition again) and ordered [`Step`]s.
///
/// Steps run in order; when one fails for good, the compensations of the steps
/// that completed run in reverse order. Cheap to clone.
///
/// Changing a definition's steps while sagas of it are unfinished in the log is
/// an operator's job: recovery checks the step count and names and reports a
/// mismatch as [`Error::MalformedRow`] instead of guessing.
#[derive(Debug, Clone)]
pub struct Saga {
    pub(crate) name: Arc<str>,
    pub(crate) steps: Arc<[Step]>,
}

impl Saga {
    /// Starts a definition named `name` (1 to 64 bytes of `a-z A-Z 0-9 - _ .`).
    pub fn builder(name: impl Into<String>) -> SagaBuilder {
        SagaBuilder {
            name: name.into(),
            steps: Vec::new(),
        }
    }

    /// The definition's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }
}

/// Builds a [`Saga`]; see [`Saga::builder`].
#[derive(Debug)]
pub struct SagaBuilder {
    name: String,
    steps: Vec<Step>,
}

impl SagaBuilder {
    /// Appends a step.
    pub fn step(mut self, step: Step) -> Self {
        self.steps.push(step);
        self
    }

    /// Validates and builds: a valid name, 1 to 1024 steps, unique valid step
    /// names, non-zero timeouts.
    pub fn build(self) -> Result<Saga, Error> {
        validate_name("saga", &self.name)?;
        if self.steps.is_empty() || self.steps.len() > 1024 {
            return Err(Error::InvalidConfig(format!(
                "saga {:?} needs 1 to 1024 steps, got {}",
                self.name,
                self.steps.len()
            )));
        }
        let mut seen = HashSet::new();
        for step in &self.steps {
            validate_name("step", &step.name)?;
            if !seen.insert(step.name.clone()) {
                return Err(Error::InvalidConfig(format!(
                    "saga {:?} has two steps named {:?}",
                    self.name, step.name
                )));
            }
            if step.timeout.is_zero() {
                return Err(Error::InvalidConfig(format!(
                    "step {:?} has a zero timeout",
                    step.name
                )));
            }
        }
        Ok(Saga {
            name: self.name.into(),
            steps: self.steps.into(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn noop(name: &str) -> Step {
        Step::new(name, |_| async { Ok::<_, Error>(()) })
    }

    #[test]
    fn build_validates() {
        assert!(
            Saga::builder("s")
                .step(noop("a"))
                .step(noop("b"))
                .build()
                .is_ok()
        );
        assert!(matches!(
            Saga::builder("s").build(),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            Saga::builder("bad name").step(noop("a")).build(),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            Saga::builder("s").step(noop("a")).step(noop("a")).build(),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            Saga::builder("s").step(noop("a:b")).build(),
            Err(Error::InvalidConfig(_))
        ));
        let zero = noop("a").with_timeout(std::time::Duration::ZERO);
        assert!(matches!(
            Saga::builder("s").step(zero).build(),
            Err(Error::InvalidConfig(_))
        ));
    }
}
