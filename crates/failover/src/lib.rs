//! `failover`: the failover decision engine, CEL routing rules, the atomic
//! audited traffic switch and SLA figures.
//!
//! PLACEHOLDER DOCS

#[cfg(feature = "sql")]
pub mod audit;
mod config;
mod driver;
mod engine;
mod error;
mod outcome;
pub mod rules;
pub mod sla;
#[cfg(all(feature = "etcd", feature = "sql"))]
pub mod switch;

pub use config::{CellSpec, DecisionConfig, FailMode, Failback, RampCurve};
pub use driver::{EngineHandle, spawn_engine};
pub use engine::{Allocation, CellPhase, Decision, DecisionEngine, DrainReason, Plan, SharedPlan, Spill};
pub use error::Error;
pub use outcome::OutcomeReporter;
pub use rules::{Action, RuleEngine, RuleMatch, RuleSet};
#[cfg(all(feature = "etcd", feature = "sql"))]
pub use switch::{AtomicSwitch, Change, SwitchOutcome, SwitchRequest};
