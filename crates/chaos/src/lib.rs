//! The fault campaign's parts that do not depend on how the system under test
//! is deployed: a [`Schedule`] of faults drawn from a seed over a multi-cell
//! [`Topology`], the [`history`] format the load generator writes, and the
//! [`checker`], written apart from the load generator, that judges a healed
//! run by identity: every acknowledged write, by its id, in every cell; every
//! cell's state equal; no id given twice; the audit log's invariants; every
//! cell back in the table.
//!
//! The executor (who kills, pauses, partitions and skews what) belongs to the
//! harness that owns the processes; it walks [`Schedule::steps`].
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::time::Duration;
//!
//! use chaos::checker::{self, CellView, Evidence};
//! use chaos::history::{Outcome, Record, WriteKind};
//! use chaos::{Schedule, ScheduleConfig, Topology};
//!
//! let topo = Topology::try_new(vec!["a".into(), "b".into(), "c".into()], 2, 2)?;
//! let config = ScheduleConfig::try_new(Duration::from_secs(60))?;
//! let schedule = Schedule::generate(42, &topo, &config);
//! assert_eq!(schedule, Schedule::generate(42, &topo, &config)); // replayable
//! assert!(schedule.faults.iter().all(|f| f.heals_at() <= config.heal_by()));
//!
//! // after the heal: one acknowledged like, held by two cells of three
//! let history = vec![Record {
//!     req: "r1".into(),
//!     region: "eu".into(),
//!     at_ms: 1_000,
//!     write: Some((WriteKind::Like, "post-1".into())),
//!     outcome: Outcome::Ok { id: "like-7".into(), cell: Some("a".into()) },
//! }];
//! let held = CellView { ids: ["like-7".to_string()].into(), digest: 9, active: true };
//! let cells = BTreeMap::from([
//!     ("a".to_string(), held.clone()),
//!     ("b".to_string(), held),
//!     ("c".to_string(), CellView { active: true, ..CellView::default() }),
//! ]);
//! let all = ["a".to_string(), "b".to_string(), "c".to_string()];
//! let verdict = checker::check(Evidence { history: &history, cells: &cells, all_cells: &all, audit: &[], drain_cap: 1 });
//! assert!(!verdict.ok());
//! assert_eq!(verdict.lost[0].missing_in, vec!["c".to_string()]);
//! assert_eq!(verdict.diverged, vec!["c".to_string()]);
//! # Ok::<(), chaos::Error>(())
//! ```

pub mod audit;
pub mod checker;
mod error;
mod fault;
pub mod history;
mod schedule;
mod topology;

pub use error::Error;
pub use fault::{Fault, FaultKind, LinkFault, SwitchPoint};
pub use schedule::{MAX_CLOCK_STEP_MS, Schedule, ScheduleConfig, Step};
pub use topology::{Link, Process, Topology};

#[cfg(test)]
mod tests;
